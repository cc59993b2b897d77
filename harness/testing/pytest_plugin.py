"""enginehub's pytest plugin (entry point ``pytest11: enginehub``; also usable as ``-p enginehub...``).

Registers the project's markers and the ``--run-slow`` switch, and provides fixtures for the real services:

- ``azurite`` (session): a local Azurite blob service (npm ``azurite``), or the one named by
  ``ENGINEHUB_STORAGE_CONNECTION_STRING``; skipped with a reason when neither is available.
- ``checkpoint_container`` (function): a fresh, uniquely named blob container on that service.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

LOG = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class BlobService:
    """Where a blob service is: its connection string, and who provides it ("local" Azurite or "external")."""

    connection_string: str
    provider: str

    def create_container(self, name: str) -> str:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            try:
                service.create_container(name)
            except ResourceExistsError:
                pass
        return name

    def delete_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.delete_container(name)


@pytest.fixture(scope="session")
def azurite() -> Iterator[BlobService]:
    """A blob service for checkpoint stores: ENGINEHUB_STORAGE_CONNECTION_STRING, else a local Azurite."""
    external = os.environ.get("ENGINEHUB_STORAGE_CONNECTION_STRING")
    if external:
        LOG.info("azurite fixture: using external blob service from ENGINEHUB_STORAGE_CONNECTION_STRING")
        yield BlobService(external, "external")
        return
    from enginehub.harness.providers.azurite import AzuriteServer, AzuriteUnavailable

    server = AzuriteServer()
    try:
        server.start()
    except AzuriteUnavailable as exc:
        pytest.skip(f"no blob service: {exc} (or set ENGINEHUB_STORAGE_CONNECTION_STRING)")
    LOG.info("azurite fixture: local Azurite on port %s (pid %s)", server.blob_port, server.pid)
    try:
        yield BlobService(server.connection_string, "local")
    finally:
        server.stop()


@pytest.fixture
def checkpoint_container(azurite: BlobService) -> Iterator[str]:
    """A fresh blob container for one test's checkpoints; deleted afterwards."""
    name = f"ckpt-{uuid.uuid4().hex[:20]}"
    azurite.create_container(name)
    yield name
    try:
        azurite.delete_container(name)
    except Exception:  # teardown must not mask the test's own result
        LOG.debug("could not delete container %s", name, exc_info=True)
