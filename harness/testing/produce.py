"""Stream C-MAPSS rows into an event hub with the real SDK producer, and check a table against them.

:class:`StreamProducer` sends the seed-line payload of each row with a deterministic message id
(``{run}-{unit}-{cycle}``, as the simulator does) at a bounded rate on a background thread. A failed send
(e.g. the emulator was killed) is retried with the same ids after reconnecting until ``outage_timeout``;
``resent_batches`` counts such retries: each may leave a second copy of its events in the hub (the service
is at-least-once), which the sink's identity key must absorb.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from enginehub.datasets.codecs import encode_line
from enginehub.datasets.schema import COLUMN_NAMES, Row

LOG = logging.getLogger(__name__)


def message_id(run_id: str, row: Row) -> str:
    return f"{run_id}-{row.unit}-{row.cycle}"


@dataclass
class StreamProducer:
    """Send ``rows`` to the hub at ``rate`` events/s in batches of ``batch``; ``start()``, ``join()``."""

    connection_string: str  # with EntityPath
    rows: Sequence[Row]
    run_id: str
    rate: float = 200.0
    batch: int = 20
    outage_timeout: float = 60.0
    acked: int = 0
    resent_batches: int = 0
    errors: list[str] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> StreamProducer:
        self._thread = threading.Thread(target=self._run, name="stream-producer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.join(30)

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise AssertionError(f"producer still sending after {timeout:.0f} s: {self.describe()}")
        if self.error is not None:
            raise AssertionError(f"producer failed: {self.describe()}") from self.error

    def describe(self) -> str:
        return (
            f"acked {self.acked}/{len(self.rows)}, resent batches {self.resent_batches}, "
            f"last errors {self.errors[-3:]}"
        )

    def _client(self) -> Any:
        from azure.eventhub import EventHubProducerClient

        return EventHubProducerClient.from_connection_string(self.connection_string, retry_total=0)

    def _run(self) -> None:
        from azure.eventhub import EventData

        client = None
        start = time.monotonic()
        try:
            for first in range(0, len(self.rows), self.batch):
                chunk = self.rows[first : first + self.batch]
                events = []
                for row in chunk:
                    event = EventData(encode_line(row))
                    event.message_id = message_id(self.run_id, row)
                    events.append(event)
                outage_deadline = None
                while True:
                    if self._stop.is_set():
                        return
                    try:
                        client = client or self._client()
                        client.send_batch(events)
                        break
                    except Exception as exc:
                        self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                        self.resent_batches += 1
                        if client is not None:
                            try:
                                client.close()
                            except Exception:
                                LOG.debug("closing the failed producer", exc_info=True)
                            client = None
                        now = time.monotonic()
                        outage_deadline = outage_deadline or now + self.outage_timeout
                        if now > outage_deadline:
                            raise
                        self._stop.wait(0.2)  # back off before reconnecting (bounded by outage_timeout)
                self.acked += len(chunk)
                due = start + self.acked / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
        except BaseException as exc:
            self.error = exc
        finally:
            if client is not None:
                client.close()


def expected_rows(rows: Sequence[Row], run_id: str) -> dict[str, Row]:
    """``{row id in the table: source row}``: the ingest identity key is ``mid:<message id>``."""
    return {f"mid:{message_id(run_id, r)}": r for r in rows}


def compare_table(table: dict[str, dict[str, Any]], expected: dict[str, Row]) -> list[str]:
    """Differences between the rows read back (:func:`sinks.read_rows`) and the source rows: missing ids,
    unexpected ids, and values not equal to the source C-MAPSS row. Empty when the table is exact."""
    problems = []
    missing = sorted(set(expected) - set(table))
    extra = sorted(set(table) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[:5]}")
    if extra:
        problems.append(f"{len(extra)} unexpected, e.g. {extra[:5]}")
    bad = 0
    for key, row in expected.items():
        got = table.get(key)
        if got is None:
            continue
        want = (row.unit, row.cycle, *row.values)
        values = tuple(got[c] for c in COLUMN_NAMES)
        if any(
            g is None or abs(float(g) - w) > 1e-9 * max(1.0, abs(w))
            for g, w in zip(values, want, strict=True)
        ):
            bad += 1
            if bad <= 3:
                problems.append(f"{key}: table {values} != source {want}")
        elif got["payload"].strip() != encode_line(row):
            bad += 1
            if bad <= 3:
                problems.append(f"{key}: payload {got['payload']!r} != source line {encode_line(row)!r}")
    if bad > 3:
        problems.append(f"... {bad} rows differ from the source in total")
    return problems
