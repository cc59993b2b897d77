"""Cloud-to-device messages: the REAL azure-iot-hub ``send_c2d_message`` (uamqp, AMQPS on <host>:5671) into
the emulator, delivered to REAL azure-iot-device clients (sync and aio ``on_message_received``); the
redelivery rule is checked on the wire with the raw MQTT client (the SDK acknowledges at once)."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from azure.iot.device import IoTHubDeviceClient

from enginehub.harness.iothub import auth, codec
from enginehub.harness.iothub.server import IotHubEmulator, MemoryRouter
from enginehub.harness.iothub.testing import free_loopback_ip
from enginehub.harness.runtime import LoopThread
from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration

uamqp = pytest.importorskip("uamqp", reason="uamqp (azure-iot-hub's C2D transport) is not installed")
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402  (needs uamqp)

SEND_FAILURE = "C2D message send failure"  # what the SDK raises on any rejected message


def _trust(mp: pytest.MonkeyPatch, ca_pem: str, directory: Path) -> None:
    """requests (REST) reads REQUESTS_CA_BUNDLE; uamqp (C2D) reads certifi + OpenSSL's SSL_CERT_FILE."""
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        # on top of what is trusted already: the session's iothub_service fixture may have set these for
        # the plugin's hub, which test_c2d_through_the_plugin_fixtures uses while this module's hub runs
        bundle = directory / f"{var.lower()}.pem"
        bundle.write_text(Path(os.environ.get(var) or certifi.where()).read_text() + ca_pem)
        mp.setenv(var, str(bundle))


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IotHubEmulator]:
    runner = LoopThread(lambda: IotHubEmulator(MemoryRouter(), host=free_loopback_ip()), name="c2d-hub")
    emulator = runner.start()
    mp = pytest.MonkeyPatch()
    _trust(mp, emulator.ca_pem, tmp_path_factory.mktemp("c2d-trust"))
    try:
        yield emulator
    finally:
        mp.undo()
        runner.stop()


@pytest.fixture(scope="module")
def rm(hub: IotHubEmulator) -> Iterator[IoTHubRegistryManager]:
    assert hub.amqp_port == 5671, "the C2D endpoint must listen where uamqp dials"
    manager = IoTHubRegistryManager.from_connection_string(hub.service_connection_string)
    yield manager
    manager.amqp_svc_client.disconnect_sync()


def _received(client: IoTHubDeviceClient) -> queue.Queue[Any]:
    got: queue.Queue[Any] = queue.Queue()
    client.on_message_received = got.put
    return got


def test_c2d_to_an_online_device_with_properties(rm: IoTHubRegistryManager, hub: IotHubEmulator) -> None:
    rm.create_device_with_sas("c2d-online", None, None, "enabled")
    client = IoTHubDeviceClient.create_from_connection_string(
        hub.device_connection_string("c2d-online"),
        server_verification_cert=hub.ca_pem,
        connection_retry=False,
    )
    try:
        got = _received(client)  # subscribes to devices/c2d-online/messages/devicebound/#
        client.connect()
        wait_until(lambda: "c2d-online" in hub.connected_devices(), 10, hub.connected_devices)
        props = {
            "messageId": "mid-1",
            "correlationId": "cid-1",
            "contentType": "application/json",
            "contentEncoding": "utf-8",
            "command": "setRate",
            "odd key/&=": "a value/with & and =",
        }
        rm.send_c2d_message("c2d-online", '{"rate": 2}', props)
        msg = got.get(timeout=10)
        assert msg.data == b'{"rate": 2}'
        assert msg.message_id == "mid-1" and msg.correlation_id == "cid-1"
        assert msg.content_type == "application/json" and msg.content_encoding == "utf-8"
        assert msg.custom_properties == {"command": "setRate", "odd key/&=": "a value/with & and ="}
        wait_until(lambda: hub.c2d.depth("c2d-online") == 0, 10, lambda: hub.c2d.depth("c2d-online"))
        rm.send_c2d_message("c2d-online", "second", {})
        assert got.get(timeout=10).data == b"second"
        assert got.empty()
    finally:
        client.shutdown()


