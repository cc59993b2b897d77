"""Wire-level behaviour with a raw client built on our codec: rules, robustness, faults, 1,000 devices."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl
import time

import pytest

from enginehub.harness.iothub import auth, codec
from enginehub.harness.iothub.rawclient import RawDevice
from enginehub.harness.iothub.testing import poll

pytestmark = pytest.mark.integration


async def _assert_hub_alive(raw, device_id: str = "alive-check") -> None:
    dev = raw(device_id)
    assert await dev.connect() == 0
    await dev.publish(b"ok", {"$.mid": "alive"})
    await dev.close()


async def test_topic_of_another_device_disconnects(hub, router, raw):
    dev = raw("d1")
    assert await dev.connect() == 0
    dev.publish_nowait(b"spoof", topic="devices/d2/messages/events/")
    await dev.wait_closed_by_server(5)
    assert router.messages == []
    assert hub.metrics.protocol_errors == 1


async def test_qos2_closes_and_qos0_is_routed_without_puback(hub, router, raw):
    dev = raw("d1")
    assert await dev.connect() == 0
    dev.publish_nowait(b"q0", qos=0)
    await router.wait_for(1)
    dev.publish_nowait(b"q2", qos=2)
    await dev.wait_closed_by_server(5)
    assert [m.body for m in router.messages] == [b"q0"]


async def test_256k_limit_by_the_hub_formula(hub, router, raw):
    dev = raw("d1")
    assert await dev.connect() == 0
    props = {"$.mid": "m", "k": "v"}
    overhead = len("m") + len("k") + len("v")
    await dev.publish(b"x" * (256 * 1024 - overhead), props)  # at the limit: accepted
    dev.publish_nowait(b"x" * (256 * 1024 - overhead + 1), props)  # one byte over: closed
    await dev.wait_closed_by_server(5)
    assert len(router.messages) == 1


async def test_retain_flag_and_will(hub, router, raw):
    dev = raw("d1")
    assert await dev.connect() == 0
    dev.send(codec.encode(codec.Publish("devices/d1/messages/events/", b"r", 1, 1, retain=True)))
    (m,) = await router.wait_for(1)
    assert m.application_properties["mqtt-retain"] == "true"
    # a CONNECT with a Will on the telemetry topic: forwarded on an abnormal close
    w = RawDevice(
        hub.host,
        hub.hostname,
        "d1",
        hub.registry.get("d1").primary_key,
        ssl_context=hub.certs.client_context(),
    )
    await w.open()
    w.send(
        codec.encode(
            codec.Connect(
                "d1",
                username=w.username(),
                password=w.token.encode(),
                will_topic="devices/d1/messages/events/",
                will_message=b"gone",
            )
        )
    )
    assert await w._read() == codec.Connack(0, session_present=True)  # CleanSession=0 session kept
    await poll(lambda: hub.metrics.takeovers == 1, what="takeover of the first connection")
    w.writer.transport.abort()
    msgs = await router.wait_for(2)
    assert msgs[1].body == b"gone"
    assert msgs[1].application_properties["iothub-MessageType"] == "Will"


async def test_expired_and_malformed_tokens_get_connack_5(hub, raw):
    key = hub.registry.create("d1").primary_key
    expired = auth.generate_sas_token(f"{hub.hostname}/devices/d1", key, expiry=time.time() - 5)
    for token in (expired, "garbage", f"SharedAccessSignature sr=x&sig=y&se={2**40}"):
        dev = raw("d1", token=token)
        assert await dev.connect() == 5
        await dev.wait_closed_by_server(5)
    assert hub.metrics.auth_failures == 3
    wrong_user = raw("d2")
    wrong_user.username = lambda: "otherhub.local/d2/?api-version=2019-10-01"
    assert await wrong_user.connect() == 5


async def test_protocol_level_and_module_ids_refused(hub, raw):
    dev = raw("d1")
    await dev.open()
    dev.send(
        codec.encode(
            codec.Connect(
                "d1",
                username=dev.username(),
                password=dev.token.encode(),
                protocol_level=3,
                protocol_name="MQIsdp",
            )
        )
    )
    assert await dev._read() == codec.Connack(1)
    mod = raw("d1/m1", key=auth.generate_key(), register=False)
    assert await mod.connect() == 2


async def test_token_expiry_enforced(hub, raw):
    key = hub.registry.create("d1").primary_key
    dev = raw(
        "d1", token=auth.generate_sas_token(f"{hub.hostname}/devices/d1", key, expiry=time.time() + 2.5)
    )
    assert await dev.connect() == 0
    await dev.wait_closed_by_server(10)
    assert hub.metrics.expired_closes == 1


async def test_token_expiry_not_enforced_when_switched_off(hub, raw):
    hub.faults.update({"enforce_token_expiry": False})
    key = hub.registry.create("d1").primary_key
    dev = raw(
        "d1", token=auth.generate_sas_token(f"{hub.hostname}/devices/d1", key, expiry=time.time() + 2.5)
    )
    assert await dev.connect() == 0
    await poll(lambda: time.time() > dev_expiry(dev) + 0.5, what="token expiry to pass")
    assert await dev.request(codec.Pingreq(), timeout=5) == codec.Pingresp()
    assert hub.metrics.expired_closes == 0


def dev_expiry(dev: RawDevice) -> int:
    return auth.parse_sas_token(dev.token).se


async def test_keepalive_enforced_at_one_and_a_half(hub, raw):
    dev = raw("d1")
    assert await dev.connect(keepalive=1) == 0
    assert await dev.request(codec.Pingreq()) == codec.Pingresp()  # pings keep it open
    waited = await dev.wait_closed_by_server(10)
    assert waited >= 1.4
    assert hub.metrics.keepalive_closes == 1


async def test_subscribe_rules(hub, raw):
    dev = raw("d1")
    assert await dev.connect() == 0
    ack = await dev.request(
        codec.Subscribe(1, (("$iothub/twin/res/#", 2), ("#", 1), ("devices/d2/messages/devicebound/#", 1)))
    )
    assert ack == codec.Suback(1, (1, 0x80, 0x80))
    assert await dev.request(codec.Unsubscribe(2, ("$iothub/twin/res/#",))) == codec.Unsuback(2)


async def test_unsupported_topic_closes_in_strict_mode(hub, raw):
    dev = raw("d1")
    assert await dev.connect() == 0
    dev.publish_nowait(b"{}", topic="$iothub/jobs/res/200/?$rid=1")  # not an IoT Hub device topic we serve
    await dev.wait_closed_by_server(5)


async def test_malformed_packets_and_random_bytes_never_take_the_server_down(hub, raw):
    rng = random.Random(4)
    ctx = hub.certs.client_context()
    garbage = [
        b"\x00\x00",  # reserved type
        b"\x10\xff\xff\xff\xff\x7f",  # varint too long
        b"\x10\x05\x00\x04MQ",  # truncated CONNECT then EOF
        b"\x30\x03\x00\x01#",  # PUBLISH before CONNECT
        codec.encode(codec.Connect("x")),  # no credentials
    ] + [os.urandom(rng.randint(1, 300)) for _ in range(30)]
    for data in garbage:
        r, w = await asyncio.open_connection(hub.host, hub.port, ssl=ctx, server_hostname=hub.host)
        w.write(data)
        await w.drain()
        try:
            # the hub closes on a malformed packet (possibly after a CONNACK); a truncated one waits
            await asyncio.wait_for(r.read(), 0.5)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass
        w.transport.abort()
    # plain TCP garbage on the TLS port (no handshake)
    # (seeded: urandom bytes can form a plausible partial TLS record, which the hub rightly waits on until its
    # handshake timeout, longer than this test's read)
    for _ in range(5):
        r, w = await asyncio.open_connection(hub.host, hub.port)
        w.write(rng.randbytes(200))
        with contextlib.suppress(ConnectionError):  # the hub closes (a reset, as data was left unread)
            await asyncio.wait_for(r.read(), 5)
        w.close()
    # malformed packets after a good CONNECT
    for data in (b"\xf0\x00", b"\x32\x03\x00\x01t", b"\x82\x02\x00\x01", b"\x10\x02\x00\x00", b"\x00" * 64):
        dev = raw("fuzzed")
        assert await dev.connect() == 0
        dev.send(data)
        await dev.wait_closed_by_server(5)
        await dev.close()
    await _assert_hub_alive(raw)


async def test_faults_puback_delay_drop_and_disconnect_all(hub, router, raw):
    dev = raw("d1")
    assert await dev.connect() == 0
    hub.faults.update({"puback_delay_s": 0.3})
    t0 = time.monotonic()
    await dev.publish(b"slow")
    assert time.monotonic() - t0 >= 0.29
    hub.faults.update({"puback_delay_s": 0, "drop_pubacks": 1})
    dropped = dev.publish_nowait(b"dropped")
    await dev.publish(b"acked")  # the next one is acknowledged
    assert not dropped.done()
    assert [m.body for m in router.messages] == [b"slow", b"dropped", b"acked"]
    others = [raw(f"storm-{i}") for i in range(5)]
    for o in others:
        assert await o.connect() == 0
    assert hub.disconnect_all() == 6
    for d in [dev, *others]:
        await d.wait_closed_by_server(5)
    with pytest.raises(ConnectionError):
        await dropped
    await poll(lambda: hub.connected_devices() == [], what="no device connected")


async def test_throttle_to_a_rate(hub, router, raw):
    hub.faults.update({"throttle_per_s": 50})
    dev = raw("d1")
    assert await dev.connect() == 0
    t0 = time.monotonic()
    futs = [dev.publish_nowait(f"m{i}".encode()) for i in range(11)]
    await asyncio.wait_for(asyncio.gather(*futs), 10)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.19  # 10 messages beyond the burst of 1 at 50/s
    assert hub.metrics.throttled >= 9
    assert len(router.messages) == 11


async def test_route_failure_means_no_puback_and_nothing_lost(hub, router, raw):
    dev = raw("d1")
    assert await dev.connect() == 0
    router.fail_with = OSError("disk full")
    fut = dev.publish_nowait(b"m")
    await dev.wait_closed_by_server(5)
    with pytest.raises(ConnectionError):
        await fut
    router.fail_with = None
    again = raw("d1", hub.registry.get("d1").primary_key)
    assert await again.connect() == 0
    await again.publish(b"m", dup=True, packet_id=1)
    assert router.messages[0].dup


async def test_1000_concurrent_device_connections(hub, raw):
    n = 1000
    devices = [raw(f"fleet-{i:04d}", register=False) for i in range(n)]  # group-derived keys
    sem = asyncio.Semaphore(100)

    async def connect(dev: RawDevice) -> int:
        async with sem:
            return await dev.connect(timeout=60)

    codes = await asyncio.wait_for(asyncio.gather(*(connect(d) for d in devices)), 240)
    assert codes == [0] * n
    assert len(hub.connected_devices()) == n
    # all still usable at once
    await asyncio.wait_for(asyncio.gather(*(d.publish(b"hi") for d in devices[:: n // 50])), 60)


async def test_dropped_puback_then_dup_resend_is_counted(hub, router, raw):
    key = hub.registry.create("d1").primary_key
    first = raw("d1", key)
    assert await first.connect() == 0
    hub.faults.update({"drop_pubacks": 1})
    unacked = first.publish_nowait(b"m", {"$.mid": "m-1"}, packet_id=5)
    await router.wait_for(1)
    hub.disconnect_all()
    with pytest.raises(ConnectionError):
        await unacked
    again = raw("d1", key)
    assert await again.connect() == 0
    await again.publish(b"m", {"$.mid": "m-1"}, packet_id=5, dup=True)  # what paho does on reconnect
    assert [(m.properties["message-id"], m.dup) for m in router.messages] == [("m-1", False), ("m-1", True)]
    assert hub.metrics.dup == 1 and hub.metrics.dropped_pubacks == 1
    assert hub.metrics.devices["d1"].dup == 1 and hub.metrics.devices["d1"].reconnects == 1


async def test_method_response_for_no_pending_request_is_acked_and_ignored(hub, raw):
    dev = raw("d1")
    assert await dev.connect() == 0
    dev.publish_nowait(b"{}", topic="$iothub/methods/res/200/?$rid=77")
    dev.publish_nowait(b"{}", topic="devices/d1/messages/events/")
    await poll(lambda: hub.metrics.messages == 1, what="the telemetry after the stray method response")
    assert not dev.eof.is_set()
