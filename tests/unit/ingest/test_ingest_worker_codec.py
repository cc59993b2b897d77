"""The sink worker's packing: what the receiving process sends (pack_events) and what the worker rebuilds
(record_from_packed) must give exactly the EventRecord that to_record makes of the same SDK EventData; and its
one-pass routing (route_packed) exactly what unpack_events + route_batch give: the same rows and dead letters
in the same order, for every rule set (under a catch-all rule plain events skip the EventRecord)."""

from __future__ import annotations

import uuid

from azure.eventhub import EventData
from azure.eventhub._pyamqp.message import Message, Properties
from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.ingest import consumer, worker
from enginehub.ingest.consumer import to_record
from enginehub.ingest.model import DeadLetter, EventRecord
from enginehub.ingest.payloads import FORMATS
from enginehub.ingest.rules import Rule, RuleSet, route_batch
from enginehub.ingest.testing import seed_line
from enginehub.ingest.worker import _frame, _unframe, pack_events, route_packed, unpack_events


def roundtrip(obj: object) -> object:
    """What the worker reads of what the receiving process wrote (the wire format, header less)."""
    return _unframe(_frame(obj)[4:])


text = st.text(max_size=12)
scalar = st.one_of(st.none(), st.integers(-(2**40), 2**40), text, st.binary(max_size=8), st.booleans())
message_ids = st.one_of(st.none(), text, st.binary(max_size=8), st.integers(0, 2**63), st.uuids())


@st.composite
def messages(draw: st.DrawFn) -> Message:
    seq = draw(st.integers(0, 2**40))
    annotations: dict[bytes, object] = {
        b"x-opt-sequence-number": seq,
        b"x-opt-offset": str(draw(st.integers(0, 2**40))).encode(),
    }
    if draw(st.booleans()):
        annotations[b"x-opt-enqueued-time"] = draw(st.integers(1, 4_000_000_000_000))
    if draw(st.booleans()):
        annotations[b"x-opt-partition-key"] = draw(text)
    if draw(st.booleans()):
        annotations[b"iothub-connection-device-id"] = draw(text).encode()
    annotations.update(draw(st.dictionaries(st.binary(min_size=1, max_size=6), scalar, max_size=3)))
    props = None
    if draw(st.booleans()):
        props = Properties(
            message_id=draw(message_ids),
            user_id=draw(st.one_of(st.none(), st.binary(max_size=6))),
            to=draw(st.one_of(st.none(), text)),
            subject=draw(st.one_of(st.none(), text)),
            reply_to=draw(st.one_of(st.none(), text)),
            correlation_id=draw(message_ids),
            content_type=draw(st.one_of(st.none(), st.sampled_from(["text/plain", "application/json"]))),
            group_id=draw(st.one_of(st.none(), text)),
        )
    app = draw(
        st.one_of(st.none(), st.dictionaries(st.one_of(text, st.binary(max_size=6)), scalar, max_size=3))
    )
    body = draw(
        st.one_of(
            st.builds(lambda b: {"data": [b]}, st.binary(max_size=64)),
            st.builds(lambda a, b: {"data": [a, b]}, st.binary(max_size=8), st.binary(max_size=8)),
            st.builds(lambda v: {"value": v}, st.one_of(text, st.integers(), st.binary(max_size=8))),
            st.builds(lambda s: {"sequence": [s]}, st.lists(st.integers(0, 9), max_size=3)),
        )
    )
    return Message(message_annotations=annotations, properties=props, application_properties=app, **body)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages(), min_size=1, max_size=6))
def test_packed_events_rebuild_exactly_what_to_record_makes(msgs: list[Message]) -> None:
    events = [EventData._from_message(m) for m in msgs]
    expected: list[EventRecord | DeadLetter] = []
    for event in events:
        try:
            expected.append(to_record(event, "eh1", "$Default", "3"))
        except Exception:
            expected.append(None)  # type: ignore[arg-type]  # unreadable: compared as a dead letter below
    items = roundtrip(pack_events(events, "eh1", "$Default", "3"))
    assert len(items) == len(events)
    records, dead = unpack_events(items, "eh1", "$Default", "3")
    assert records == [e for e in expected if e is not None]
    assert len(dead) == expected.count(None)  # type: ignore[arg-type]


def test_the_usual_event_takes_the_fast_path_and_other_bodies_do_not() -> None:
    usual = EventData._from_message(
        Message(
            message_annotations={b"x-opt-sequence-number": 7, b"x-opt-offset": b"700"},
            properties=Properties(message_id=uuid.UUID(int=5)),
            data=[b"1 1 0.1"],
        )
    )
    value_body = EventData._from_message(
        Message(message_annotations={b"x-opt-sequence-number": 8, b"x-opt-offset": b"800"}, value="x")
    )
    fast, slow = pack_events([usual, value_body], "eh1", "cg", "0")
    assert type(fast) is tuple and fast[3] == b"1 1 0.1"
    assert isinstance(slow, EventRecord) and slow.body == b"x" and slow.sequence_number == 8


def test_an_event_without_sequence_number_becomes_a_dead_letter_with_its_bytes() -> None:
    broken = EventData._from_message(Message(message_annotations={b"x-opt-offset": b"1"}, data=[b"raw"]))
    records, dead = unpack_events(pack_events([broken], "eh1", "cg", "2"), "eh1", "cg", "2")
    assert records == []
    assert len(dead) == 1 and dead[0].raw == b"raw" and dead[0].partition_id == "2"
    assert "unreadable event" in dead[0].reason


