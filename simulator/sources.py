"""Which rows the fleet replays: ``FD001``..``FD004`` (the run-to-failure ``train_`` file of that subset
from the C-MAPSS directory), a PATH to a C-MAPSS-format file, or ``synthetic`` (seedable generator; the
default when no C-MAPSS directory is configured).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from enginehub.simulator.fleet import MemorySource

LOG = logging.getLogger(__name__)

SUBSET_RE = re.compile(r"^FD00[1-4]$", re.IGNORECASE)
SYNTHETIC = "synthetic"


class DatasetError(ValueError):
    """The dataset cannot be loaded; the message is one sentence."""


def default_dataset(cmapss_dir: str | None = None) -> str:
    """FD001 when a C-MAPSS directory is configured (argument or $ENGINEHUB_CMAPSS_DIR), else synthetic."""
    from enginehub.datasets import cmapss

    base = cmapss_dir or os.environ.get(cmapss.ENV_VAR, "")
    if base and (Path(base) / "train_FD001.txt").is_file():
        return "FD001"
    return SYNTHETIC


def load_source(
    dataset: str, *, cmapss_dir: str | None = None, seed: int = 0, units: int = 100
) -> MemorySource:
    """The rows of `dataset` (see module doc); `units` and `seed` size and seed the synthetic fleet."""
    from enginehub.datasets import cmapss

    try:
        if dataset == SYNTHETIC:
            return _synthetic(seed, units)
        if SUBSET_RE.match(dataset):
            name = dataset.upper()
            base = cmapss.resolve_dir(cmapss_dir)
            return MemorySource(name, cmapss.read_rows(base / cmapss.file_name("train", name)))
        path = Path(dataset)
        if not path.is_file():
            raise DatasetError(
                f"--dataset {dataset!r}: not FD001..FD004, 'synthetic', or an existing C-MAPSS file"
            )
        return MemorySource(path.stem, cmapss.read_rows(path))
    except cmapss.CmapssError as exc:
        raise DatasetError(f"--dataset {dataset}: {exc}") from None
    except OSError as exc:
        raise DatasetError(f"--dataset {dataset}: {exc.strerror or exc}") from None


def _synthetic(seed: int, units: int) -> MemorySource:
    try:
        from enginehub.datasets import synthetic
    except ImportError:
        raise DatasetError(
            "the synthetic dataset is not available in this build: pass --dataset FD001..FD004 or a file"
        ) from None
    rows = synthetic.generate_fleet(units=max(1, min(units, 200)), seed=seed)
    return MemorySource(SYNTHETIC, list(rows))
