"""The sink interface and the ``--sink URL`` parser."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from enginehub.ingest.model import DEFAULT_TABLE, DeadLetter, Row, SinkConfigError, WriteResult

LOG = logging.getLogger(__name__)

PAYLOAD_FORMATS = ("seed", "json", "auto", "raw")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier(name: str, what: str = "table") -> str:
    """Table and schema names are interpolated into SQL, so only plain identifiers are allowed."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise SinkConfigError(
            f"invalid {what} name {name!r}: use letters, digits and '_' (not starting with a digit), "
            "at most 63 characters"
        )
    return name


@dataclass(frozen=True)
class TableSpec:
    """A target table. ``payload_format`` decides how the typed columns are derived: on CrateDB a
    ``seed`` table computes them as GENERATED columns from ``payload`` (like the original pipeline);
    ``auto``/``json``/``raw`` tables (and other sinks) store the values the rules computed on insert."""

    name: str = DEFAULT_TABLE
    payload_format: str = "seed"

    def __post_init__(self) -> None:
        check_identifier(self.name)
        if self.payload_format not in PAYLOAD_FORMATS:
            raise SinkConfigError(
                f"table {self.name}: unknown payload format {self.payload_format!r} "
                f"(expected one of {', '.join(PAYLOAD_FORMATS)})"
            )


@runtime_checkable
class Sink(Protocol):
    """Stores rows idempotently by ``Row.key`` and dead letters; reports every row's outcome.

    Contract (checked by the conformance suite):
    - ``open(tables)`` connects and creates the tables and the dead-letter table if missing (idempotent).
    - ``write(rows, dead_letters)`` stores dead letters all-or-nothing and reports each row as inserted,
      duplicate (key already stored) or failed (``WriteResult.failures``, with a retryable flag). It
      raises :class:`~enginehub.ingest.model.SinkUnavailableError` when nothing can be confirmed.
      A row is only ever counted once it is durably stored.
    - ``close()`` releases connections; calling it twice is harmless.
    """

    description: str

    def open(self, tables: Sequence[TableSpec] = ()) -> None: ...

    def write(self, rows: Sequence[Row], dead_letters: Sequence[DeadLetter] = ()) -> WriteResult: ...

    def close(self) -> None: ...


def _bulk_size(url: str, text: str | None) -> int | None:
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SinkConfigError(f"{url!r}: bulk_size must be a whole number >= 1 (rows per bulk request)")
    return value


def open_sink(url: str) -> Sink:
    """Build (not open) the sink named by a URL: ``sqlite:///abs/path.db``, ``sqlite:///rel.db``,
    ``crate://host:4200[?schema=doc][&bulk_size=N]``, ``crate+https://...``, ``memory://``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme == "sqlite":
        from enginehub.ingest.sinks.sqlite import SqliteSink

        # as SQLAlchemy: sqlite:///rel.db is relative, sqlite:////abs.db absolute
        path = parts.path
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise SinkConfigError(f"{url!r}: sqlite URL needs a file path, e.g. sqlite:///ingest.db")
        return SqliteSink(path, synchronous=query.get("synchronous", "full"))
    if scheme in ("crate", "crate+http", "crate+https"):
        from enginehub.ingest.sinks.crate import CrateSink

        if not parts.hostname:
            raise SinkConfigError(f"{url!r}: crate URL needs a host, e.g. crate://localhost:4200")
        proto = "https" if scheme == "crate+https" or query.get("ssl") == "true" else "http"
        server = f"{proto}://{parts.hostname}:{parts.port or 4200}"
        return CrateSink(
            server,
            schema=query.get("schema", "doc"),
            username=parts.username,
            password=parts.password,
            bulk_size=_bulk_size(url, query.get("bulk_size")),
        )
    if scheme == "memory":
        from enginehub.ingest.sinks.memory import MemorySink

        return MemorySink()
    raise SinkConfigError(f"unsupported sink URL {url!r}: use sqlite:///path.db or crate://host:4200")
