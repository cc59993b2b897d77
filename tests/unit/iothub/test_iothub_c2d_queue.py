"""Cloud-to-device: the queue lifecycle (pure), the AMQP -> queued message mapping, and the delivery topic
read back by azure-iot-device's own topic parser (the oracle)."""

from __future__ import annotations

import pytest
from azure.iot.device.iothub.models import Message as DeviceMessage
from azure.iot.device.iothub.pipeline import mqtt_topic_iothub

from enginehub.harness.amqp.codec import Timestamp
from enginehub.harness.amqp.message import Message
from enginehub.harness.amqp.performatives import Properties
from enginehub.harness.iothub import topics
from enginehub.harness.iothub.amqps import c2d_message, device_of
from enginehub.harness.iothub.errors import QueueDepthExceeded
from enginehub.harness.iothub.state import C2DMessage, C2DQueues, HubMetrics


def _queues(**kw: int) -> tuple[C2DQueues, HubMetrics]:
    m = HubMetrics()
    return C2DQueues(lambda: m, **kw), m


def _msg(device: str = "d1", body: bytes = b"x", expiry: float = 1e12) -> C2DMessage:
    return C2DMessage(device, body, {"$.mid": body.decode()}, {}, 0.0, expiry)


def test_take_complete_abandon_keep_order_and_count() -> None:
    q, m = _queues()
    a, b = _msg(body=b"a"), _msg(body=b"b")
    q.enqueue(a)
    q.enqueue(b)
    assert q.take("d1", 1.0) == [a, b]
    assert q.take("d1", 1.0) == []  # in flight: not handed out twice
    q.abandon(a)  # its connection was lost
    assert q.take("d1", 1.0) == [a] and a.delivery_count == 2
    q.complete(a)
    q.complete(b)
    assert q.depth("d1") == 0 and m.c2d_delivered == 2 and m.c2d_accepted == 2


def test_depth_limit_at_limit_accepted_one_more_rejected() -> None:
    q, m = _queues(max_depth=3)
    for i in range(3):
        q.enqueue(_msg(body=str(i).encode()))
    with pytest.raises(QueueDepthExceeded, match="3 cloud-to-device messages"):
        q.enqueue(_msg(body=b"4"))
    assert q.depth("d1") == 3 and m.c2d_rejected == 1


def test_expired_and_over_delivered_messages_are_dead_lettered() -> None:
    q, m = _queues(max_delivery_count=2)
    old, fresh = _msg(body=b"old", expiry=10.0), _msg(body=b"new", expiry=100.0)
    q.enqueue(old)
    q.enqueue(fresh)
    assert q.take("d1", 11.0) == [fresh] and m.c2d_expired == 1
    q.abandon(fresh)
    assert q.take("d1", 11.0) == [fresh]
    q.abandon(fresh)
    assert q.take("d1", 11.0) == [] and m.c2d_dead_lettered == 1 and q.depth("d1") == 0


def test_purge_drops_a_device_queue_only() -> None:
    q, _ = _queues()
    q.enqueue(_msg("d1"))
    q.enqueue(_msg("d2"))
    assert q.purge("d1") == 1 and q.depth("d1") == 0 and q.depth("d2") == 1


@pytest.mark.parametrize(
    ("to", "device"),
    [("/devices/d1/messages/devicebound", "d1"), ("/devices/a%2Bb/messages/deviceBound", "a+b")],
)
def test_device_of_reads_the_to_address(to: str, device: str) -> None:
    assert device_of(to) == device


@pytest.mark.parametrize(
    "to", [None, "", "/devices/d1", "/devices/d1/messages/events", "/x/d1/messages/devicebound"]
)
def test_device_of_refuses_other_addresses(to: str | None) -> None:
    with pytest.raises(ValueError, match="must be /devices"):
        device_of(to)


def test_amqp_message_maps_to_the_queued_form() -> None:
    amqp = Message(
        properties=Properties(
            message_id="m1",
            to="/devices/d1/messages/devicebound",
            correlation_id="c1",
            content_type="application/json",
            absolute_expiry_time=Timestamp(2_000_000_000_000),
        ),
        application_properties={"k": "v", "n": 3, "none": None},
        data=[b"pay", b"load"],
    )
    msg = c2d_message(amqp, now=100.0, default_ttl_s=3600.0)
    assert msg.device_id == "d1" and msg.body == b"payload"
    assert msg.properties["$.mid"] == "m1" and msg.properties["$.cid"] == "c1"
    assert msg.properties["$.ct"] == "application/json"
    assert msg.properties["$.exp"] == "2033-05-18T03:33:20.000Z" and msg.expiry_time == 2_000_000_000.0
    assert msg.application_properties == {"k": "v", "n": "3", "none": None}
    no_exp = c2d_message(Message(properties=Properties(to="/devices/d1/messages/devicebound")), 100.0, 60.0)
    assert no_exp.expiry_time == 160.0 and "$.exp" not in no_exp.properties and no_exp.body == b""


def test_delivery_topic_reads_back_with_the_sdk_parser() -> None:
    props: dict[str, str | None] = {
        "odd key/&=": "a/b&c=d e+f%",
        "flag": None,
        "$.mid": "m/1",
        "$.cid": "c&1",
        "$.ct": "application/json",
        "$.ce": "utf-8",
        "$.to": "/devices/d1/messages/devicebound",
    }
    topic = topics.c2d_topic("d1", props)
    assert topic.count("/") == 4  # the bag is one topic level
    received = DeviceMessage(b"")
    mqtt_topic_iothub.extract_message_properties_from_topic(topic, received)
    assert received.message_id == "m/1" and received.correlation_id == "c&1"
    assert received.content_type == "application/json" and received.content_encoding == "utf-8"
    assert received.custom_properties == {"odd key/&=": "a/b&c=d e+f%", "flag": None}
