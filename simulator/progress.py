"""Live progress on stderr: a rich table on a terminal, a plain line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
from collections import deque
from dataclasses import dataclass

from enginehub.simulator.stats import Stats

LOG = logging.getLogger(__name__)


@dataclass
class Snapshot:
    elapsed: float
    stats: Stats
    ingested: int | None  # None when not self-hosted


class Progress:
    def __init__(self, *, rate_target: float, enabled: bool = True, plain_every: float = 5.0) -> None:
        self.rate_target = rate_target
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.plain_every = plain_every
        self._last_plain = -1e9
        self._window: deque[tuple[float, int]] = deque(maxlen=12)
        self._live = None

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(stderr=True), refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def sent_per_s(self, snap: Snapshot) -> float:
        self._window.append((snap.elapsed, snap.stats.sent))
        (t0, n0), (t1, n1) = self._window[0], self._window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def update(self, snap: Snapshot) -> None:
        rate = self.sent_per_s(snap)
        if not self.enabled:
            return
        s = snap.stats
        if self._live is not None:
            from rich import box
            from rich.table import Table

            table = Table(
                title=f"simulate — target {self.rate_target:g} msg/s",
                title_justify="left",
                box=box.SIMPLE_HEAD,
                pad_edge=False,
                collapse_padding=True,
            )
            cols = ["time", "sent/s", "sent", "acked", "pending", "failed", "retries", "reconn"]
            if snap.ingested is not None:
                cols[5:5] = ["ingested", "lag"]
            for c in cols:
                table.add_column(c, justify="right", no_wrap=True, min_width=len(c))
            row = [f"{snap.elapsed:.0f}s", f"{rate:.0f}", str(s.sent), str(s.acked), str(s.inflight)]
            if snap.ingested is not None:
                row += [str(snap.ingested), str(max(0, s.acked - snap.ingested))]
            row += [str(s.failed), str(s.retries), str(s.reconnects)]
            table.add_row(*row)
            self._live.update(table)
        elif snap.elapsed - self._last_plain >= self.plain_every:
            self._last_plain = snap.elapsed
            extra = ""
            if snap.ingested is not None:
                extra = f" ingested={snap.ingested} lag={max(0, s.acked - snap.ingested)}"
            sys.stderr.write(
                f"[{snap.elapsed:6.1f}s] sent/s={rate:.1f} sent={s.sent} acked={s.acked}{extra} "
                f"failed={s.failed} retries={s.retries} reconnects={s.reconnects}\n"
            )
            sys.stderr.flush()
