"""The REAL azure-iot-device client against the emulator on loopback (no mocks)."""

from __future__ import annotations

import asyncio
import time

import pytest
from azure.iot.device import Message
from azure.iot.device.exceptions import CredentialError, NoConnectionError

from enginehub.harness.iothub import auth
from enginehub.harness.iothub.server import IotHubEmulator, MemoryRouter
from enginehub.harness.iothub.state import AUTH_METHOD_SAS
from enginehub.harness.iothub.testing import free_loopback_ip, poll

pytestmark = pytest.mark.integration


async def test_connect_and_send_with_properties(hub, router, sdk_client):
    client = sdk_client("eng-0001")
    await client.connect()
    msg = Message(b'{"cycle": 1}', message_id="eng-0001-1", content_type="application/json")
    msg.content_encoding = "utf-8"
    msg.correlation_id = "corr-1"
    msg.custom_properties = {"iothub-creation-time-utc": "2024-01-01T00:00:00Z", "a+b": "x y"}
    await client.send_message(msg)
    (t,) = await router.wait_for(1)
    assert t.device_id == "eng-0001"
    assert t.body == b'{"cycle": 1}'
    assert t.properties == {
        "message-id": "eng-0001-1",
        "correlation-id": "corr-1",
        "content-type": "application/json",
        "content-encoding": "utf-8",
    }
    assert t.application_properties == {"iothub-creation-time-utc": "2024-01-01T00:00:00Z", "a+b": "x y"}
    assert t.annotations["iothub-connection-device-id"] == "eng-0001"
    assert t.annotations["iothub-connection-auth-method"] == AUTH_METHOD_SAS
    assert t.annotations["iothub-connection-auth-generation-id"] == hub.registry.get("eng-0001").generation_id
    assert t.annotations["iothub-message-source"] == "Telemetry"
    assert abs(t.annotations["iothub-enqueuedtime"] - time.time() * 1000) < 10_000
    assert hub.metrics.devices["eng-0001"].messages == 1
    assert hub.registry.get("eng-0001").connection_state == "Connected"


async def test_bad_key_gives_credential_error_quickly(hub, sdk_client):
    hub.registry.create("eng-2")
    cs = auth.device_connection_string(hub.hostname, "eng-2", auth.generate_key(), hub.gateway_host)
    client = sdk_client("eng-2", connection_string=cs)
    t0 = time.monotonic()
    with pytest.raises(CredentialError):
        await client.connect()
    assert time.monotonic() - t0 < 5
    assert hub.metrics.auth_failures == 1


async def test_disabled_device_is_refused(hub, sdk_client):
    cs = hub.device_connection_string("eng-3")
    hub.registry.set_status("eng-3", "disabled")
    with pytest.raises(CredentialError):
        await sdk_client("eng-3", connection_string=cs).connect()


async def test_secondary_key_and_group_derived_key(hub, router, sdk_client):
    dev = hub.registry.create("eng-4")
    cs = auth.device_connection_string(hub.hostname, "eng-4", dev.secondary_key, hub.gateway_host)
    c1 = sdk_client("eng-4", connection_string=cs)
    await c1.connect()
    await c1.send_message("one")
    derived = auth.derive_device_key(hub.registry.group_key, "fleet-77")
    c2 = sdk_client(
        "fleet-77",
        connection_string=auth.device_connection_string(hub.hostname, "fleet-77", derived, hub.gateway_host),
    )
    await c2.connect()
    await c2.send_message("two")
    msgs = await router.wait_for(2)
    assert sorted(m.device_id for m in msgs) == ["eng-4", "fleet-77"]
    assert hub.registry.get("fleet-77").source == "group"


async def test_twin_get_and_reported_patch_and_desired_push(hub, sdk_client):
    client = sdk_client("eng-5")
    await client.connect()
    twin = await asyncio.wait_for(client.get_twin(), 10)
    assert twin == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    await asyncio.wait_for(client.patch_twin_reported_properties({"fw": "1.2", "temp": {"max": 3}}), 10)
    twin = await asyncio.wait_for(client.get_twin(), 10)
    assert twin["reported"] == {"fw": "1.2", "temp": {"max": 3}, "$version": 2}
    assert hub.registry.get("eng-5").twin.reported == {"fw": "1.2", "temp": {"max": 3}}

    patches: list[dict] = []
    # the aio client's handler setter blocks until SUBACK: set it off the loop the hub runs on
    await asyncio.to_thread(setattr, client, "on_twin_desired_properties_patch_received", patches.append)
    await poll(
        lambda: "$iothub/twin/PATCH/properties/desired/#" in hub._sessions["eng-5"].subscriptions,
        what="desired-patch subscription",
    )
    version = hub.push_desired("eng-5", {"interval_s": 5})
    await poll(lambda: patches, what="desired patch delivered")
    assert patches[0] == {"interval_s": 5, "$version": version}


