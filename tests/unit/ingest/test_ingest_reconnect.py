"""ReconnectBackoff: capped exponential sleeps while the endpoint refuses, reset after a healthy receive,
and the wrapping of the SDK consumer's receive (no I/O: probe, sleep and clock are injected)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from enginehub.ingest.reconnect import BackoffPolicy, ReconnectBackoff, endpoint_of, install


class _Fake:
    def __init__(self, answers: list[bool]) -> None:
        self.answers = list(answers)
        self.sleeps: list[float] = []
        self.now = 0.0

    async def probe(self) -> bool:
        return self.answers.pop(0)

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def clock(self) -> float:
        return self.now


def _backoff(fake: _Fake, **policy: float) -> ReconnectBackoff:
    return ReconnectBackoff(fake.probe, BackoffPolicy(**policy), sleep=fake.sleep, clock=fake.clock)


def test_sleeps_double_up_to_the_cap_while_refused_and_stop_when_the_endpoint_answers(caplog) -> None:
    fake = _Fake([False] * 6 + [True])
    caplog.set_level(logging.INFO, "enginehub.ingest.reconnect")
    asyncio.run(_backoff(fake, initial=0.1, cap=1.0).after_receive("0", lasted=0.01))
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert fake.answers == []
    text = caplog.text
    assert "refuses connections; retrying with backoff" in text
    assert "accepts connections again after" in text


def test_quick_failures_with_the_port_open_still_back_off_and_a_healthy_receive_resets() -> None:
    fake = _Fake([True] * 5)
    b = _backoff(fake, initial=0.1, cap=0.5, healthy_after=10.0)
    for _ in range(4):  # TCP accepts but the AMQP connection fails at once: still no tight loop
        asyncio.run(b.after_receive("0", lasted=0.01))
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5])
    asyncio.run(b.after_receive("0", lasted=60.0))  # that connection worked for a minute
    assert fake.sleeps[-1] == pytest.approx(0.1)


def test_partitions_back_off_independently() -> None:
    fake = _Fake([True, True, True])
    b = _backoff(fake, initial=0.1, cap=5.0)
    asyncio.run(b.after_receive("0", lasted=0.0))
    asyncio.run(b.after_receive("0", lasted=0.0))
    asyncio.run(b.after_receive("1", lasted=0.0))
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.1])


def test_the_wrapped_receive_backs_off_only_while_the_processor_runs() -> None:
    fake = _Fake([True, True])
    b = _backoff(fake)
    calls = []

    async def receive(*args, **kwargs) -> None:
        calls.append((args, kwargs))

    running = [True]
    wrapped = b.wrap_receive("3", receive, lambda: running[0])
    asyncio.run(wrapped(True, 300, max_wait_time=0.2))
    assert calls == [((True, 300), {"max_wait_time": 0.2})] and len(fake.sleeps) == 1
    running[0] = False  # closed by us: return at once
    asyncio.run(wrapped(True, 300))
    assert len(fake.sleeps) == 1


def test_install_wraps_every_consumer_the_processor_creates() -> None:
    fake = _Fake([True])

    async def receive(*_a) -> None:
        return None

    created = []

    def create_consumer(pid, *_a, **_k):
        c = SimpleNamespace(receive=receive)
        created.append(c)
        return c

    processor = SimpleNamespace(create_consumer=create_consumer, _running=True)
    assert install(processor, _backoff(fake))
    consumer = processor.create_consumer("2", None, False, None)
    assert consumer.receive is not receive
    asyncio.run(consumer.receive())
    assert len(fake.sleeps) == 1
    assert not install(SimpleNamespace(), _backoff(fake))  # SDK internals changed: left alone


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            SimpleNamespace(hostname="127.0.0.1:5999", connection_port=5671, custom_endpoint_address=None),
            ("127.0.0.1", 5999),
        ),
        (
            SimpleNamespace(
                hostname="ns.servicebus.windows.net", connection_port=5671, custom_endpoint_address=None
            ),
            ("ns.servicebus.windows.net", 5671),
        ),
        (
            SimpleNamespace(
                hostname="ns.servicebus.windows.net/$servicebus/websocket",
                connection_port=443,
                custom_endpoint_address=None,
            ),
            ("ns.servicebus.windows.net", 443),
        ),
        (
            SimpleNamespace(
                hostname="ns",
                connection_port=443,
                custom_endpoint_address="sb://gw.local:8443/$servicebus/websocket",
            ),
            ("gw.local", 8443),
        ),
    ],
)
def test_endpoint_of_the_sdk_configuration(config, expected) -> None:
    assert endpoint_of(SimpleNamespace(_config=config)) == expected
    assert endpoint_of(SimpleNamespace()) is None
