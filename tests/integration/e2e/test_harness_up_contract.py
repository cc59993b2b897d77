"""``harness up --json`` as outside scripts use it: a child process, ONE JSON line on stdout once everything
accepts connections (keys per docs/architecture.md), each key usable with the real SDKs, SIGTERM -> exit 0."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from enginehub.harness.providers.base import azurite_missing
from enginehub.harness.providers.iothub import harness_up_available
from enginehub.harness.testing.waiting import wait_until

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
STORAGE = {"storage_connection_string", "checkpoint_container"}
EH_CS = re.compile(
    r"^Endpoint=sb://(127\.\d+\.\d+\.\d+):(\d+);SharedAccessKeyName=[^;]+;SharedAccessKey=[^;]+;UseDevelopmentEmulator=true$"
)


def harness_command() -> list[str]:
    """The ``harness`` console script next to this interpreter (as a user's script runs it), else -m."""
    script = Path(sys.executable).parent / "harness"
    return [str(script)] if script.exists() else [sys.executable, "-m", "enginehub.harness"]


@pytest.fixture
def harness_up(tmp_path: Path):  # type: ignore[no-untyped-def]
    missing = harness_up_available()
    if missing:
        pytest.skip(f"{missing}: lands with the IoT Hub issue")
    from enginehub.harness.iothub.testing import free_loopback_ip

    procs: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> tuple[subprocess.Popen[str], dict, str]:
        host = free_loopback_ip()
        cmd = [*harness_command(), "up", "--json", "--eventhubs-port", "0", "--host", host, *extra]
        err = open(tmp_path / f"up-{len(procs)}.err", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True)
        err.close()
        procs.append(proc)
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(90)
        stderr = (tmp_path / f"up-{len(procs) - 1}.err").read_text()
        assert box and box[0].strip(), (
            f"no JSON line within 90 s (exit {proc.poll()}); stderr:\n{stderr[-2000:]}"
        )
        return proc, json.loads(box[0]), host

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(15)
        proc.stdout.close()


def receive_one(cs: str, message_id: str, timeout: float = 30.0) -> dict:
    from azure.eventhub import EventHubConsumerClient

    found: dict = {}

    def on_event(_ctx, event) -> None:  # type: ignore[no-untyped-def]
        if event is not None and event.message_id in (message_id, message_id.encode()):
            found.update(body=event.body_as_str(), system=event.system_properties)

    client = EventHubConsumerClient.from_connection_string(cs, "$Default", retry_total=0)
    worker = threading.Thread(
        target=client.receive, kwargs={"on_event": on_event, "starting_position": "-1", "max_wait_time": 0.5},
        daemon=True,
    )  # fmt: skip
    worker.start()
    try:
        wait_until(lambda: found, timeout, lambda: f"message {message_id} not received")
    finally:
        client.close()
        worker.join(10)
    return found


def test_json_line_contract_and_every_key_works(harness_up, tmp_path: Path) -> None:
    proc, info, host = harness_up("--data-dir", str(tmp_path / "stack"))
    have_azurite = azurite_missing() is None
    assert set(info) >= REQUIRED, sorted(REQUIRED - set(info))
    assert (set(info) >= STORAGE) == have_azurite, (sorted(info), azurite_missing())

    port = EH_CS.match(info["eventhubs_connection_string"])
    assert port, info["eventhubs_connection_string"]
    assert port.group(1) == host, "Event Hubs binds on --host with the rest of the stack"
    assert info["iothub_eventhub_connection_string"] == (
        f"{info['eventhubs_connection_string']};EntityPath={info['eventhub_name']}"
    )
    assert info["iothub_gateway_host"] == host
    assert info["iothub_connection_string"].startswith(
        f"HostName={info['iothub_hostname']};SharedAccessKeyName=iothubowner;SharedAccessKey="
    )
    pem = Path(info["ca_cert"]).read_text()
    assert pem.startswith("-----BEGIN CERTIFICATE-----"), pem[:40]

    # a device whose key derives from device_group_key sends through the gateway with the CA
    from azure.iot.device import IoTHubDeviceClient, Message

    device_id = f"contract-{uuid.uuid4().hex[:8]}"
    key = base64.b64encode(
        hmac.new(base64.b64decode(info["device_group_key"]), device_id.encode(), hashlib.sha256).digest()
    ).decode()
    cs = (
        f"HostName={info['iothub_hostname']};DeviceId={device_id};SharedAccessKey={key};"
        f"GatewayHostName={info['iothub_gateway_host']}"
    )
    client = IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=pem, connection_retry=False
    )
    try:
        client.connect()
        msg = Message("1 1 -0.0007 -0.0004 100.0 518.67 641.82")
        msg.message_id = f"mid-{device_id}"
        client.send_message(msg)
    finally:
        client.shutdown()
    got = receive_one(info["iothub_eventhub_connection_string"], f"mid-{device_id}")
    assert got["body"].startswith("1 1 ")
    assert got["system"][b"iothub-connection-device-id"] in (device_id, device_id.encode())

    if have_azurite:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(info["storage_connection_string"]) as blobs:
            assert blobs.get_container_client(info["checkpoint_container"]).exists()

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert proc.stdout.read() == "", "harness up printed more than ONE line on stdout"


def test_no_azurite_leaves_the_storage_keys_out(harness_up) -> None:
    proc, info, _ = harness_up("--no-azurite")
    assert set(info) >= REQUIRED and not (STORAGE & set(info)), sorted(info)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
