"""enginehub's pytest plugin (entry point ``pytest11: enginehub``; also usable as ``-p enginehub...``).

Registers the project's markers and the ``--run-slow`` switch. Service fixtures (eventhubs, iothub,
azurite, cratedb, ingest_node, fleet) are added here as the services land.
"""

from __future__ import annotations

import pytest

MARKERS = {
    "integration": "real processes / servers on loopback (slower)",
    "cratedb": "needs a real CrateDB server (testcontainers or CRATEDB_URL); skipped otherwise",
    "slow": "long-running; opt in with --run-slow",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("enginehub")
    group.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: opt in with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
