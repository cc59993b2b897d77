"""Consumer metrics: counters, per-partition lag, batch latency; Prometheus text and a log line."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

LOG = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class PartitionState:
    last_sequence: int = -1  # last event checkpointed (written)
    last_enqueued: int | None = None  # from last_enqueued_event_properties, when the service sends them
    checkpoints: int = 0
    last_written: int = -1  # last event of a confirmed batch (checkpoints may trail it: coalesced)

    @property
    def lag(self) -> int | None:
        """Events enqueued but not yet written (the checkpoint may trail by its interval)."""
        if self.last_enqueued is None:
            return None
        return max(self.last_enqueued - max(self.last_written, self.last_sequence), 0)


@dataclass
class Metrics:
    events: int = 0
    rows_written: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    unmatched: int = 0
    batches: int = 0
    sink_errors: int = 0
    row_retries: int = 0
    checkpoint_errors: int = 0
    sink_down: bool = False
    owned: set[str] = field(default_factory=set)
    partitions: dict[str, PartitionState] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    events_per_s: float = 0.0
    _rate_mark: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0))

    def partition(self, pid: str) -> PartitionState:
        return self.partitions.setdefault(pid, PartitionState())

    def note_unmatched(self, partition_id: str, count: int, action: str) -> None:
        """Count (and log) events of one batch that no rule matched; ``action``: the rule set's."""
        if count:
            self.unmatched += count
            LOG.warning(
                "partition %s: %d event(s) matched no rule (%s)",
                partition_id,
                count,
                "dead-lettered" if action == "dead-letter" else "counted, not stored",
            )

    def observe_batch(self, seconds: float) -> None:
        self.batches += 1
        self.latency_sum += seconds
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_counts[i] += 1
                return
        self.latency_counts[-1] += 1

    def update_rate(self) -> float:
        now = time.monotonic()
        then, count = self._rate_mark
        if now - then > 0:
            self.events_per_s = (self.events - count) / (now - then)
        self._rate_mark = (now, self.events)
        return self.events_per_s

    def log_line(self) -> str:
        lags = {p: s.lag for p, s in sorted(self.partitions.items()) if s.lag is not None}
        return (
            f"{self.events} events ({self.events_per_s:.0f}/s), {self.rows_written} rows written, "
            f"{self.duplicates} duplicates, {self.dead_letters} dead letters, {self.unmatched} unmatched, "
            f"owned partitions {sorted(self.owned)}, lag {lags or 'n/a'}, "
            f"sink {'DOWN' if self.sink_down else 'ok'} ({self.sink_errors} errors)"
        )

    def prometheus(self) -> str:
        p = "enginehub_ingest_"
        lines = [
            f"# TYPE {p}events_total counter",
            f"{p}events_total {self.events}",
            f"# TYPE {p}events_per_second gauge",
            f"{p}events_per_second {self.events_per_s:.3f}",
            f"# TYPE {p}rows_written_total counter",
            f"{p}rows_written_total {self.rows_written}",
            f"# TYPE {p}duplicates_total counter",
            f"{p}duplicates_total {self.duplicates}",
            f"# TYPE {p}dead_letters_total counter",
            f"{p}dead_letters_total {self.dead_letters}",
            f"# TYPE {p}unmatched_total counter",
            f"{p}unmatched_total {self.unmatched}",
            f"# TYPE {p}sink_errors_total counter",
            f"{p}sink_errors_total {self.sink_errors}",
            f"# TYPE {p}checkpoint_errors_total counter",
            f"{p}checkpoint_errors_total {self.checkpoint_errors}",
            f"# TYPE {p}sink_up gauge",
            f"{p}sink_up {0 if self.sink_down else 1}",
            f"# TYPE {p}owned_partitions gauge",
            f"{p}owned_partitions {len(self.owned)}",
            f"# TYPE {p}partition_lag_events gauge",
        ]
        for pid, state in sorted(self.partitions.items()):
            if state.lag is not None:
                lines.append(f'{p}partition_lag_events{{partition="{pid}"}} {state.lag}')
        lines.append(f"# TYPE {p}checkpoint_sequence_number gauge")
        for pid, state in sorted(self.partitions.items()):
            lines.append(f'{p}checkpoint_sequence_number{{partition="{pid}"}} {state.last_sequence}')
        lines.append(f"# TYPE {p}batch_seconds histogram")
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS, self.latency_counts, strict=False):
            cumulative += count
            lines.append(f'{p}batch_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{p}batch_seconds_bucket{{le="+Inf"}} {self.batches}')
        lines.append(f"{p}batch_seconds_sum {self.latency_sum:.6f}")
        lines.append(f"{p}batch_seconds_count {self.batches}")
        return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` in Prometheus text format on ``host:port`` (0 = a free port)."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        LOG.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] in ("/metrics", "/"):
                body, status = self.metrics.prometheus().encode(), "200 OK"
            else:
                body, status = b"not found: GET /metrics\n", "404 Not Found"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
