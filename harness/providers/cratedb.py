"""CrateDB providers: a server from ``CRATEDB_URL`` (external) or a testcontainers container.

``CRATEDB_URL`` may be ``http(s)://[user:pw@]host:4200`` or ``crate://[user:pw@]host:4200``. A fresh schema
per test (:meth:`CrateDBServer.new_schema`) keeps tests apart on one session-scoped server; CrateDB has no
DROP SCHEMA, so cleanup drops the schema's tables.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from enginehub.harness.providers.base import ProviderUnavailable

LOG = logging.getLogger(__name__)

IMAGE = os.environ.get("ENGINEHUB_CRATEDB_IMAGE", "crate/crate:latest")


@dataclass(frozen=True)
class CrateDBServer:
    """Where a CrateDB server is: its HTTP endpoint (``http://host:4200``) and optional credentials."""

    provider: str
    http_url: str
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str, provider: str = "external") -> CrateDBServer:
        parts = urlsplit(url.strip())
        if not parts.hostname:
            raise ValueError(
                f"CrateDB URL {url!r} has no host; expected crate://host:4200 or http://host:4200"
            )
        proto = "https" if parts.scheme.endswith("https") or parts.query.find("ssl=true") >= 0 else "http"
        return cls(
            provider, f"{proto}://{parts.hostname}:{parts.port or 4200}", parts.username, parts.password
        )

    def sink_url(self, schema: str = "doc") -> str:
        """The ``ingest --sink`` URL for ``schema``."""
        parts = urlsplit(self.http_url)
        scheme = "crate+https" if parts.scheme == "https" else "crate"
        auth = ""
        if self.username:
            auth = self.username + (f":{self.password}" if self.password else "") + "@"
        return f"{scheme}://{auth}{parts.hostname}:{parts.port or 4200}?schema={schema}"

    def connect(self, schema: str = "doc") -> Any:
        from crate.client import connect

        return connect(
            self.http_url, schema=schema, username=self.username, password=self.password, timeout=30
        )

    def query(self, sql: str, args: tuple | list | None = None) -> list[list[Any]]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def new_schema(self) -> str:
        """A unique schema name (created implicitly by CrateDB with the first table)."""
        return f"t{uuid.uuid4().hex[:14]}"

    def drop_schema(self, schema: str) -> None:
        """Drop every table of ``schema``."""
        rows = self.query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = ? AND table_type = 'BASE TABLE'",
            [schema],
        )
        for (name,) in rows:
            self.query(f'DROP TABLE IF EXISTS "{schema}"."{name}"')


def open_cratedb(provider: str) -> tuple[CrateDBServer, Callable[[], None]]:
    """(server, stop) for the chosen provider; raises ProviderUnavailable with how to enable it."""
    if provider == "external":
        url = os.environ.get("CRATEDB_URL", "")
        if not url:
            raise ProviderUnavailable("CRATEDB_URL is not set (crate://host:4200)")
        server = CrateDBServer.from_url(url)
        try:
            server.query("SELECT 1")
        except Exception as exc:
            raise ProviderUnavailable(f"CRATEDB_URL={url} does not answer: {exc}") from exc
        return server, lambda: None
    if provider != "container":
        raise ValueError(f"unknown CrateDB provider {provider!r}")
    try:
        from testcontainers.community.cratedb import CrateDBContainer
    except ImportError as exc:
        raise ProviderUnavailable(
            f"testcontainers' CrateDB module is not importable ({exc}; it needs httpx: pip install httpx) "
            "- or set CRATEDB_URL"
        ) from exc
    stack = contextlib.ExitStack()
    try:
        container = stack.enter_context(CrateDBContainer(IMAGE))
        host, port = container.get_container_host_ip(), container.get_exposed_port(4200)
    except Exception as exc:
        stack.close()
        raise ProviderUnavailable(f"the CrateDB container ({IMAGE}) did not start: {exc}") from exc
    LOG.info("CrateDB container %s on %s:%s", IMAGE, host, port)
    return CrateDBServer(
        "container", f"http://{host}:{port}", container.username, container.password
    ), stack.close
