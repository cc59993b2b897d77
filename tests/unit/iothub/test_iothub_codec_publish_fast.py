"""The inlined PUBLISH decoder gives what the ``_Reader``-based one gave: same packet or same error text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.harness.iothub import codec
from enginehub.harness.iothub.errors import CODEC_ERRORS, MalformedPacketError


def _reference(flags: int, body: bytes) -> codec.Publish:
    qos = (flags >> 1) & 3
    dup = bool(flags & 8)
    if qos == 3:
        raise MalformedPacketError("PUBLISH: QoS 3")
    if qos == 0 and dup:
        raise MalformedPacketError("PUBLISH: DUP set on QoS 0")
    r = codec._Reader(body)
    topic = r.string()
    if not topic:
        raise MalformedPacketError("PUBLISH: empty topic name")
    if "+" in topic or "#" in topic:
        raise MalformedPacketError("PUBLISH: wildcard in topic name")
    pid = codec._packet_id(r, "PUBLISH") if qos else None
    return codec.Publish(topic, r.rest(), qos, pid, dup, bool(flags & 1))


def _outcome(fn, flags: int, body: bytes) -> object:  # type: ignore[no-untyped-def]
    try:
        return fn(flags, body)
    except CODEC_ERRORS as exc:
        return (type(exc), str(exc))


_topicish = st.one_of(
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.just(b"devices/d/messages/events/%24.mid=1"),
)


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    topic = draw(_topicish)
    n = draw(st.one_of(st.just(len(topic)), st.integers(0, 70)))
    return n.to_bytes(2, "big") + topic + draw(st.binary(max_size=6))


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 15), st.one_of(_bodies(), st.binary(max_size=8)))
def test_inlined_publish_decoder_matches_the_reader_based_one(flags: int, body: bytes) -> None:
    assert _outcome(codec._decode_publish, flags, body) == _outcome(_reference, flags, body)