def test_plain_batches_travel_in_marshal_and_anything_else_in_pickle() -> None:
    plain = EventData._from_message(
        Message(
            message_annotations={b"x-opt-sequence-number": 7, b"x-opt-offset": b"700"},
            properties=Properties(message_id=b"m-7"),
            data=[b"1 1 0.1"],
        )
    )
    with_uuid = EventData._from_message(
        Message(
            message_annotations={b"x-opt-sequence-number": 8, b"x-opt-offset": b"800"},
            properties=Properties(message_id=uuid.UUID(int=5)),
            data=[b"1 2 0.1"],
        )
    )
    for events, kind in (([plain], b"M"), ([plain, with_uuid], b"P")):
        message = ("batch", 1, "eh1", "cg", "0", pack_events(events, "eh1", "cg", "0"))
        frame = _frame(message)
        assert frame[4:5] == kind
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4
        decoded = _unframe(frame[4:])
        assert decoded == message
        records, dead = unpack_events(decoded[5], "eh1", "cg", "0")
        assert not dead and records == [to_record(e, "eh1", "cg", "0") for e in events]


# -- route_packed ------------------------------------------------------------------------------------------

WHERE = ("eh1", "$Default", "3")

bodies = st.one_of(
    st.builds(lambda u, c: seed_line(u, c).encode(), st.integers(1, 200), st.integers(1, 400)),
    st.builds(
        lambda u, c: f'{{"unit #": {u}, "cycle #": {c}, "sensor 2": 641.5}}'.encode(),
        st.integers(1, 9),
        st.integers(1, 9),
    ),
    st.binary(max_size=24),
    st.just(b"\xff\xfe not utf-8"),
    st.just(b""),
)


@st.composite
def plain_messages(draw: st.DrawFn) -> Message:
    """What the load generators and most devices send: the service's four annotations, maybe a message
    id (text) and content type, one data section."""
    annotations: dict[bytes, object] = {
        b"x-opt-sequence-number": draw(st.integers(0, 2**40)),
        b"x-opt-offset": str(draw(st.integers(0, 2**40))).encode(),
    }
    if draw(st.booleans()):
        annotations[b"x-opt-enqueued-time"] = draw(st.integers(1, 4_000_000_000_000))
    if draw(st.booleans()):
        annotations[b"x-opt-partition-key"] = draw(st.text(max_size=6))
    props = None
    if draw(st.booleans()):
        props = Properties(
            message_id=draw(st.one_of(st.none(), st.text(max_size=12))),
            content_type=draw(st.one_of(st.none(), st.sampled_from(["text/plain", "application/json"]))),
        )
    return Message(message_annotations=annotations, properties=props, data=[draw(bodies)])


rule_sets = st.one_of(
    st.builds(lambda f: RuleSet((Rule(format=f),)), st.sampled_from(FORMATS)),
    st.just(RuleSet((Rule(eventhub="eh1"),))),
    st.just(RuleSet((Rule(eventhub="other"),), unmatched="dead-letter")),
    st.just(RuleSet((Rule(table="a", format="seed"), Rule(table="b", format="raw")))),
)


def both_ways(msgs: list[Message], rules: RuleSet) -> tuple[object, object]:
    items = _unframe(_frame(pack_events([EventData._from_message(m) for m in msgs], *WHERE))[4:])
    records, unreadable = unpack_events(items, *WHERE)
    expected = route_batch(records, rules)
    got, got_unreadable = route_packed(items, *WHERE, rules)
    return (got.rows, got.dead_letters, got.unmatched, got_unreadable), (
        expected.rows,
        expected.dead_letters,
        expected.unmatched,
        unreadable,
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(plain_messages(), messages()), min_size=1, max_size=8), rule_sets)
def test_route_packed_gives_exactly_what_unpack_and_route_batch_give(
    msgs: list[Message], rules: RuleSet
) -> None:
    got, expected = both_ways(msgs, rules)
    assert got == expected


def test_plain_events_under_the_default_rules_skip_the_record(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    plain = [
        Message(
            message_annotations={
                b"x-opt-sequence-number": i,
                b"x-opt-offset": str(i).encode(),
                b"x-opt-enqueued-time": 1_700_000_000_000,
            },
            properties=Properties(message_id=f"run-{i}"),
            data=[seed_line(1, 1 + i).encode()],
        )
        for i in range(5)
    ]
    odd = Message(message_annotations={b"x-opt-sequence-number": 9, b"x-opt-offset": b"9"}, data=[b"\xff"])
    got, expected = both_ways([*plain, odd], RuleSet())
    assert got == expected
    rows, dead, _, _ = got
    assert [r.key for r in rows] == [f"mid:run-{i}" for i in range(5)]
    assert len(dead) == 1 and "not UTF-8" in dead[0].reason
    built = []
    real = worker.record_from_packed
    monkeypatch.setattr(worker, "record_from_packed", lambda *a: built.append(a) or real(*a))
    items = pack_events([EventData._from_message(m) for m in [*plain, odd]], *WHERE)
    routed, _ = route_packed(items, *WHERE, RuleSet())
    assert len(routed.rows) == 5
    assert len(built) == 1  # only the event that did not become a row took the general path
    assert (
        worker.catch_all(RuleSet()) is not None and worker.catch_all(RuleSet((Rule(eventhub="x"),))) is None
    )


def test_plain_annotations_are_the_consumers_redundant_system_properties() -> None:
    assert worker._PLAIN_ANNOTATIONS == consumer.REDUNDANT_SYSTEM_PROPERTIES
