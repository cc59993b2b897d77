"""The event-loop choice (asyncio's own loop by default): auto takes uvloop where it is installed and
asyncio's loop where not, an explicit uvloop without the package is a clear error (also from the ingest
CLI), and run() runs on what it said."""

from __future__ import annotations

import asyncio
import sys
import warnings

import pytest

from enginehub.ingest import cli, eventloop
from enginehub.ingest.eventloop import EventLoopUnavailable, loop_factory, resolve, run

uvloop = pytest.importorskip("uvloop", reason="uvloop has no build for this platform")


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_asyncios_own_loop() -> None:
    assert resolve() == "asyncio" and run(_loop_module()).startswith("asyncio")  # the default
    assert loop_factory("auto") is uvloop.new_event_loop and resolve("auto") == "uvloop"
    assert run(_loop_module(), "auto").startswith("uvloop")
    assert run(_loop_module(), "uvloop").startswith("uvloop")
    assert loop_factory("asyncio") is None and resolve("asyncio") == "asyncio"
    assert run(_loop_module(), "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_an_explicit_uvloop_is_an_error(no_uvloop: None) -> None:
    assert resolve("auto") == "asyncio"
    assert run(_loop_module(), "auto").startswith("asyncio")
    with pytest.raises(EventLoopUnavailable, match="uvloop: not installed.*--event-loop asyncio"):
        loop_factory("uvloop")


def test_an_unknown_loop_is_refused_and_the_coroutine_is_not_left_unawaited() -> None:
    coro = _loop_module()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "never awaited" RuntimeWarning would fail here
        with pytest.raises(ValueError, match="'trio': expected one of auto, uvloop, asyncio"):
            run(coro, "trio")
    assert coro.cr_frame is None  # closed


def test_run_returns_the_result_and_raises_the_error_of_the_coroutine() -> None:
    async def boom() -> None:
        raise KeyError("x")

    async def value() -> int:
        await asyncio.sleep(0)
        return 42

    assert run(value()) == 42
    with pytest.raises(KeyError):
        run(boom())


def test_ingest_refuses_an_explicit_uvloop_it_cannot_import(
    no_uvloop: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cs = "Endpoint=sb://127.0.0.1/;EntityPath=eh1"
    argv = ["--eventhub-connection-string", cs, "--event-loop", "uvloop"]
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--sink", "memory://"])
    assert exc.value.code == 2
    assert "uvloop: not installed" in capsys.readouterr().err


def test_the_cli_choices_are_the_modules() -> None:
    action = next(a for a in cli.build_parser()._actions if a.dest == "event_loop")
    assert tuple(action.choices) == eventloop.EVENT_LOOPS
    assert action.default == eventloop.DEFAULT_LOOP == "asyncio"