async def test_duplicate_device_id_kicks_the_older_connection(hub, sdk_client, raw):
    cs = hub.device_connection_string("eng-6")
    first = raw("eng-6", hub.registry.get("eng-6").primary_key)
    assert await first.connect() == 0
    second = sdk_client("eng-6", connection_string=cs)
    await second.connect()
    await first.wait_closed_by_server(5)
    assert hub.metrics.takeovers == 1
    assert hub.metrics.devices["eng-6"].takeovers == 1
    await second.send_message("still fine")
    assert hub.connected_devices() == ["eng-6"]


async def test_dropped_puback_gives_dup_resend(hub, router, sdk_client):
    client = sdk_client("eng-7", connection_retry=True)
    await client.connect()
    hub.faults.update({"drop_pubacks": 1})
    send = asyncio.create_task(client.send_message(Message("m1", message_id="m1")))
    await router.wait_for(1)
    assert not send.done()
    assert hub.disconnect_all() == 1  # the SDK reconnects at once and paho re-sends with DUP=1
    msgs = await router.wait_for(2, timeout=20)
    try:
        await asyncio.wait_for(send, 20)
    except NoConnectionError:
        pass  # SDK-side race between its reconnect and the op (not the hub's): the re-send happened
    assert [m.properties["message-id"] for m in msgs] == ["m1", "m1"]  # the duplicate reaches the backend
    # paho re-sends an un-acked PUBLISH with DUP=1; when the SDK's own reconnect races the op it publishes
    # it again as a new packet (DUP=0). Either way the hub counts exactly what it saw.
    assert msgs[0].dup is False
    assert hub.metrics.dup == sum(m.dup for m in msgs)
    assert hub.metrics.dropped_pubacks == 1
    assert hub.metrics.devices["eng-7"].reconnects == 1


async def test_close_after_n_publishes_gives_dup_resend(hub, router, sdk_client):
    client = sdk_client("eng-8", connection_retry=True)
    await client.connect()
    hub.faults.update({"close_after_publishes": 2})
    for i in range(3):
        await poll(lambda: client.connected, what="SDK connected")  # the SDK reconnects by itself
        try:
            await asyncio.wait_for(client.send_message(Message(f"m{i}", message_id=f"m{i}")), 20)
        except NoConnectionError:  # SDK-side reconnect race; paho still re-sends the in-flight message
            pass
        await router.wait_for(i + 1 if i < 2 else 4, timeout=20)
    ids = [m.properties["message-id"] for m in router.messages]
    assert ids == ["m0", "m1", "m1", "m2"]
    assert hub.metrics.fault_closes == 1
    assert hub.metrics.dup == sum(m.dup for m in router.messages)


async def test_refuse_connect_5_is_fatal_3_is_retried(hub, sdk_client):
    hub.device_connection_string("eng-9")
    hub.faults.update({"refuse_connect": 5, "refuse_connect_count": 1})
    with pytest.raises(CredentialError):
        await sdk_client("eng-9").connect()
    assert hub.faults.refuse_connect is None  # one-shot
    hub.faults.update({"refuse_connect": 3, "refuse_connect_count": 1})
    from azure.iot.device.exceptions import ConnectionFailedError

    with pytest.raises(ConnectionFailedError):
        await sdk_client("eng-9").connect()
    await sdk_client("eng-9").connect()  # fault used up: next CONNECT accepted
    assert hub.metrics.refused_connects == 2


async def test_two_hubs_on_127_0_0_2_and_127_0_0_3(sdk_client):
    from azure.iot.device.aio import IoTHubDeviceClient

    hubs, routers, clients = [], [], []
    try:
        for ip in ("127.0.0.2", "127.0.0.3"):
            r = MemoryRouter()
            h = IotHubEmulator(r, host=free_loopback_ip(preferred=ip), hostname=f"hub-{ip[-1]}.local")
            await h.start()
            hubs.append(h)
            routers.append(r)
        for h in hubs:
            c = IoTHubDeviceClient.create_from_connection_string(
                h.device_connection_string("same-id"),
                server_verification_cert=h.ca_pem,
                connection_retry=False,
            )
            clients.append(c)
            await c.connect()
        for i, c in enumerate(clients):
            await c.send_message(f"to hub {i}")
        for i, r in enumerate(routers):
            (m,) = await r.wait_for(1)
            assert m.body == f"to hub {i}".encode()
        # each hub has its own CA: a device of hub 0 cannot talk to hub 1's address
        assert hubs[0].ca_pem != hubs[1].ca_pem
    finally:
        for c in clients:
            await c.shutdown()
        for h in hubs:
            await h.stop()


async def test_sas_renewal_reconnects_cleanly(hub, router, sdk_client):
    # the SDK renews at expiry - 120 s with a full DISCONNECT + CONNECT: with a 125 s token, after ~5 s
    client = sdk_client("eng-10", sastoken_ttl=125)
    await client.connect()
    await poll(lambda: hub.metrics.devices["eng-10"].connects >= 2, timeout=30, what="SAS renewal reconnect")
    await poll(lambda: client.connected and hub.connected_devices() == ["eng-10"], what="reconnected")
    await client.send_message("after renewal")
    (m,) = await router.wait_for(1)
    assert m.body == b"after renewal"
    assert hub.metrics.takeovers == 0  # the old connection said DISCONNECT first
    assert hub.metrics.auth_failures == 0
