"""The fleet runner and the resilient device over a fake hub, on a fake clock (no sockets, no sleeping)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from azure.iot.device import exceptions as sdk

from enginehub.datasets.schema import Row
from enginehub.simulator.clock import FakeClock
from enginehub.simulator.credentials import HubTarget
from enginehub.simulator.device import DevicePolicy, ResilientDevice
from enginehub.simulator.faults import FaultConfig
from enginehub.simulator.fleet import MemorySource
from enginehub.simulator.messages import OutMessage
from enginehub.simulator.runner import FleetConfig, FleetRunner, split, worker_configs
from enginehub.simulator.stats import Stats

GROUP = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def _source(units: int = 5, cycles: int = 30) -> MemorySource:
    rows = [
        Row(u, c, (0.001, 0.0, 100.0), tuple(float(u * 100 + c + s / 100) for s in range(21)))
        for u in range(1, units + 1)
        for c in range(1, cycles + 1)
    ]
    return MemorySource("TEST", rows)


class FakeHub:
    """Records what arrives; scripted faults: lost PUBACKs, hung sends, refused or failed connects."""

    def __init__(self) -> None:
        self.received: list[tuple[str, OutMessage]] = []
        self.connects: Counter[str] = Counter()
        self.lose_ack: set[str] = set()  # message ids whose first PUBACK is lost (connection drops)
        self.hang: Counter[str] = Counter()  # message id -> how many of its sends never complete
        self.refuse: bool = False
        self.unreachable: bool = False

    def client(self, device_id: str) -> FakeClient:
        return FakeClient(self, device_id)


class FakeClient:
    def __init__(self, hub: FakeHub, device_id: str) -> None:
        self.hub, self.device_id, self.connected = hub, device_id, False

    async def connect(self) -> None:
        await asyncio.sleep(0)
        if self.hub.refuse:
            raise sdk.CredentialError("CONNACK 5: not authorized")
        if self.hub.unreachable:
            raise sdk.ConnectionFailedError("connection refused")
        self.hub.connects[self.device_id] += 1
        self.connected = True

    async def send(self, message: OutMessage) -> None:
        if not self.connected:
            raise sdk.NoConnectionError("not connected")
        await asyncio.sleep(0)
        if self.hub.hang[message.message_id] > 0:
            self.hub.hang[message.message_id] -= 1
            await asyncio.Event().wait()
        self.hub.received.append((self.device_id, message))
        if message.message_id in self.hub.lose_ack:
            self.hub.lose_ack.discard(message.message_id)
            self.connected = False
            raise sdk.ConnectionDroppedError("connection lost before PUBACK")

    async def disconnect(self) -> None:
        self.connected = False

    async def shutdown(self) -> None:
        self.connected = False


def _runner(hub: FakeHub, clock: FakeClock, **kw: object) -> FleetRunner:
    devices = int(kw.pop("devices", 10))
    cfg = FleetConfig(
        devices=tuple(HubTarget("hub.local", GROUP).devices(devices)),
        rate=float(kw.pop("rate", 100.0)),
        total_devices=devices,
        duration=kw.pop("duration", 10.0),  # type: ignore[arg-type]
        run_id="t",
        **kw,  # type: ignore[arg-type]
    )
    return FleetRunner(cfg, _source(), clock=clock, client_factory=lambda c: hub.client(c.device_id))


async def test_fleet_sends_every_slot_once_in_cycle_order() -> None:
    hub, clock = FakeHub(), FakeClock()
    runner = _runner(hub, clock)
    stats = await runner.run()
    assert runner.fatal is None
    assert abs(stats.sent - 1000) <= 10
    assert stats.acked == stats.sent == len(hub.received) and stats.failed == stats.inflight == 0
    ids = [m.message_id for _, m in hub.received]
    assert len(set(ids)) == len(ids)
    by_device: dict[str, list[OutMessage]] = {}
    for dev, m in hub.received:
        by_device.setdefault(dev, []).append(m)
    first = by_device["engine-0001"]
    # engine 1 replays source unit 1 (30 cycles), then engine 11 takes its place
    assert [(m.unit, m.cycle) for m in first[:31]] == [(1, c) for c in range(1, 31)] + [(11, 1)]
    assert first[0].properties["dataset"] == "TEST" and first[0].properties["unit"] == "1"
    assert runner.elapsed == pytest.approx(10.0, abs=0.3)
    assert hub.connects["engine-0001"] == 1


async def test_lost_puback_reconnects_and_resends_with_the_same_id() -> None:
    hub, clock = FakeHub(), FakeClock()
    hub.lose_ack = {"t-3-5", "t-7-2"}
    stats = await _runner(hub, clock).run()
    assert stats.acked == stats.sent and stats.failed == 0
    ids = Counter(m.message_id for _, m in hub.received)
    assert ids["t-3-5"] == 2 and ids["t-7-2"] == 2  # at-least-once: same id twice, consumer keeps one
    assert sum(ids.values()) == stats.sent + 2
    assert stats.reconnects == 2 and stats.retries == 2
    assert hub.connects["engine-0003"] == 2


async def test_a_send_without_puback_times_out_and_is_resent() -> None:
    hub, clock = FakeHub(), FakeClock()
    hub.hang = Counter({"t-2-3": 1})
    policy = DevicePolicy(send_timeout=0.2)  # real time: a hung send costs 0.2 s
    stats = await _runner(hub, clock, devices=2, rate=10.0, duration=2.0, policy=policy).run()
    assert stats.timeouts == 1 and stats.retries == 1 and stats.failed == 0
    assert [m.message_id for _, m in hub.received].count("t-2-3") == 1
    assert stats.acked == stats.sent
    assert stats.reconnects == 0 and hub.connects["engine-0002"] == 1  # one lost PUBACK: same connection


async def test_two_timeouts_in_a_row_reconnect_the_device() -> None:
    hub, clock = FakeHub(), FakeClock()
    hub.hang = Counter({"t-2-3": 2})  # the re-send hangs as well
    policy = DevicePolicy(send_timeout=0.2)  # real time: a hung send costs 0.2 s
    stats = await _runner(hub, clock, devices=2, rate=10.0, duration=2.0, policy=policy).run()
    assert stats.timeouts == 2 and stats.reconnects == 1 and hub.connects["engine-0002"] == 2
    assert stats.failed == 0 and stats.acked == stats.sent


async def test_refused_credentials_are_fatal_and_nothing_is_sent() -> None:
    hub, clock = FakeHub(), FakeClock()
    hub.refuse = True
    runner = _runner(hub, clock)
    stats = await runner.run()
    assert runner.fatal is not None and runner.fatal.kind == "auth"
    assert "refused the credentials" in str(runner.fatal) and "CONNACK 5" in str(runner.fatal)
    assert stats.sent == 0 and not hub.received


async def test_unreachable_hub_gives_up_after_jittered_backoff() -> None:
    hub, clock = FakeHub(), FakeClock()
    hub.unreachable = True
    runner = _runner(hub, clock, devices=1, policy=DevicePolicy(connect_attempts=4))
    await runner.run()
    assert runner.fatal is not None and runner.fatal.kind == "unreachable"
    assert "after 4 attempts" in str(runner.fatal) and "connection refused" in str(runner.fatal)
    # three backoffs of base 0.25, 0.5, 1.0 s, each x0.5..1.5
    assert 0.875 <= clock.monotonic() <= 2.625


def test_backoff_is_jittered_per_device_and_capped() -> None:
    policy = DevicePolicy(backoff_base=1.0, backoff_cap=4.0)
    a = ResilientDevice(
        "a", FakeHub().client("a"), clock=FakeClock(), rng=random.Random(1), stats=Stats(), policy=policy
    )
    b = ResilientDevice(
        "b", FakeHub().client("b"), clock=FakeClock(), rng=random.Random(2), stats=Stats(), policy=policy
    )
    da, db = [a.backoff(n) for n in range(1, 8)], [b.backoff(n) for n in range(1, 8)]
    assert da != db  # devices do not retry in lockstep
    assert all(0.5 * min(4.0, 2 ** (n - 1)) <= d <= 1.5 * min(4.0, 2 ** (n - 1)) for n, d in enumerate(da, 1))


async def test_faults_duplicates_malformed_and_disconnects() -> None:
    hub, clock = FakeHub(), FakeClock()
    faults = FaultConfig(duplicate_rate=0.1, malformed_rate=0.05, disconnect_every=20)
    stats = await _runner(hub, clock, faults=faults, seed=3).run()
    ids = Counter(m.message_id for _, m in hub.received)
    assert stats.duplicates > 50 and sum(ids.values()) == stats.sent + stats.duplicates
    assert sum(1 for n in ids.values() if n > 1) == stats.duplicates
    bad = [m for _, m in hub.received if m.malformed]
    assert len({m.message_id for m in bad}) == stats.malformed > 20
    assert all(m.properties["enginehub-fault"] == "malformed" for m in bad)
    assert stats.disconnects >= 40 and stats.reconnects == stats.disconnects
    assert stats.acked == stats.sent


async def test_stop_request_ends_the_run_early_and_drains() -> None:
    hub, clock = FakeHub(), FakeClock()
    runner = _runner(hub, clock, duration=None)
    stats = await runner.run(should_stop=lambda: clock.monotonic() >= 3.0)
    assert 290 <= stats.sent <= 310 and stats.acked == stats.sent and stats.inflight == 0


async def test_without_replacement_the_run_ends_when_every_engine_is_done() -> None:
    hub, clock = FakeHub(), FakeClock()
    runner = _runner(hub, clock, devices=5, duration=None, replace_engines=False)
    stats = await runner.run()
    assert stats.sent == 5 * 30 and stats.engines_finished == 5


def test_worker_split_covers_every_device_once_with_a_proportional_rate() -> None:
    assert [len(d) for _, d in split(HubTarget("h", GROUP).devices(10), 3)] == [4, 3, 3]
    cfg = FleetConfig(devices=tuple(HubTarget("h", GROUP).devices(10)), rate=1000.0, total_devices=10)
    parts = worker_configs(cfg, 3)
    assert [p.first_index for p in parts] == [0, 4, 7]
    assert sum(p.rate for p in parts) == pytest.approx(1000.0)
    assert parts[0].rate == pytest.approx(400.0)
    assert [d.device_id for p in parts for d in p.devices] == [d.device_id for d in cfg.devices]


def test_stats_total() -> None:
    t = Stats.total([Stats(sent=3, max_lag_s=0.5), Stats(sent=4, max_lag_s=0.2)])
    assert t.sent == 7 and t.max_lag_s == 0.5
