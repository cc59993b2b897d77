"""Property, fuzz and bounds tests of the MQTT codec's error contract."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.harness.iothub import codec
from enginehub.harness.iothub.errors import CODEC_ERRORS, MalformedPacketError, PacketTooLargeError

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
topic = text.filter(lambda s: s and "+" not in s and "#" not in s)
pid = st.integers(1, 0xFFFF)


@st.composite
def publishes(draw):
    qos = draw(st.integers(0, 2))
    return codec.Publish(
        topic=draw(topic),
        payload=draw(st.binary(max_size=300)),
        qos=qos,
        packet_id=draw(pid) if qos else None,
        dup=draw(st.booleans()) if qos else False,
        retain=draw(st.booleans()),
    )


@st.composite
def connects(draw):
    has_will = draw(st.booleans())
    has_user = draw(st.booleans())
    return codec.Connect(
        client_id=draw(text),
        username=draw(text) if has_user else None,
        password=draw(st.binary(max_size=100)) if has_user and draw(st.booleans()) else None,
        keepalive=draw(st.integers(0, 0xFFFF)),
        clean_session=draw(st.booleans()),
        will_topic=draw(topic) if has_will else None,
        will_message=draw(st.binary(max_size=50)) if has_will else None,
        will_qos=draw(st.integers(0, 2)) if has_will else 0,
        will_retain=draw(st.booleans()) if has_will else False,
    )


packets = st.one_of(
    publishes(),
    connects(),
    st.builds(codec.Connack, st.integers(0, 5), st.booleans()),
    st.builds(codec.Puback, pid),
    st.builds(codec.Pubrec, pid),
    st.builds(codec.Pubrel, pid),
    st.builds(codec.Pubcomp, pid),
    st.builds(codec.Unsuback, pid),
    st.builds(
        codec.Subscribe,
        pid,
        st.lists(st.tuples(text.filter(bool), st.integers(0, 2)), min_size=1, max_size=5).map(tuple),
    ),
    st.builds(
        codec.Suback, pid, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1, max_size=5).map(tuple)
    ),
    st.builds(codec.Unsubscribe, pid, st.lists(text.filter(bool), min_size=1, max_size=5).map(tuple)),
    st.just(codec.Pingreq()),
    st.just(codec.Pingresp()),
    st.just(codec.Disconnect()),
)


@given(packets)
@settings(max_examples=300)
def test_roundtrip(packet):
    data = codec.encode(packet)
    decoded, used = codec.decode(data)
    assert decoded == packet
    assert used == len(data)


@given(st.lists(packets, max_size=5), st.integers(0, 50))
@settings(max_examples=100)
def test_stream_split_anywhere(pkts, cut):
    data = b"".join(codec.encode(p) for p in pkts)
    cut = min(cut, len(data))
    first, rest = codec.decode_all(data[:cut])
    second, tail = codec.decode_all(rest + data[cut:])
    assert first + second == pkts
    assert tail == b""


@given(st.binary(max_size=400))
@settings(max_examples=1500)
def test_fuzz_arbitrary_bytes_only_raise_codec_errors(data):
    try:
        res = codec.decode(data, max_packet_size=1024)
    except CODEC_ERRORS:
        return
    if res is not None:
        pkt, used = res
        assert 2 <= used <= len(data)
        # whatever decodes re-encodes to something that decodes to the same packet
        assert codec.decode(codec.encode(pkt))[0] == pkt


@given(st.integers(0, 15), st.binary(max_size=200))
@settings(max_examples=1500)
def test_fuzz_bodies_of_every_type(first_byte_low, body):
    for ptype in range(16):
        try:
            codec.decode_body((ptype << 4) | first_byte_low, body)
        except CODEC_ERRORS:
            pass


def test_varint_bounds():
    assert codec.encode_varint(codec.MAX_VARINT) == b"\xff\xff\xff\x7f"
    with pytest.raises(PacketTooLargeError):
        codec.encode_varint(codec.MAX_VARINT + 1)
    with pytest.raises(MalformedPacketError):
        codec.parse_fixed_header(b"\x30\xff\xff\xff\xff\x01", max_packet_size=codec.MAX_VARINT)
    with pytest.raises(MalformedPacketError):
        codec.parse_fixed_header(b"\x30\x80\x00")  # non-minimal


def test_max_packet_size_at_limit_accepted_and_over_rejected():
    limit = 1000
    ok = codec.encode(codec.Publish("t", b"x" * (limit - 3)))
    assert codec.decode(ok, max_packet_size=limit)[0].payload == b"x" * (limit - 3)
    over = codec.encode(codec.Publish("t", b"x" * (limit - 2)))
    with pytest.raises(PacketTooLargeError):
        codec.decode(over, max_packet_size=limit)
    # the limit is enforced from the header alone: no need to buffer the body first
    with pytest.raises(PacketTooLargeError):
        codec.decode(over[:5], max_packet_size=limit)


def test_filter_count_bounds():
    at = codec.Subscribe(1, tuple((f"t{i}", 1) for i in range(codec.MAX_FILTERS)))
    assert codec.decode(codec.encode(at))[0] == at
    over = codec.Subscribe(1, tuple((f"t{i}", 1) for i in range(codec.MAX_FILTERS + 1)))
    with pytest.raises(MalformedPacketError):
        codec.decode(codec.encode(over))
    at_u = codec.Unsubscribe(1, tuple(f"t{i}" for i in range(codec.MAX_FILTERS)))
    assert codec.decode(codec.encode(at_u))[0] == at_u
    with pytest.raises(MalformedPacketError):
        codec.decode(codec.encode(codec.Unsubscribe(1, tuple(f"t{i}" for i in range(codec.MAX_FILTERS + 1)))))


def test_string_bounds():
    at = codec.Publish("a" * codec.MAX_STRING)
    assert codec.decode(codec.encode(at))[0] == at
    with pytest.raises(MalformedPacketError):
        codec.encode(codec.Publish("a" * (codec.MAX_STRING + 1)))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x00\x00", "reserved type 0"),
        (b"\xf0\x00", "reserved type 15"),
        (b"\x36\x05\x00\x01t\x00\x01", "QoS 3"),
        (b"\x38\x03\x00\x01t", "DUP on QoS 0"),
        (b"\x32\x03\x00\x01t", "missing packet id"),
        (b"\x32\x05\x00\x01t\x00\x00", "packet id 0"),
        (b"\x30\x03\x00\x01#", "wildcard in topic"),
        (b"\x30\x04\x00\x02\xff\xfe", "invalid UTF-8"),
        (b"\x30\x03\x00\x01\x00", "U+0000 in topic"),
        (b"\x41\x02\x00\x01", "bad PUBACK flags"),
        (b"\x80\x02\x00\x01", "SUBSCRIBE flags 0"),
        (b"\x82\x02\x00\x01", "SUBSCRIBE without filters"),
        (b"\x82\x06\x00\x01\x00\x01a\x03", "SUBSCRIBE QoS 3"),
        (b"\xc0\x01\x00", "PINGREQ with a body"),
        (b"\x10\x0c\x00\x04MQTT\x04\x01\x00\x3c\x00\x00", "CONNECT reserved flag"),
        (b"\x10\x0c\x00\x04MQTT\x04\x40\x00\x3c\x00\x00", "password without username"),
        (b"\x10\x0c\x00\x04HTTP\x04\x00\x00\x3c\x00\x00", "bad protocol name"),
        (b"\x10\x0e\x00\x04MQTT\x04\x00\x00\x3c\x00\x00zz", "trailing bytes"),
    ],
)
def test_malformed_packets_raise_clear_errors(data, why):
    with pytest.raises(MalformedPacketError):
        codec.decode(data)


def test_incomplete_returns_none():
    data = codec.encode(codec.Publish("devices/d/messages/events/", b"abc", 1, 5))
    for i in range(len(data)):
        assert codec.decode(data[:i]) is None


def test_protocol_level_is_decoded_for_the_server_to_reject():
    pkt = codec.Connect("d", protocol_level=3, protocol_name="MQIsdp")
    assert codec.decode(codec.encode(pkt))[0].protocol_level == 3
