"""The wheel installs everything under ONE namespace (enginehub.*) and nothing at top level."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("datasets", "simulator", "harness", "ingest", "loadtests")

pytestmark = pytest.mark.integration


def _source_packages() -> list[str]:
    names = []
    for root in ROOTS:
        for init in sorted((REPO / root).rglob("__init__.py")):
            rel = init.parent.relative_to(REPO)
            names.append("enginehub." + ".".join(rel.parts))
    return names


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        cwd=out,
    )
    (wheel,) = out.glob("enginehub-*.whl")
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def test_every_subpackage_imports_from_installed_copy(installed: Path, tmp_path: Path) -> None:
    packages = _source_packages()
    assert "enginehub.datasets" in packages and "enginehub.harness" in packages
    code = (
        "import importlib, sys\n"
        f"target = {str(installed)!r}\n"
        "for name in sys.argv[1:]:\n"
        "    mod = importlib.import_module(name)\n"
        "    assert mod.__file__.startswith(target), (name, mod.__file__)\n"
        "print('ok', len(sys.argv) - 1)\n"
    )
    # -I: isolated mode, so neither the repo nor an editable install can satisfy the imports.
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(installed)!r}); exec({code!r})",
            *packages,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ok {len(packages)}"


def test_no_top_level_package_besides_enginehub(installed: Path) -> None:
    top = {p.name for p in installed.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", ".data"))}
    assert top == {"enginehub"}
    for root in ROOTS:
        assert not (installed / root).exists()
