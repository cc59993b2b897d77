"""``ReceivedEvent`` (ingest/lazyevents.py) reads exactly like the SDK's own received ``EventData``, builds
its wrapper only when something reads it, and ``install`` only takes effect where it was written for.

Messages go through pyamqp's own encoder and decoder, as the receiver link decodes a transfer."""

from __future__ import annotations

import datetime
import logging
import types
import uuid
from typing import Any

import pytest
from azure.eventhub import EventData
from azure.eventhub._pyamqp._decode import decode_payload
from azure.eventhub._pyamqp._encode import encode_payload
from azure.eventhub._pyamqp.message import Header, Message, Properties
from azure.eventhub._pyamqp.types import TYPE, VALUE, AMQPTypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enginehub.ingest import lazyevents
from enginehub.ingest.lazyevents import ReceivedEvent
from enginehub.ingest.testing import message_id, seed_line
from enginehub.ingest.worker import pack_events

PUBLIC = (
    "body_type",
    "properties",
    "system_properties",
    "sequence_number",
    "offset",
    "enqueued_time",
    "partition_key",
    "content_type",
    "correlation_id",
    "message_id",
)


def received(message: Message) -> Message:
    """``message`` as the receiver link hands it on: encoded, then decoded by pyamqp."""
    return decode_payload(memoryview(bytes(encode_payload(bytearray(), message))))


def _read(event: EventData, name: str) -> Any:
    try:
        value = getattr(event, name)
        return value() if callable(value) else value
    except Exception as exc:  # noqa: BLE001 - the same failure is the same behaviour
        return ("raised", type(exc))


def view(event: EventData) -> dict[str, Any]:
    """Everything a user (or the SDK) can read of a received event."""
    out = {name: _read(event, name) for name in PUBLIC}
    body = _read(event, "body")
    out["body"] = list(body) if isinstance(body, types.GeneratorType) else body
    out["body_as_str"] = _read(event, "body_as_str")
    out["body_as_json"] = _read(event, "body_as_json")
    out["repr"] = repr(event)
    out["str"] = str(event)
    raw = event.raw_amqp_message
    for part in ("header", "properties"):
        section = getattr(raw, part)
        out[f"raw.{part}"] = None if section is None else {k: getattr(section, k) for k in section.keys()}  # noqa: SIM118 - a DictMixin, not a dict
    for part in ("annotations", "delivery_annotations", "application_properties", "footer", "body_type"):
        out[f"raw.{part}"] = getattr(raw, part)
    return out


texts = st.text(max_size=12)


