"""The fleet's real azure-iot-device clients against the in-process IoT Hub emulator (TLS MQTT)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from enginehub.simulator.credentials import DeviceCredentials, HubTarget
from enginehub.simulator.device import DevicePolicy, quiet_sdk_logging
from enginehub.simulator.fleet import MemorySource
from enginehub.simulator.net import free_loopback_host
from enginehub.simulator.runner import FleetConfig, FleetRunner

iothub_server = pytest.importorskip("enginehub.harness.iothub.server")

pytestmark = pytest.mark.integration


def _source() -> MemorySource:
    from enginehub.datasets.schema import Row

    rows = [
        Row(u, c, (0.0012, -0.0003, 100.0), tuple(round(500.0 + u + c / 100 + s, 2) for s in range(21)))
        for u in range(1, 4)
        for c in range(1, 41)
    ]
    return MemorySource("TEST", rows)


@pytest.fixture
async def hub():
    quiet_sdk_logging()
    router = iothub_server.MemoryRouter()
    emu = iothub_server.IotHubEmulator(router, host=free_loopback_host())
    await emu.start()
    try:
        yield emu, router
    finally:
        await emu.stop()


def _cfg(emu, devices: list[DeviceCredentials], **kw) -> FleetConfig:
    return FleetConfig(
        devices=tuple(devices),
        rate=kw.pop("rate", 50.0),
        total_devices=len(devices),
        duration=kw.pop("duration", 2.0),
        run_id="it",
        ca_cert_pem=emu.ca_pem,
        policy=kw.pop("policy", DevicePolicy(send_timeout=2.0, connect_timeout=5.0)),
        drain_timeout=10.0,
        **kw,
    )


def _target(emu) -> HubTarget:
    return HubTarget(emu.hostname, emu.registry.group_key, emu.gateway_host)


async def test_fleet_messages_arrive_once_with_id_content_type_and_properties(hub) -> None:
    emu, router = hub
    runner = FleetRunner(_cfg(emu, _target(emu).devices(5)), _source())
    stats = await runner.run()
    assert runner.fatal is None, runner.fatal
    assert stats.acked == stats.sent and stats.failed == 0 and 90 <= stats.sent <= 110
    got = router.messages
    assert len(got) == stats.sent
    ids = Counter(t.properties.get("message-id") for t in got)
    assert len(ids) == stats.sent and max(ids.values()) == 1
    t = next(m for m in got if m.properties["message-id"] == "it-2-3")
    assert t.device_id == "engine-0002"
    assert t.properties["content-type"] == "text/plain" and t.properties["content-encoding"] == "utf-8"
    assert t.application_properties["unit"] == "2" and t.application_properties["cycle"] == "3"
    assert t.application_properties["dataset"] == "TEST"
    assert t.application_properties["iothub-creation-time-utc"].endswith("Z")
    assert t.body.decode().split()[:2] == ["2", "3"]


async def test_dropped_pubacks_are_resent_with_the_same_id_and_nothing_is_missing(hub) -> None:
    emu, router = hub
    emu.faults.drop_pubacks = 3
    policy = DevicePolicy(send_timeout=0.5, connect_timeout=5.0)
    runner = FleetRunner(_cfg(emu, _target(emu).devices(3), policy=policy), _source())
    stats = await runner.run()
    assert runner.fatal is None and stats.failed == 0 and stats.acked == stats.sent
    assert stats.timeouts >= 1
    ids = Counter(t.properties["message-id"] for t in router.messages)
    assert len(ids) == stats.sent  # none missing
    assert sum(ids.values()) - len(ids) >= 3  # the re-sends: duplicates by id only


async def test_wrong_key_is_a_fatal_auth_error(hub) -> None:
    emu, router = hub
    bad = HubTarget(emu.hostname, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", emu.gateway_host).devices(2)
    runner = FleetRunner(_cfg(emu, bad), _source())
    stats = await runner.run()
    assert runner.fatal is not None and runner.fatal.kind == "auth", runner.fatal
    assert stats.sent == 0 and not router.messages


async def test_unreachable_hub_is_reported() -> None:
    quiet_sdk_logging()
    host = free_loopback_host()  # nothing listens there
    devs = HubTarget("nohub.local", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", host).devices(1)
    cfg = FleetConfig(
        devices=tuple(devs),
        rate=10.0,
        total_devices=1,
        duration=1.0,
        policy=DevicePolicy(connect_attempts=2, backoff_base=0.05, connect_timeout=5.0),
    )
    runner = FleetRunner(cfg, _source())
    await asyncio.wait_for(runner.run(), 30)
    assert runner.fatal is not None and runner.fatal.kind == "unreachable", runner.fatal