def test_c2d_to_an_offline_device_is_queued_and_delivered_on_connect_aio(
    rm: IoTHubRegistryManager, hub: IotHubEmulator
) -> None:
    from azure.iot.device.aio import IoTHubDeviceClient as AioClient

    rm.create_device_with_sas("c2d-offline", None, None, "enabled")
    for i in range(3):
        rm.send_c2d_message("c2d-offline", f"queued-{i}", {"n": str(i)})
    assert rm.get_device("c2d-offline").cloud_to_device_message_count == 3

    async def receive() -> list[Any]:
        client = AioClient.create_from_connection_string(
            hub.device_connection_string("c2d-offline"),
            server_verification_cert=hub.ca_pem,
            connection_retry=False,
        )
        got: asyncio.Queue[Any] = asyncio.Queue()
        client.on_message_received = got.put_nowait
        try:
            await client.connect()
            return [await asyncio.wait_for(got.get(), 10) for _ in range(3)]
        finally:
            await client.shutdown()

    msgs = asyncio.run(receive())
    assert [m.data for m in msgs] == [b"queued-0", b"queued-1", b"queued-2"]  # in order, once each
    assert [m.custom_properties["n"] for m in msgs] == ["0", "1", "2"]
    wait_until(lambda: hub.c2d.depth("c2d-offline") == 0, 10, lambda: hub.c2d.depth("c2d-offline"))
    assert rm.get_device("c2d-offline").cloud_to_device_message_count == 0


def test_c2d_unknown_device_is_refused(rm: IoTHubRegistryManager, hub: IotHubEmulator) -> None:
    rejected = hub.metrics.c2d_rejected
    with pytest.raises(Exception, match=SEND_FAILURE):
        rm.send_c2d_message("c2d-no-such-device", "lost?", {})
    assert hub.metrics.c2d_rejected == rejected + 1
    assert hub.c2d.depth("c2d-no-such-device") == 0


def test_c2d_wrong_key_fails_authentication(hub: IotHubEmulator) -> None:
    cs = (
        hub.service_connection_string.rsplit("SharedAccessKey=", 1)[0]
        + f"SharedAccessKey={auth.generate_key()}"
    )
    hub.registry.create("c2d-wrong-key")
    bad = IoTHubRegistryManager.from_connection_string(cs)
    failures = hub.metrics.service_auth_failures
    try:
        with pytest.raises(uamqp.errors.AuthenticationException):
            bad.send_c2d_message("c2d-wrong-key", "never queued", {})
    finally:
        bad.amqp_svc_client.disconnect_sync()
    assert hub.metrics.service_auth_failures > failures
    assert hub.c2d.depth("c2d-wrong-key") == 0


def test_c2d_queue_depth_is_limited_to_50(rm: IoTHubRegistryManager, hub: IotHubEmulator) -> None:
    rm.create_device_with_sas("c2d-full", None, None, "enabled")
    for i in range(hub.c2d.max_depth):
        rm.send_c2d_message("c2d-full", f"m{i}", {})
    with pytest.raises(Exception, match=SEND_FAILURE):
        rm.send_c2d_message("c2d-full", "one too many", {})
    assert rm.get_device("c2d-full").cloud_to_device_message_count == 50
    rm.delete_device("c2d-full")  # the queue goes with the identity
    assert hub.c2d.depth("c2d-full") == 0
    rm.create_device_with_sas("c2d-full", None, None, "enabled")
    assert rm.get_device("c2d-full").cloud_to_device_message_count == 0


async def test_c2d_delivery_is_at_least_once_on_the_wire(
    raw: Any, rm: IoTHubRegistryManager, hub: IotHubEmulator
) -> None:
    """QoS 1 C2D completes on the PUBACK; a delivery lost with its connection comes again with DUP.
    (``raw`` runs on this test's loop; ``hub`` on its own thread; the blocking SDK call in a worker.)"""
    dev = raw("c2d-raw")
    assert await dev.connect() == 0
    filt = "devices/c2d-raw/messages/devicebound/#"
    assert await dev.request(codec.Subscribe(1, ((filt, 1),))) == codec.Suback(1, (1,))
    await asyncio.to_thread(rm.send_c2d_message, "c2d-raw", "at least once", {"k": "v"})
    first = await dev.next_packet()
    assert isinstance(first, codec.Publish) and first.qos == 1 and not first.dup
    assert first.topic.startswith("devices/c2d-raw/messages/devicebound/") and "k=v" in first.topic
    assert first.payload == b"at least once"
    await dev.close()  # no PUBACK
    await wait_until_async(lambda: "c2d-raw" not in hub.connected_devices())
    assert hub.c2d.depth("c2d-raw") == 1
    again = raw("c2d-raw")
    assert await again.connect() == 0  # the kept session still holds the subscription
    second = await again.next_packet()
    assert isinstance(second, codec.Publish) and second.dup and second.payload == b"at least once"
    again.send(codec.encode_puback(second.packet_id))
    await wait_until_async(lambda: hub.c2d.depth("c2d-raw") == 0)
    assert hub.metrics.c2d_delivered >= 1


