"""Two ``harness up`` stacks side by side, each on its own ``--host`` with the DEFAULT ports (Event Hubs 5672,
IoT Hub 8883): both come up, every endpoint in each JSON line points at that stack's host, telemetry sent to
one stack's IoT Hub is read back from that stack's Event Hubs only, and both stop with exit 0.

Before the fix ``--host`` moved only the IoT Hub, so the second stack died on 127.0.0.1:5672 ("address
already in use")."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import threading
import uuid
from urllib.parse import urlsplit

import pytest

from enginehub.harness.providers.base import azurite_missing
from enginehub.harness.providers.iothub import HarnessUp, from_up_json, harness_up_available
from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration

DEFAULT_PORTS = (5672, 8883)
N = 20  # messages per stack


def _free_on(host: str, ports: tuple[int, ...]) -> bool:
    for port in ports:
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return False
        finally:
            s.close()
    return True


def _two_hosts() -> list[str]:
    """127.0.0.1 and 127.0.0.3 (the issue's case) where their default ports are free, else other 127.x
    addresses (other engineers' stacks may hold them on a shared machine)."""
    import random

    hosts = [h for h in ("127.0.0.1", "127.0.0.3") if _free_on(h, DEFAULT_PORTS)]
    while len(hosts) < 2:
        h = f"127.{random.randint(20, 250)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        if h not in hosts and _free_on(h, DEFAULT_PORTS):
            hosts.append(h)
    return hosts


def _endpoints(info: dict) -> dict[str, tuple[str | None, int | None]]:
    """(host, port) of every listening service the JSON line names."""
    eh = urlsplit(info["eventhubs_connection_string"].split(";")[0].removeprefix("Endpoint="))
    service = urlsplit(
        "//" + info["iothub_service_connection_string"].split(";")[0].removeprefix("HostName=")
    )
    admin = urlsplit(info["iothub_admin_url"])
    found = {
        "eventhubs": (eh.hostname, eh.port),
        "iothub": (info["iothub_gateway_host"], info["iothub_port"]),
        "iothub_service": (service.hostname, service.port),
        "admin": (admin.hostname, admin.port),
    }
    if "storage_connection_string" in info:
        fields = dict(f.split("=", 1) for f in info["storage_connection_string"].split(";") if "=" in f)
        blob = urlsplit(fields["BlobEndpoint"])
        found["azurite"] = (blob.hostname, blob.port)
    return found


def _send(info: dict, tag: str) -> set[str]:
    """N QoS 1 messages from one device of this stack; returns their message ids (all PUBACKed = durable)."""
    from azure.iot.device import IoTHubDeviceClient, Message

    endpoint = from_up_json(info)
    device_id = endpoint.new_device_id(f"side-{tag}")
    with open(info["ca_cert"]) as f:
        pem = f.read()
    client = IoTHubDeviceClient.create_from_connection_string(
        endpoint.device_connection_string(device_id), server_verification_cert=pem, connection_retry=False
    )
    ids = set()
    try:
        client.connect()
        for i in range(N):
            msg = Message(f"{tag} {i}")
            msg.message_id = f"{tag}-{i}-{uuid.uuid4().hex[:6]}"
            client.send_message(msg)
            ids.add(msg.message_id)
    finally:
        client.shutdown()
    return ids


def _stored_and_read(info: dict, expected: int) -> tuple[int, set[str]]:
    """(events stored in the stack's built-in hub, message ids read from it from the start)."""
    from azure.eventhub import EventHubConsumerClient

    cs = info["iothub_eventhub_connection_string"]
    client = EventHubConsumerClient.from_connection_string(cs, "$Default", retry_total=0)
    got: list[str] = []

    def on_batch(_ctx, events) -> None:  # type: ignore[no-untyped-def]
        got.extend(e.message_id.decode() if isinstance(e.message_id, bytes) else e.message_id for e in events)

    try:
        stored = 0
        for pid in client.get_partition_ids():
            props = client.get_partition_properties(pid)
            if not props["is_empty"]:
                stored += props["last_enqueued_sequence_number"] - props["beginning_sequence_number"] + 1
        worker = threading.Thread(
            target=client.receive_batch,
            kwargs={"on_event_batch": on_batch, "starting_position": "-1", "max_wait_time": 0.5},
            daemon=True,
        )
        worker.start()
        wait_until(lambda: len(got) >= expected, 30, lambda: f"{len(got)} of {expected} read from {cs}")
    finally:
        client.close()
        worker.join(10)
    return stored, set(got)


@pytest.fixture
def stacks():  # type: ignore[no-untyped-def]
    missing = harness_up_available()
    if missing:
        pytest.skip(missing)
    ups: list[HarnessUp] = []
    yield ups
    for up in ups:
        up.stop()


def test_two_stacks_on_two_hosts_with_default_ports(stacks: list[HarnessUp]) -> None:
    hosts = _two_hosts()
    infos = []
    for host in hosts:  # one after the other: the second binds while the first holds its ports
        up = HarnessUp("--host", host, "--partitions", "2", startup_timeout=90)
        stacks.append(up)
        infos.append(up.start())

    for host, info in zip(hosts, infos, strict=True):
        endpoints = _endpoints(info)
        assert ("azurite" in endpoints) == (azurite_missing() is None), sorted(info)
        for name, (h, port) in endpoints.items():  # named on this host, and really bound there
            assert h == host and port, (name, h, port, info)
            assert not _free_on(host, (port,)), f"{name}: nothing listens on {host}:{port}"
        assert info["iothub_gateway_host"] == host
        assert info["eventhubs_connection_string"].startswith(f"Endpoint=sb://{host}:5672;"), info
        assert info["iothub_eventhub_connection_string"].startswith(f"Endpoint=sb://{host}:5672;")
        assert info["eventhubs_port"] == 5672 and info["iothub_port"] == 8883
        assert info["iothub_service_connection_string"].startswith(f"HostName={host}:")
        assert urlsplit(info["iothub_admin_url"]).hostname == host
        if azurite_missing() is None:
            assert f"BlobEndpoint=http://{host}:" in info["storage_connection_string"], info

    sent = [_send(info, f"s{i}") for i, info in enumerate(infos)]
    for i, info in enumerate(infos):
        stored, read = _stored_and_read(info, N)
        assert stored == N, f"stack {i} holds {stored} events, sent {N} to it (cross-talk?)"
        assert read == sent[i], (
            f"stack {i}: foreign {sorted(read - sent[i])[:3]}, missing {len(sent[i] - read)}"
        )

    if azurite_missing() is None:
        from azure.storage.blob import BlobServiceClient

        for info in infos:
            with BlobServiceClient.from_connection_string(info["storage_connection_string"]) as blobs:
                assert blobs.get_container_client(info["checkpoint_container"]).exists()

    codes = [up.stop() for up in stacks]
    assert codes == [0, 0], [up.log_tail() for up in stacks]
    for host, info in zip(hosts, infos, strict=True):
        for name, (_, port) in _endpoints(info).items():
            assert _free_on(host, (port,)), f"{name} still holds {host}:{port} after exit"


def test_a_busy_port_on_the_host_is_named_with_the_flag_to_change_it() -> None:
    missing = harness_up_available()
    if missing:
        pytest.skip(missing)
    host = _two_hosts()[1]
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT of an earlier test
    blocker.bind((host, 5672))
    blocker.listen()
    try:
        cmd = [sys.executable, "-m", "enginehub.harness", "up", "--json", "--no-azurite", "--host", host]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    finally:
        blocker.close()
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout == ""
    assert f"{host}:5672 is already in use (Event Hubs AMQP)" in proc.stderr, proc.stderr[-2000:]
    assert "--eventhubs-port 0" in proc.stderr
