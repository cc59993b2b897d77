"""Run an asyncio service from synchronous code (pytest, Locust, scripts).

``LoopThread(factory)`` builds the service on a fresh event loop in a daemon thread, awaits its ``start()``,
and returns it once started; ``stop()`` awaits the service's ``stop()`` on that loop and joins the thread.
``call(fn, *args)`` runs ``fn(*args)`` on the loop thread (services' state is only touched there).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class LoopThread:
    """A service with ``async start()`` / ``async stop()`` on its own event loop in a background thread."""

    def __init__(
        self, factory: Callable[[], Any], startup_timeout: float = 30.0, name: str = "enginehub-loop"
    ) -> None:
        self.factory = factory
        self.startup_timeout = startup_timeout
        self.name = name
        self.service: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> Any:
        """Start the service; return it once its ``start()`` returned (its start-up error is raised)."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._started.wait(self.startup_timeout):
            raise TimeoutError(f"{self.name} did not start within {self.startup_timeout:.0f} s")
        if self._error is not None:
            raise self._error
        return self.service

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.service = self.factory()
            await self.service.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.service.stop()

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
        """Run ``fn(*args)`` on the service's loop thread and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread is not None:
            if self._thread.is_alive():
                self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
