"""Test helpers for the IoT Hub emulator (used by tests and benchmarks; no pytest dependency)."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import time
from collections.abc import Callable


def free_loopback_ip(port: int = 8883, preferred: str | None = None) -> str:
    """A 127.x.y.z on which ``port`` is free (other engineers' hubs may hold 127.0.0.1:8883)."""
    candidates = [preferred] if preferred else []
    candidates += [
        f"127.{random.randint(20, 250)}.{random.randint(0, 255)}.{random.randint(2, 254)}" for _ in range(50)
    ]
    for ip in candidates:
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
            return ip
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
        finally:
            s.close()
    raise RuntimeError("no free loopback address for port 8883")


async def poll(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` every 10 ms; on timeout say what was observed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)
