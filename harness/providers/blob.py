"""Blob storage (checkpoint store) providers: npm Azurite (local), the Azurite container, or an external
account from ``ENGINEHUB_STORAGE_CONNECTION_STRING``. Returns a connection string and a stop callable."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

from enginehub.harness.providers.base import ProviderUnavailable

LOG = logging.getLogger(__name__)

EXTERNAL_ENV = "ENGINEHUB_STORAGE_CONNECTION_STRING"
AZURITE_IMAGE = os.environ.get("ENGINEHUB_AZURITE_IMAGE", "mcr.microsoft.com/azure-storage/azurite:latest")


def open_blob_service(provider: str) -> tuple[str, Callable[[], None]]:
    """(connection string, stop) for the chosen provider; raises ProviderUnavailable with the reason."""
    if provider == "external":
        cs = os.environ.get(EXTERNAL_ENV, "")
        if not cs:
            raise ProviderUnavailable(f"{EXTERNAL_ENV} is not set")
        return cs, lambda: None
    if provider == "local":
        from enginehub.harness.providers.azurite import AzuriteServer, AzuriteUnavailable

        server = AzuriteServer()
        try:
            server.start()
        except AzuriteUnavailable as exc:
            raise ProviderUnavailable(str(exc)) from exc
        LOG.info("local Azurite on port %s (pid %s)", server.blob_port, server.pid)
        return server.connection_string, server.stop
    if provider == "container":
        try:
            from testcontainers.community.azurite import AzuriteContainer
        except ImportError as exc:
            raise ProviderUnavailable(f"testcontainers' Azurite module is not importable ({exc})") from exc
        stack = contextlib.ExitStack()
        try:
            container = stack.enter_context(AzuriteContainer(AZURITE_IMAGE))
            cs = container.get_connection_string()
        except Exception as exc:
            stack.close()
            raise ProviderUnavailable(f"the Azurite container did not start: {exc}") from exc
        return cs, stack.close
    raise ValueError(f"unknown blob provider {provider!r}")
