"""Golden packets: bytes produced by the real paho-mqtt 1.6.1 client (the SDK's transport) decode."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest

from enginehub.harness.iothub import codec
from enginehub.harness.iothub.codec import Connect, Puback, Publish, Subscribe, Unsubscribe


class _Capture:
    """A socket stand-in: paho writes its packets here (no I/O)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def send(self, b: bytes) -> int:
        self.data += b
        return len(b)

    def close(self) -> None:
        pass


@pytest.fixture
def paho_client():
    client = mqtt.Client(client_id="eng-0001", protocol=mqtt.MQTTv311, clean_session=False)
    cap = _Capture()
    client._sock = cap
    yield client, cap
    client._sock = None


USERNAME = (
    "myhub.azure-devices.net/eng-0001/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py"
    "%2F2.14.0%28cpython%203.11%3BLinux%3Bx86_64%29"
)
PASSWORD = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Feng-0001&sig=abc%3D&se=1795695864"


def _one(data: bytes):
    packets, rest = codec.decode_all(bytes(data))
    assert rest == b""
    assert len(packets) == 1
    return packets[0]


def test_connect_as_the_sdk_sends_it(paho_client):
    client, cap = paho_client
    client.username_pw_set(USERNAME, PASSWORD)
    client._send_connect(60)
    pkt = _one(cap.data)
    assert pkt == Connect(
        client_id="eng-0001", username=USERNAME, password=PASSWORD.encode(), keepalive=60, clean_session=False
    )
    hlen = codec.parse_fixed_header(cap.data)[2]
    assert cap.data[hlen + 7] == 0xC0  # flags: user + password, CleanSession=0 (as observed from the SDK)
    assert codec.encode(pkt) == bytes(cap.data)


def test_connect_with_will_and_clean_session():
    client = mqtt.Client(client_id="d1", protocol=mqtt.MQTTv311, clean_session=True)
    cap = _Capture()
    client._sock = cap
    client.will_set("devices/d1/messages/events/", b"bye", qos=1, retain=True)
    client._send_connect(30)
    pkt = _one(cap.data)
    assert pkt.will_topic == "devices/d1/messages/events/"
    assert (pkt.will_message, pkt.will_qos, pkt.will_retain, pkt.clean_session) == (b"bye", 1, True, True)
    assert codec.encode(pkt) == bytes(cap.data)
    client._sock = None


def test_publish_qos1_dup_with_property_bag(paho_client):
    client, cap = paho_client
    topic = "devices/eng-0001/messages/events/%24.mid=eng-0001-0&%24.ct=application%2Fjson&%24.ce=utf-8"
    client._send_publish(3, topic.encode(), b'{"a": 1}', 1, False, True)
    pkt = _one(cap.data)
    assert pkt == Publish(topic=topic, payload=b'{"a": 1}', qos=1, packet_id=3, dup=True, retain=False)
    assert codec.encode(pkt) == bytes(cap.data)


def test_publish_qos0_retain(paho_client):
    client, cap = paho_client
    client._state = mqtt.mqtt_cs_connected
    client.publish("devices/eng-0001/messages/events/", b"x" * 300, qos=0, retain=True)
    pkt = _one(cap.data)
    assert pkt == Publish(topic="devices/eng-0001/messages/events/", payload=b"x" * 300, retain=True)
    assert codec.encode(pkt) == bytes(cap.data)


def test_subscribe_unsubscribe_puback_ping_disconnect(paho_client):
    client, cap = paho_client
    client._send_subscribe(
        False, [(b"$iothub/twin/res/#", 1), (b"$iothub/twin/PATCH/properties/desired/#", 1)]
    )
    client._send_unsubscribe(False, [b"$iothub/twin/res/#"])
    client._send_puback(7)
    client._send_pingreq()
    client._send_disconnect()
    packets, rest = codec.decode_all(bytes(cap.data))
    assert rest == b""
    assert packets == [
        Subscribe(1, (("$iothub/twin/res/#", 1), ("$iothub/twin/PATCH/properties/desired/#", 1))),
        Unsubscribe(2, ("$iothub/twin/res/#",)),
        Puback(7),
        codec.Pingreq(),
        codec.Disconnect(),
    ]
    assert b"".join(codec.encode(p) for p in packets) == bytes(cap.data)


def test_server_packets_are_what_paho_expects():
    # paho's reader accepts exactly these encodings (spec §3.2, §3.4, §3.9, §3.13)
    assert codec.encode(codec.Connack(0)) == b"\x20\x02\x00\x00"
    assert codec.encode(codec.Connack(5)) == b"\x20\x02\x00\x05"
    assert codec.encode(Puback(0x1234)) == b"\x40\x02\x12\x34"
    assert codec.encode(codec.Suback(9, (1, 0x80))) == b"\x90\x04\x00\x09\x01\x80"
    assert codec.encode(codec.Pingresp()) == b"\xd0\x00"


def test_large_publish_uses_multibyte_length(paho_client):
    client, cap = paho_client
    body = bytes(range(256)) * 1024  # 256 KiB
    client._send_publish(1, b"devices/d/messages/events/", body, 1, False, False)
    pkt = _one(cap.data)
    assert pkt.payload == body
    assert codec.encode(pkt) == bytes(cap.data)