async def wait_until_async(condition: Any, timeout: float = 10.0) -> None:
    from enginehub.harness.iothub.testing import poll

    await poll(condition, timeout)


def test_c2d_through_the_plugin_fixtures(iothub: Any, iothub_service: Any) -> None:
    """The ``iothub_service`` fixture trusts the hub for C2D too (SSL_CERT_FILE set by trust_ca)."""
    device_id = iothub.new_device_id("c2d-fixture")
    client = IoTHubDeviceClient.create_from_connection_string(
        iothub.device_connection_string(device_id),
        server_verification_cert=Path(iothub.ca_cert).read_text(),
        connection_retry=False,
    )
    try:
        got = _received(client)
        client.connect()  # a group-derived key: the identity appears on connect
        iothub_service.send_c2d_message(device_id, "via the fixture", {"from": "fixture"})
        msg = got.get(timeout=10)
        assert msg.data == b"via the fixture" and msg.custom_properties == {"from": "fixture"}
    finally:
        client.shutdown()


def _uamqp_auth(hub: IotHubEmulator, token: str) -> Any:
    """uamqp's own CBS auth (public API), as azure-iot-hub builds it, with a token of our choosing."""
    from azure.core.credentials import AccessToken

    host = hub.service_hostname
    cbs = uamqp.authentication.JWTTokenAuth(
        audience=f"https://{host}",
        uri=f"https://{host}",
        get_token=lambda: AccessToken(token, int(time.time()) + 3600),
        token_type=b"servicebus.windows.net:sastoken",
    )
    cbs.update_token()
    return cbs


def _send_raw(hub: IotHubEmulator, token: str, to: str, body: bytes = b"x") -> Any:
    client = uamqp.SendClient(
        f"amqps://{hub.service_hostname}/messages/devicebound", auth=_uamqp_auth(hub, token)
    )
    props = uamqp.message.MessageProperties()
    props.to = to
    client.queue_message(uamqp.Message(body, properties=props))
    try:
        return client.send_all_messages(close_on_done=True)
    finally:
        client.close()


def test_c2d_wire_refusals(hub: IotHubEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """What the SDK cannot produce, sent with uamqp itself: a device-scoped token, a wrong ``to``, a message
    over 64 KB, and the feedback receiver the emulator does not serve."""
    dev = hub.registry.create("c2d-wire")
    host = hub.service_hostname
    good = auth.generate_sas_token(host, hub.registry.policies["iothubowner"], policy="iothubowner")
    to = "/devices/c2d-wire/messages/devicebound"
    device_token = auth.generate_sas_token(f"{hub.hostname}/devices/c2d-wire", dev.primary_key)
    weak = auth.generate_sas_token(host, hub.registry.policies["registryRead"], policy="registryRead")
    caplog.set_level(logging.INFO, logger="enginehub.harness.iothub.amqps")
    for token, why in ((device_token, "device-scoped token"), (weak, "lacks ServiceConnect")):
        failures = hub.metrics.service_auth_failures
        with pytest.raises(uamqp.errors.AuthenticationException):  # put-token 401; uamqp sometimes
            _send_raw(hub, token, to)  # garbles the description it read (its bug), so the hub's log says why
        assert hub.metrics.service_auth_failures > failures
        assert why in caplog.text
    failed = [uamqp.constants.MessageState.SendFailed]
    rejected = hub.metrics.c2d_rejected
    assert _send_raw(hub, good, "/devices/c2d-wire/messages/events") == failed
    assert hub.metrics.c2d_rejected == rejected + 1
    assert _send_raw(hub, good, to, b"x" * (64 * 1024 + 1)) == failed
    assert hub.c2d.depth("c2d-wire") == 0
    assert _send_raw(hub, good, to, b"x" * 60000) == [uamqp.constants.MessageState.SendComplete]
    assert hub.c2d.depth("c2d-wire") == 1
    feedback = uamqp.ReceiveClient(
        f"amqps://{host}/messages/servicebound/feedback", auth=_uamqp_auth(hub, good)
    )
    try:
        with pytest.raises(uamqp.errors.LinkDetach, match="not supported by the enginehub emulator"):
            feedback.receive_message_batch(max_batch_size=1, timeout=3000)
    finally:
        feedback.close()
