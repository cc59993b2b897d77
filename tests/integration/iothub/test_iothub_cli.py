"""``harness up --json`` and ``harness iothub`` as subprocesses: one JSON line, real SDK traffic, exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import pytest
from azure.eventhub.aio import EventHubConsumerClient
from azure.iot.device.aio import IoTHubDeviceClient

from enginehub.harness.iothub import auth
from enginehub.harness.iothub.testing import free_loopback_ip

pytestmark = pytest.mark.integration

REQUIRED = {
    "eventhubs_connection_string",
    "eventhub_name",
    "iothub_eventhub_connection_string",
    "iothub_hostname",
    "iothub_gateway_host",
    "iothub_connection_string",
    "device_group_key",
    "ca_cert",
}
HARNESS = [sys.executable, "-m", "enginehub.harness"]


def _start(*args: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [*HARNESS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ}
    )
    line = proc.stdout.readline()  # blocks until ready (or the process dies: empty line)
    if not line:
        proc.wait(10)
        raise AssertionError(f"harness exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
    return proc, json.loads(line)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, "iothub", *args], capture_output=True, text=True, timeout=60)


async def _device_to_consumer(info: dict) -> None:
    device_id = "fleet-0042"
    key = auth.derive_device_key(info["device_group_key"], device_id)
    cs = auth.device_connection_string(info["iothub_hostname"], device_id, key, info["iothub_gateway_host"])
    with open(info["ca_cert"]) as f:
        ca = f.read()
    client = IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=ca, connection_retry=False
    )
    await client.connect()
    await client.send_message("hello from a separate process")
    await client.shutdown()
    got = asyncio.Event()
    seen = []

    async def on_event(ctx, event):
        seen.append(event)
        got.set()

    consumer = EventHubConsumerClient.from_connection_string(
        info["iothub_eventhub_connection_string"], consumer_group="$Default"
    )
    task = asyncio.create_task(consumer.receive(on_event, starting_position="-1"))
    try:
        await asyncio.wait_for(got.wait(), 30)
    finally:
        await consumer.close()
        task.cancel()
    assert seen[0].body_as_str() == "hello from a separate process"
    assert seen[0].system_properties[b"iothub-connection-device-id"] == device_id.encode()


async def test_harness_up_json_no_azurite_then_sigterm(tmp_path):
    host = free_loopback_ip()
    proc, info = _start(
        "up", "--json", "--no-azurite", "--host", host, "--eventhubs-port", "0", "--data-dir", str(tmp_path)
    )
    try:
        assert set(info) >= REQUIRED
        assert "storage_connection_string" not in info and "checkpoint_container" not in info
        assert info["iothub_gateway_host"] == host
        assert info["iothub_eventhub_connection_string"].endswith(f";EntityPath={info['eventhub_name']}")
        assert "UseDevelopmentEmulator=true" in info["eventhubs_connection_string"]
        assert info["iothub_connection_string"].startswith(
            f"HostName={info['iothub_hostname']};SharedAccessKeyName=iothubowner;SharedAccessKey="
        )
        await _device_to_consumer(info)
        # the registry CLI against the running process
        admin = ["--admin", info["iothub_admin_url"]]
        r = _cli("device", "create", "eng-1", *admin)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["deviceId"] == "eng-1"
        _service_sdk_sees(info, "eng-1")
        r = _cli("device", "create", "eng-1", *admin)
        assert r.returncode == 1 and "already exists" in r.stderr
        assert _cli("device", "disable", "eng-1", *admin).returncode == 0
        assert json.loads(_cli("device", "list", *admin).stdout)[0]["status"] == "disabled"
        r = _cli("fault", "set", "--throttle", "100", "--refuse-connect", "3", *admin)
        assert json.loads(r.stdout)["throttle_per_s"] == 100
        r = _cli("fault", "set", "--drop-pubacks", "-1", *admin)
        assert r.returncode == 1 and "drop_pubacks" in r.stderr
        assert json.loads(_cli("fault", "reset", *admin).stdout)["refuse_connect"] is None
        assert json.loads(_cli("disconnect-all", *admin).stdout) == {"disconnected": 0}
        assert _cli("twin", "desired", "eng-1", "not json", *admin).returncode == 2
    finally:
        if proc.poll() is None:
            out, _ = _stop(proc)
            assert out == ""  # exactly one line in all
    assert (tmp_path / "iothub" / "iothub-registry.json").is_file()
    # restart on the same --data-dir: same group key, CA and devices (device connection strings stay valid)
    proc, again = _start(
        "up", "--json", "--no-azurite", "--host", host, "--eventhubs-port", "0", "--data-dir", str(tmp_path)
    )
    try:
        assert again["device_group_key"] == info["device_group_key"]
        assert again["ca_cert"] == info["ca_cert"]
        devices = json.loads(_cli("device", "list", "--admin", again["iothub_admin_url"]).stdout)
        assert {d["deviceId"]: d["status"] for d in devices}["eng-1"] == "disabled"
    finally:
        _stop(proc)


async def test_harness_iothub_alone_sigint():
    proc, info = _start("iothub", "--json", "--host", free_loopback_ip(), "--eventhubs-port", "0")
    assert set(info) >= REQUIRED
    _stop(proc, signal.SIGINT)
    assert not os.path.exists(info["data_dir"])  # temp data dir removed


async def test_harness_up_with_azurite():
    from enginehub.harness.providers.azurite import find_azurite_blob

    if find_azurite_blob() is None:
        pytest.skip("Azurite (npm) not installed here")
    host = free_loopback_ip()
    proc, info = _start("up", "--json", "--host", host, "--eventhubs-port", "0")
    try:
        assert info["checkpoint_container"] == "checkpoints"
        assert f"BlobEndpoint=http://{host}:" in info["storage_connection_string"]  # on --host, as all
        from azure.storage.blob import BlobServiceClient

        svc = BlobServiceClient.from_connection_string(info["storage_connection_string"])
        assert svc.get_container_client(info["checkpoint_container"]).exists()
    finally:
        _stop(proc)


def test_bad_options_exit_2():
    r = subprocess.run(
        [*HARNESS, "up", "--json", "--partitions", "0", "--no-azurite"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--partitions" in r.stderr and r.stdout == ""
    r = subprocess.run(
        [*HARNESS, "iothub", "device", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "ENGINEHUB_IOTHUB_ADMIN"},
    )
    assert r.returncode != 0 and "--admin" in r.stderr


def test_port_8883_in_use_exits_1_with_a_clear_message():
    import socket

    host = free_loopback_ip()
    blocker = socket.socket()
    blocker.bind((host, 8883))
    blocker.listen(1)
    try:
        r = subprocess.run(
            [*HARNESS, "up", "--json", "--no-azurite", "--host", host, "--eventhubs-port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        blocker.close()
    assert r.returncode == 1
    assert r.stdout == ""
    assert "cannot start the local stack" in r.stderr and "8883" in r.stderr


def _service_sdk_sees(info: dict, device_id: str) -> None:
    """azure-iot-hub, pointed at the process by iothub_service_connection_string + REQUESTS_CA_BUNDLE."""
    from azure.iot.hub import IoTHubRegistryManager

    mp = pytest.MonkeyPatch()
    mp.setenv("REQUESTS_CA_BUNDLE", info["ca_cert"])
    try:
        cs = info["iothub_service_connection_string"]
        assert cs.startswith(f"HostName={info['iothub_gateway_host']}:")
        rm = IoTHubRegistryManager.from_connection_string(cs)
        assert rm.get_device(device_id).device_id == device_id
    finally:
        mp.undo()
