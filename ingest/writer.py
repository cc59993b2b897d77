"""Write one batch until the sink has confirmed every row (or dead-lettered it): the rule that makes a
checkpoint safe.

- :class:`SinkUnavailableError` (or any unexpected sink exception): the whole batch is retried with
  exponential backoff, for as long as it takes, unless the caller gives up (shutdown) — then the batch is
  reported unconfirmed and must not be checkpointed.
- per-row failures: permanent ones become dead letters at once; retryable ones are retried (only those
  rows) up to ``max_row_attempts`` times, then dead-lettered with the last reason. They are never counted
  as written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from enginehub.ingest.metrics import Metrics
from enginehub.ingest.model import DeadLetter, Row, SinkUnavailableError, WriteResult
from enginehub.ingest.sinks.base import Sink

LOG = logging.getLogger(__name__)

Runner = Callable[..., Awaitable[Any]]


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class ConfirmingWriter:
    def __init__(
        self,
        sink: Sink,
        metrics: Metrics | None = None,
        *,
        run: Runner = _inline,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        max_row_attempts: int = 5,
    ) -> None:
        self.sink = sink
        self.metrics = metrics or Metrics()
        self._run = run
        self._sleep = sleep
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.max_row_attempts = max_row_attempts
        self._last_warning = 0.0

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 5.0:  # one line per 5 s while the sink is down
            self._last_warning = now
            LOG.warning(message, *args)

    async def write(
        self,
        rows: Sequence[Row],
        dead_letters: Sequence[DeadLetter] = (),
        give_up: Callable[[], bool] = lambda: False,
    ) -> bool:
        """True once every row is stored (inserted or already there) or dead-lettered, and every dead letter
        is stored; False if ``give_up()`` became true first (nothing may be checkpointed then)."""
        pending = list(rows)
        dls = list(dead_letters)
        attempts: dict[tuple[str, str], int] = {}
        delay = self.retry_initial
        while pending or dls:
            try:
                result: WriteResult = await self._run(self.sink.write, pending, dls)
            except Exception as exc:
                self.metrics.sink_errors += 1
                self.metrics.sink_down = True
                if not isinstance(exc, SinkUnavailableError):
                    LOG.exception("sink %s raised an unexpected error; treating it as unavailable", self.sink)
                self._warn("sink unavailable, batch of %d rows kept, retrying: %s", len(pending), exc)
                if give_up():
                    return False
                await self._sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            if self.metrics.sink_down:
                LOG.info("sink is back: batch of %d rows written", len(pending))
            self.metrics.sink_down = False
            self.metrics.rows_written += result.inserted
            self.metrics.duplicates += result.duplicates
            self.metrics.dead_letters += result.dead_letters
            retry: list[Row] = []
            new_dls: list[DeadLetter] = []
            for failure in result.failures:
                row = pending[failure.index]
                ident = (row.table, row.key)
                attempts[ident] = attempts.get(ident, 0) + 1
                if failure.retryable and attempts[ident] < self.max_row_attempts:
                    retry.append(row)
                else:
                    why = failure.reason
                    if failure.retryable:
                        why = f"{why} (still failing after {attempts[ident]} attempts)"
                    new_dls.append(DeadLetter.of_row(row, why))
            self.metrics.row_retries += len(retry)
            pending, dls = retry, new_dls
            if retry:
                if give_up():
                    return False
                await self._sleep(delay)
                delay = min(delay * 2, self.retry_max)
        return True
