"""Counters of one fleet process; picklable and summable across worker processes."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields

LOG = logging.getLogger(__name__)


@dataclass
class Stats:
    sent: int = 0  # messages handed to a device (each (unit, cycle) once)
    acked: int = 0  # PUBACK received
    failed: int = 0  # every attempt failed
    skipped: int = 0  # pacing slots not used: the device already had too many unacked sends
    retries: int = 0
    timeouts: int = 0
    reconnects: int = 0
    connect_errors: int = 0
    duplicates: int = 0  # --duplicate-rate extra sends (same id)
    malformed: int = 0  # --malformed-rate messages
    disconnects: int = 0  # --disconnect-every bounces
    inflight: int = 0
    max_lag_s: float = 0.0
    engines_finished: int = 0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def total(cls, parts: list[Stats]) -> Stats:
        out = cls()
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            setattr(out, f.name, max(values, default=0) if f.name == "max_lag_s" else sum(values))
        return out
