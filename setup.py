"""Map the fixed top-level folders into ONE import namespace: datasets/ -> enginehub.datasets, ...

A top-level `datasets` (HuggingFace) or `harness` package would shadow ours or be shadowed, so nothing
of ours is importable under a bare top-level name once installed. Every folder with an __init__.py
below the mapped roots is a package; nothing has to be listed by hand.
"""

import os

from setuptools import setup

ROOTS = ("datasets", "simulator", "harness", "ingest", "loadtests")


def _discover() -> tuple[list[str], dict[str, str]]:
    here = os.path.dirname(os.path.abspath(__file__))
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(here, root)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
            if "__init__.py" not in filenames:
                dirnames[:] = []
                continue
            rel = os.path.relpath(dirpath, here)
            name = "enginehub." + rel.replace(os.sep, ".")
            packages.append(name)
            package_dir[name] = rel
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _discover()

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={name: ["*.json", "*.md", "*.toml", "*.sql"] for name in PACKAGES},
)
