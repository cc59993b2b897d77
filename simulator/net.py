"""Loopback helpers: pick a free 127.0.0.x for a hub on the SDK's fixed port 8883."""

from __future__ import annotations

import logging
import random
import socket

LOG = logging.getLogger(__name__)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_loopback_host(port: int = 8883, rng: random.Random | None = None, tries: int = 64) -> str:
    """A 127.0.0.x (x in 2..254) where `port` is free now (another process may still take it later)."""
    rng = rng or random.Random()
    candidates = rng.sample(range(2, 255), k=min(tries, 253))
    for x in candidates:
        host = f"127.0.0.{x}"
        if port_free(host, port):
            return host
    raise OSError(f"no free 127.0.0.x:{port} found in {len(candidates)} tries")