def typed(kind: str) -> Any:
    return lambda n: {TYPE: kind, VALUE: n}  # as the emulator (and Event Hubs) encode them


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**31), 2**31 - 1), texts)
annotations = st.fixed_dictionaries(
    {
        b"x-opt-sequence-number": st.integers(0, 2**62).map(typed(AMQPTypes.long)),
        b"x-opt-offset": st.integers(0, 2**40).map(lambda n: str(n).encode()),
        b"x-opt-enqueued-time": st.integers(0, 2**41).map(typed(AMQPTypes.timestamp)),
    },
    optional={b"x-opt-partition-key": texts, b"x-custom": scalars},
)
properties = st.none() | st.builds(
    Properties,
    message_id=st.none() | texts | st.uuids(),
    user_id=st.none() | st.binary(max_size=6),
    to=st.none() | texts,
    subject=st.none() | texts,
    reply_to=st.none() | texts,
    correlation_id=st.none() | texts,
    content_type=st.none() | st.sampled_from([b"application/json", b"text/plain"]),
    group_id=st.none() | texts,
    absolute_expiry_time=st.none(),
    creation_time=st.none(),
    group_sequence=st.none(),
    reply_to_group_id=st.none(),
)
bodies = st.one_of(
    st.lists(st.binary(max_size=40), min_size=1, max_size=3).map(lambda d: {"data": d}),
    st.just({"data": [b'{"a": 1, "b": [2, 3]}']}),
    st.builds(lambda v: {"value": v}, scalars),
    st.builds(lambda s: {"sequence": [s]}, st.lists(st.integers(0, 99), max_size=3)),
)
messages = st.builds(
    lambda a, p, app, body, header: Message(
        header=header, message_annotations=a, properties=p, application_properties=app, **body
    ),
    annotations,
    properties,
    st.none() | st.dictionaries(texts, scalars, max_size=3),
    bodies,
    st.none()
    | st.builds(
        Header,
        durable=st.booleans(),
        priority=st.integers(0, 9),
        ttl=st.none(),
        first_acquirer=st.none(),
        delivery_count=st.none(),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_a_received_event_reads_like_the_sdks(message: Message) -> None:
    m = received(message)
    assert view(ReceivedEvent(m)) == view(EventData._from_message(m))


def _seed_message(seq: int, body: bytes | None = None) -> Message:
    return received(
        Message(
            message_annotations={
                b"x-opt-sequence-number": typed(AMQPTypes.long)(seq),
                b"x-opt-offset": str(seq * 100).encode(),
                b"x-opt-enqueued-time": typed(AMQPTypes.timestamp)(1_764_000_000_000 + seq),
            },
            properties=Properties(message_id=message_id(1, seq + 1), correlation_id=str(uuid.uuid4())),
            application_properties={"unit": 1},
            data=[body if body is not None else seed_line(1, seq + 1).encode()],
        )
    )


def test_the_wrapper_is_built_on_first_read_and_once() -> None:
    event = ReceivedEvent(_seed_message(7))
    assert event._lazy_raw is None
    assert event.sequence_number == 7
    raw = event._lazy_raw
    assert raw is not None
    assert event.raw_amqp_message is raw
    assert event.offset == "700"
    assert event.enqueued_time == datetime.datetime.fromtimestamp(1_764_000_000.007, datetime.UTC)
    assert event._lazy_raw is raw


def test_packing_for_the_sink_worker_never_builds_it() -> None:
    messages = [_seed_message(seq) for seq in range(20)] + [_seed_message(20, b"not a line")]
    lazy = [ReceivedEvent(m) for m in messages]
    eager = [EventData._from_message(m) for m in messages]
    assert pack_events(lazy, "eh1", "$Default", "0") == pack_events(eager, "eh1", "$Default", "0")
    assert all(event._lazy_raw is None for event in lazy)  # what the receiving process saves


def test_setters_write_to_the_wrapper() -> None:
    event = ReceivedEvent(_seed_message(1))
    event.properties = {"k": "v"}
    event.content_type = "text/plain"
    assert event.properties == {"k": "v"}
    assert event.content_type == "text/plain"
    assert event.raw_amqp_message.application_properties == {"k": "v"}


# -- install -------------------------------------------------------------------------------------------------
class Transport:
    def __init__(self, kind: str) -> None:
        self.KIND = kind


class Consumer:
    """What azure-eventhub 5.15's aio EventHubConsumer has that the fast path relies on."""

    def __init__(self, kind: str = "pyamqp", network_tracing: bool = False) -> None:
        from collections import deque

        self._amqp_transport = Transport(kind)
        self._client = type(
            "Client", (), {"_config": type("Config", (), {"network_tracing": network_tracing})}
        )()
        self._message_buffer = deque([_seed_message(3), _seed_message(4)])
        self._last_received_event = None

    def _next_message_in_buffer(self) -> EventData:
        event = EventData._from_message(self._message_buffer.popleft())
        self._last_received_event = event
        return event


class Processor:
    def __init__(self, **consumer: Any) -> None:
        self.consumer = consumer

    def create_consumer(self, partition_id: str, *args: Any) -> Consumer:
        return Consumer(**self.consumer)


def test_install_makes_each_new_consumer_hand_out_received_events(caplog: pytest.LogCaptureFixture) -> None:
    processor = Processor()
    with caplog.at_level(logging.INFO, logger="enginehub.ingest.lazyevents"):
        assert lazyevents.install(processor)
        consumer = processor.create_consumer("0", "-1", False, None)
        processor.create_consumer("1", "-1", False, None)
    assert [r.message for r in caplog.records] == ["received events: the SDK's wrapper built on first use"]
    first = consumer._next_message_in_buffer()
    assert type(first) is ReceivedEvent
    assert consumer._last_received_event is first  # the SDK reconnects from this one's offset
    assert consumer._last_received_event.offset == "300"
    assert consumer._next_message_in_buffer().sequence_number == 4


@pytest.mark.parametrize("kw", [{"kind": "uamqp"}, {"network_tracing": True}])
def test_install_leaves_other_transports_and_network_tracing_alone(
    kw: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    processor = Processor(**kw)
    with caplog.at_level(logging.INFO, logger="enginehub.ingest.lazyevents"):
        assert lazyevents.install(processor)
        consumer = processor.create_consumer("0")
        processor.create_consumer("1")
    assert type(consumer._next_message_in_buffer()) is EventData
    assert [r.message for r in caplog.records].count(
        "received events built by the SDK as usual (not pyamqp, or network tracing is on)"
    ) == 1


def test_install_refuses_an_unknown_processor() -> None:
    assert lazyevents.install(object()) is False
