"""``harness iothub device|twin|method|c2d`` as a person runs them: the real CLI in a subprocess against a
``harness iothub --json`` process, with a REAL azure-iot-device client answering methods and receiving C2D."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.iot.device import IoTHubDeviceClient, MethodResponse

from enginehub.harness.iothub import auth
from enginehub.harness.iothub.testing import free_loopback_ip

pytestmark = pytest.mark.integration

HARNESS = [sys.executable, "-m", "enginehub.harness"]


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen(
        [*HARNESS, "iothub", "--json", "--host", free_loopback_ip(), "--eventhubs-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise AssertionError(f"harness iothub exited {proc.wait(10)}")
        yield json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def _cli(info: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HARNESS, "iothub", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ENGINEHUB_IOTHUB_ADMIN": info["iothub_admin_url"]},
    )


def _ok(info: dict[str, Any], *args: str) -> Any:
    r = _cli(info, *args, "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout  # --json: one line
    return json.loads(lines[0])


def _fails(info: dict[str, Any], code: int, *args: str) -> str:
    r = _cli(info, *args)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    return r.stderr


@pytest.fixture(scope="module")
def device(served: dict[str, Any]) -> Iterator[tuple[str, queue.Queue[Any]]]:
    """A connected sync device that answers ``echo`` with its payload, never answers ``hang``, and collects
    C2D messages."""
    created = _ok(served, "device", "create", "cli-dev")
    cs = auth.device_connection_string(
        served["iothub_hostname"],
        "cli-dev",
        created["authentication"]["symmetricKey"]["primaryKey"],
        served["iothub_gateway_host"],
    )
    client = IoTHubDeviceClient.create_from_connection_string(
        cs, server_verification_cert=Path(served["ca_cert"]).read_text(), connection_retry=False
    )
    got: queue.Queue[Any] = queue.Queue()

    def on_method(request: Any) -> None:
        if request.name == "echo":
            client.send_method_response(
                MethodResponse.create_from_method_request(request, 200, request.payload)
            )

    client.on_method_request_received = on_method
    client.on_message_received = got.put
    client.connect()
    try:
        yield "cli-dev", got
    finally:
        client.shutdown()


def test_method_invokes_and_prints_the_device_answer(served: dict[str, Any], device: Any) -> None:
    answer = _ok(served, "method", "cli-dev", "echo", "--payload", '{"rate": 2, "tag": "a b"}')
    assert answer == {"status": 200, "payload": {"rate": 2, "tag": "a b"}}
    assert served["iothub_c2d_endpoint"] == f"amqps://{served['iothub_gateway_host']}:5671"


def test_method_errors_are_clear(served: dict[str, Any], device: Any) -> None:
    err = _fails(served, 1, "method", "cli-dev", "hang", "--timeout", "1")
    assert "HTTP 504" in err and "did not answer 'hang' within 1 s" in err
    _ok(served, "device", "create", "cli-offline")
    assert "not online" in _fails(served, 1, "method", "cli-offline", "echo")
    assert "not found" in _fails(served, 1, "method", "cli-nobody", "echo")
    assert "not JSON" in _fails(served, 2, "method", "cli-dev", "echo", "--payload", "{rate: 2}")
    assert "responseTimeoutInSeconds must be 1..300" in _fails(
        served, 1, "method", "cli-dev", "echo", "--timeout", "0.5"
    )


def test_c2d_send_reaches_the_connected_device(served: dict[str, Any], device: Any) -> None:
    _, got = device
    sent = _ok(
        served,
        "c2d",
        "send",
        "cli-dev",
        "reboot now",
        "--property",
        "reason=cli test",
        "--property",
        "by=a/b",
        "--message-id",
        "cli-m1",
        "--content-type",
        "text/plain",
    )
    assert sent["messageId"] == "cli-m1" and sent["sentToDevice"] is True
    msg = got.get(timeout=10)
    assert msg.data == b"reboot now" and msg.message_id == "cli-m1" and msg.content_type == "text/plain"
    assert msg.custom_properties == {"reason": "cli test", "by": "a/b"}


def test_c2d_for_an_offline_device_waits_in_its_queue(served: dict[str, Any]) -> None:
    _ok(served, "device", "create", "cli-later")
    sent = _ok(served, "c2d", "send", "cli-later", "first", "--ttl", "60")
    assert sent["queued"] == 1 and sent["sentToDevice"] is False
    _ok(served, "c2d", "send", "cli-later", "second")
    waiting = _ok(served, "c2d", "queue", "cli-later")
    assert [m["body"] for m in waiting] == ["first", "second"]
    assert all(m["deliveryCount"] == 0 and not m["inFlight"] for m in waiting)
    assert _ok(served, "c2d", "queue", "cli-later") == waiting  # a peek: nothing removed
    human = _cli(served, "c2d", "queue", "cli-later")
    assert human.returncode == 0 and json.loads(human.stdout) == waiting and "\n " in human.stdout  # indented


def test_c2d_errors_are_clear(served: dict[str, Any]) -> None:
    assert "not found" in _fails(served, 1, "c2d", "send", "cli-nobody", "x")
    assert "BODY is required" in _fails(served, 2, "c2d", "send", "cli-dev")
    assert "not KEY=VALUE" in _fails(served, 2, "c2d", "send", "cli-dev", "x", "--property", "novalue")
    assert "ttlSeconds must be" in _fails(served, 1, "c2d", "send", "cli-dev", "x", "--ttl", "0")
    r = subprocess.run(
        [*HARNESS, "iothub", "c2d", "send", "cli-dev", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "ENGINEHUB_IOTHUB_ADMIN"},
    )
    assert r.returncode != 0 and "--admin URL" in r.stderr


def test_device_and_twin_take_json_too(served: dict[str, Any], device: Any) -> None:
    shown = _ok(served, "device", "show", "cli-dev")
    assert shown["deviceId"] == "cli-dev" and shown["connectionState"] == "Connected"
    assert any(d["deviceId"] == "cli-dev" for d in _ok(served, "device", "list"))
    version = _ok(served, "twin", "desired", "cli-dev", '{"sendIntervalS": 0.5}')["version"]
    twin = _ok(served, "twin", "show", "cli-dev")
    assert twin["desired"]["sendIntervalS"] == 0.5 and twin["desired"]["$version"] == version


def test_sdk_send_c2d_to_the_served_process(
    served: dict[str, Any], device: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The contract path: azure-iot-hub with iothub_service_connection_string and a trust bundle holding
    ca_cert (REQUESTS_CA_BUNDLE for REST, SSL_CERT_FILE for uamqp) reaches the process's C2D endpoint."""
    pytest.importorskip("uamqp", reason="uamqp (azure-iot-hub's C2D transport) is not installed")
    import certifi
    from azure.iot.hub import IoTHubRegistryManager

    _, got = device
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(Path(certifi.where()).read_text() + Path(served["ca_cert"]).read_text())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    rm = IoTHubRegistryManager.from_connection_string(served["iothub_service_connection_string"])
    try:
        rm.send_c2d_message("cli-dev", "from the service SDK", {"via": "uamqp"})
    finally:
        rm.amqp_svc_client.disconnect_sync()
    msg = got.get(timeout=10)
    assert msg.data == b"from the service SDK" and msg.custom_properties == {"via": "uamqp"}
