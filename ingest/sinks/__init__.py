"""Sinks: where rows go. One small interface (:class:`Sink`), several implementations.

- :class:`~enginehub.ingest.sinks.sqlite.SqliteSink` (``sqlite:///path.db``): the embedded default.
- :class:`~enginehub.ingest.sinks.crate.CrateSink` (``crate://host:4200?schema=doc``): the production target.
- :class:`~enginehub.ingest.sinks.memory.MemorySink` (``memory://``): list-backed, for unit tests.

Every implementation passes the shared conformance suite in ``tests/unit/ingest/sink_conformance.py``.
"""

from __future__ import annotations

from enginehub.ingest.sinks.base import Sink, TableSpec, open_sink

__all__ = ["Sink", "TableSpec", "open_sink"]
