"""Faults for testing consumers, each off by default.

- ``duplicate_rate`` p: after a message is acked, the device sends it again (same id, same body) with
  probability p: the consumer must keep one row.
- ``malformed_rate`` p: with probability p a message's body is replaced by one that does not parse (the
  consumer must dead-letter it, not drop or crash).
- ``disconnect_every`` n: each device disconnects and reconnects after every n of its messages.

Decisions come from one seedable RNG per device, so a run with the same seed injects the same faults.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultConfig:
    duplicate_rate: float = 0.0
    malformed_rate: float = 0.0
    disconnect_every: int = 0

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "malformed_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be within 0..1, got {v}")
        if self.disconnect_every < 0:
            raise ValueError(f"--disconnect-every must be >= 0, got {self.disconnect_every}")

    @property
    def any(self) -> bool:
        return bool(self.duplicate_rate or self.malformed_rate or self.disconnect_every)


class FaultPlan:
    """Per-device fault decisions."""

    def __init__(self, config: FaultConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng

    def malformed(self) -> bool:
        return self.config.malformed_rate > 0 and self.rng.random() < self.config.malformed_rate

    def duplicate(self) -> bool:
        return self.config.duplicate_rate > 0 and self.rng.random() < self.config.duplicate_rate

    def disconnect_after(self, sent_by_device: int) -> bool:
        n = self.config.disconnect_every
        return n > 0 and sent_by_device > 0 and sent_by_device % n == 0
