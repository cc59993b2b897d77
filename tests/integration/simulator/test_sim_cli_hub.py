"""The ``simulate`` command (a real child process) against the in-process IoT Hub emulator."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter

import pytest

from enginehub.simulator.device import quiet_sdk_logging
from enginehub.simulator.net import free_loopback_host

iothub_server = pytest.importorskip("enginehub.harness.iothub.server")

pytestmark = pytest.mark.integration

CMD = [sys.executable, "-m", "enginehub.simulator"]


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


def _hub_args(emu, group_key: str | None = None, gateway: str | None = None) -> list[str]:
    return [
        "--iothub-connection-string", emu.connection_string,
        "--group-key", group_key or emu.registry.group_key,
        "--gateway-host", gateway or emu.gateway_host,
        "--ca-cert", str(emu.ca_cert_path),
        "--no-progress",
    ]  # fmt: skip


async def _simulate(args: list[str], *, interrupt_when=None, timeout: float = 60.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CMD, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    if interrupt_when is not None:
        for _ in range(int(timeout * 10)):
            if interrupt_when():
                break
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_json_summary_is_the_last_line_and_matches_what_the_hub_received(hub) -> None:
    emu, router = hub
    code, out, err = await _simulate(
        [
            *_hub_args(emu),
            "--units",
            "4",
            "--rate",
            "40",
            "--duration",
            "2",
            "--json",
            "--payload",
            "json",
            "--run-id",
            "cli",
        ]  # fmt: skip
    )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("units", "rate_target", "sent", "acked", "failed", "duration_s", "rate_achieved"):
        assert key in summary
    assert summary["units"] == 4 and summary["rate_target"] == 40.0 and summary["failed"] == 0
    assert summary["acked"] == summary["sent"] == len(router.messages)
    assert 70 <= summary["sent"] <= 90 and 35 <= summary["rate_achieved"] <= 45
    ids = Counter(t.properties["message-id"] for t in router.messages)
    assert max(ids.values()) == 1 and "cli-1-1" in ids
    assert {t.device_id for t in router.messages} == {f"engine-000{i}" for i in range(1, 5)}
    assert json.loads(router.messages[0].body)["unit"] >= 1


async def test_sigint_mid_run_drains_and_exits_0_with_a_summary(hub) -> None:
    emu, router = hub
    code, out, err = await _simulate(
        [*_hub_args(emu), "--units", "5", "--rate", "50", "--duration", "60", "--json"],
        interrupt_when=lambda: len(router.messages) >= 40,
    )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] is True and summary["failed"] == 0
    assert summary["acked"] == summary["sent"] >= 40 and summary["duration_s"] < 30
    assert len({t.properties["message-id"] for t in router.messages}) == summary["acked"]
    assert "Traceback" not in err and "draining" in err


async def test_wrong_group_key_exits_4_with_one_line(hub) -> None:
    emu, router = hub
    other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    code, out, err = await _simulate([*_hub_args(emu, group_key=other), "--units", "3", "--duration", "2"])
    assert code == 4, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "refused the credentials" in errors[0]
    assert "Traceback" not in err and not router.messages


async def test_unreachable_hub_exits_3_with_one_line(hub) -> None:
    emu, _ = hub
    nobody = free_loopback_host()
    code, out, err = await _simulate([*_hub_args(emu, gateway=nobody), "--units", "1", "--duration", "2"])
    assert code == 3, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"cannot reach the IoT Hub at {nobody}:8883" in errors[0]
    assert "Traceback" not in err


async def test_fault_options_reach_the_hub(hub) -> None:
    emu, router = hub
    code, out, err = await _simulate(
        [
            *_hub_args(emu),
            "--units",
            "4",
            "--rate",
            "80",
            "--duration",
            "2",
            "--json",
            "--seed",
            "5",
            "--duplicate-rate",
            "0.1",
            "--malformed-rate",
            "0.1",
            "--disconnect-every",
            "10",
        ]  # fmt: skip
    )
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    ids = Counter(t.properties["message-id"] for t in router.messages)
    assert s["duplicates"] > 0 and sum(ids.values()) == s["sent"] + s["duplicates"]
    bad = {
        t.properties["message-id"] for t in router.messages if t.application_properties.get("enginehub-fault")
    }
    assert len(bad) == s["malformed"] > 0
    assert s["disconnects"] > 0 and s["reconnects"] >= s["disconnects"] and s["failed"] == 0


async def test_devices_file_of_connection_strings(hub, tmp_path) -> None:
    from enginehub.simulator.credentials import HubTarget, write_devices_file

    emu, router = hub
    f = tmp_path / "devices.txt"
    write_devices_file(f, HubTarget(emu.hostname, emu.registry.group_key, emu.gateway_host).devices(3))
    code, out, err = await _simulate(
        [
            "--devices-file",
            str(f),
            "--ca-cert",
            str(emu.ca_cert_path),
            "--units",
            "2",
            "--rate",
            "20",
            "--duration",
            "1",
            "--json",
            "--no-progress",
        ]  # fmt: skip
    )
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["acked"] == s["sent"] == len(router.messages) > 0 and s["self_hosted"] is False
    assert {t.device_id for t in router.messages} == {"engine-0001", "engine-0002"}
