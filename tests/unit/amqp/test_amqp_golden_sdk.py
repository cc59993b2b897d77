"""Golden conformance with the SDK's own AMQP stack (azure-eventhub's private _pyamqp, in TESTS only).

(a) Frames and messages encoded by the SDK decode correctly with our codec.
(b) Frames and messages encoded by us decode with the SDK's positional decoder with ALL fields present.
"""

from __future__ import annotations

import uuid

import pytest

pyamqp = pytest.importorskip("azure.eventhub._pyamqp")
from azure.eventhub._pyamqp import _decode as sdk_decode  # noqa: E402
from azure.eventhub._pyamqp import _encode as sdk_encode  # noqa: E402
from azure.eventhub._pyamqp import performatives as sdk_perf  # noqa: E402
from azure.eventhub._pyamqp.endpoints import Source as SdkSource  # noqa: E402
from azure.eventhub._pyamqp.endpoints import Target as SdkTarget  # noqa: E402
from azure.eventhub._pyamqp.error import AMQPError as SdkError  # noqa: E402
from azure.eventhub._pyamqp.message import BatchMessage as SdkBatch  # noqa: E402
from azure.eventhub._pyamqp.message import Message as SdkMessage  # noqa: E402
from azure.eventhub._pyamqp.message import Properties as SdkProperties  # noqa: E402

from enginehub.harness.amqp.codec import Described, Symbol, Uint  # noqa: E402
from enginehub.harness.amqp.framing import FrameParser, decode_performative, encode_frame  # noqa: E402
from enginehub.harness.amqp.message import decode_message  # noqa: E402
from enginehub.harness.amqp.performatives import (  # noqa: E402
    Accepted,
    Attach,
    Begin,
    Close,
    Detach,
    Disposition,
    End,
    Error,
    Flow,
    Open,
    Rejected,
    SASLMechanisms,
    SASLOutcome,
    Source,
    Target,
    Transfer,
)
from enginehub.harness.eventhubs.message import (  # noqa: E402
    BATCH_MESSAGE_FORMAT,
    delivery_bytes,
    encode_event,
    store_delivery,
)

FILTER = b"apache.org:selector-filter:string"


def full(cls: type, **kw: object) -> object:
    """An SDK performative with every field not given set to None."""
    fields = [f for f in cls._fields if f != "payload"]  # type: ignore[attr-defined]
    extra = {"payload": kw.pop("payload")} if "payload" in kw else {}
    return cls(**{f: kw.get(f) for f in fields}, **extra)


def sdk_frame(frame: object, frame_type: bytes = b"\x00") -> bytes:
    header, body = sdk_encode.encode_frame(frame, frame_type)
    return header + b"\x00\x00" + (bytes(body) if body is not None else b"")  # the SDK adds the channel


def ours(raw: bytes) -> object:
    parser = FrameParser(1 << 24)
    parser.feed(raw)
    frame = parser.next_frame()
    assert frame is not None and parser.buffered == 0
    perf, _ = decode_performative(frame.body)
    return perf


def test_sdk_open_begin_decode() -> None:
    op = ours(
        sdk_frame(
            full(
                sdk_perf.OpenFrame,
                container_id="EHProducer-1",
                hostname="127.0.0.1",
                max_frame_size=1048576,
                channel_max=65535,
                idle_timeout=None,
                properties={b"product": b"azsdk-python-eventhubs", b"version": b"5.15.1"},
            )
        )
    )
    assert isinstance(op, Open)
    assert op.container_id == "EHProducer-1" and op.hostname == "127.0.0.1"
    assert op.max_frame_size == 1048576 and op.channel_max == 65535 and op.idle_time_out is None
    assert op.properties[Symbol("product")] == b"azsdk-python-eventhubs"  # the SDK sends binary
    be = ours(
        sdk_frame(
            full(sdk_perf.BeginFrame, 
                remote_channel=None, next_outgoing_id=0, incoming_window=65536, outgoing_window=65536,
                handle_max=4294967295,
            )
        )
    )  # fmt: skip
    assert isinstance(be, Begin)
    assert (be.remote_channel, be.next_outgoing_id, be.incoming_window, be.handle_max) == (
        None, 0, 65536, 4294967295
    )  # fmt: skip


def test_sdk_consumer_attach_with_filter_and_epoch_decodes() -> None:
    source = SdkSource(
        address=b"amqps://localhost:5672/eh1/ConsumerGroups/$Default/Partitions/0",
        filters={FILTER: (FILTER, "amqp.annotation.x-opt-offset > '-1'")},
    )
    frame = full(
        sdk_perf.AttachFrame,
        name="receiver-link-1",
        handle=3,
        role=True,
        send_settle_mode=0,
        rcv_settle_mode=0,
        source=source,
        target=SdkTarget(address="receiver-link-1"),
        max_message_size=1048576,
        desired_capabilities=[
            b"com.microsoft:georeplication",
            b"com.microsoft:enable-receiver-runtime-metric",
        ],
        properties={b"com.microsoft:epoch": 7, b"com.microsoft:timeout": 0},
    )
    at = ours(sdk_frame(frame))
    assert isinstance(at, Attach)
    assert at.name == "receiver-link-1" and at.handle == 3 and at.role is True
    assert isinstance(at.source, Source) and isinstance(at.target, Target)
    assert at.source.address.endswith("/ConsumerGroups/$Default/Partitions/0")
    (value,) = at.source.filter.values()
    assert isinstance(value, Described) and value.value == "amqp.annotation.x-opt-offset > '-1'"
    assert at.max_message_size == 1048576
    assert "com.microsoft:enable-receiver-runtime-metric" in at.desired_capabilities
    assert at.properties[Symbol("com.microsoft:epoch")] == 7


def test_sdk_transfer_flow_disposition_detach_end_close_decode() -> None:
    raw = sdk_frame(
        full(sdk_perf.TransferFrame, 
            handle=1, delivery_id=5, delivery_tag=b"\x00\x00\x00\x05", message_format=BATCH_MESSAGE_FORMAT,
            settled=False, more=False, payload=b"PAYLOAD",
        )
    )  # fmt: skip
    parser = FrameParser(1 << 20)
    parser.feed(raw)
    frame = parser.next_frame()
    perf, pos = decode_performative(frame.body)
    assert isinstance(perf, Transfer) and perf.message_format == BATCH_MESSAGE_FORMAT
    assert perf.delivery_id == 5 and perf.settled is False and frame.body[pos:] == b"PAYLOAD"
    fl = ours(
        sdk_frame(
            full(sdk_perf.FlowFrame, 
                next_incoming_id=0, incoming_window=65536, next_outgoing_id=0, outgoing_window=65536,
                handle=3, delivery_count=0, link_credit=300,
            )
        )
    )  # fmt: skip
    assert isinstance(fl, Flow) and fl.link_credit == 300 and fl.handle == 3
    di = ours(
        sdk_frame(full(sdk_perf.DispositionFrame, role=True, first=4, last=9, settled=True, state=None))
    )
    assert isinstance(di, Disposition) and (di.first, di.last, di.settled) == (4, 9, True)
    de = ours(
        sdk_frame(
            full(
                sdk_perf.DetachFrame,
                handle=2,
                closed=True,
                error=SdkError(condition=b"amqp:link:stolen", description="x"),
            )
        )
    )
    assert isinstance(de, Detach) and isinstance(de.error, Error) and de.error.condition == "amqp:link:stolen"
    assert isinstance(ours(sdk_frame(full(sdk_perf.EndFrame, error=None))), End)
    assert isinstance(ours(sdk_frame(full(sdk_perf.CloseFrame, error=None))), Close)


@pytest.mark.parametrize(
    "perf,count",
    [
        (Open("eventhubs-emulator", None, 65536, 4999, 240000, None, None, None, None, None), 10),
        (Begin(1, 0, 5000, 0xFFFFFFFF, 0xFFFFFFFF, None, None, None), 8),
        (
            Attach(
                "l", 0, True, 1, 0, Source("amqps://h/eh1/ConsumerGroups/$Default/Partitions/0"),
                Target("t"), None, None, 0, 1048576, None, None, None,
            ),
            14,
        ),
        (Flow(0, 5000, 0, 0xFFFFFFFF, 0, 0, 1000, None, False, False, None), 11),
        (Disposition(True, 1, None, True, Accepted(), None), 6),
        (Detach(0, True, Error(Symbol("amqp:link:stolen"), "stolen", None)), 3),
        (End(None), 1),
        (Close(Error(Symbol("amqp:connection:forced"), "bye", None)), 1),
    ],
)  # fmt: skip
def test_our_performatives_have_all_fields_for_the_sdk(perf: object, count: int) -> None:
    body = perf.encode_amqp()  # type: ignore[attr-defined]
    assert body[:2] == b"\x00\x53" and body[3] in (0xC0, 0xD0)  # small-ulong descriptor, list8/list32
    frame_type, fields = sdk_decode.decode_frame(memoryview(body))
    assert frame_type == perf.CODE  # type: ignore[attr-defined]
    assert len(fields) == count


def test_our_attach_reply_has_non_null_terminus_and_delivery_count() -> None:
    body = Attach(
        "l", 0, True, 1, 0, Source("src"), Target("tgt"), None, None, 0, 1048576, None, None, None
    ).encode_amqp()
    _, fields = sdk_decode.decode_frame(memoryview(body))
    assert fields[5] is not None and fields[6] is not None and fields[9] == 0 and fields[10] == 1048576


def test_rejected_error_has_three_fields_for_the_sdk() -> None:
    body = Disposition(
        True, 3, None, True, Rejected(Error(Symbol("amqp:link:message-size-exceeded"), "too big", None)), None
    ).encode_amqp()
    _, fields = sdk_decode.decode_frame(memoryview(body))
    error = fields[4]["rejected"][0]  # what client.py::_on_send_complete indexes: error_info[0][2]
    assert len(error) == 3 and error[0] == b"amqp:link:message-size-exceeded" and error[2] is None


def test_sasl_frames_decode_in_the_sdk() -> None:
    raw = encode_frame(0, SASLMechanisms([Symbol("ANONYMOUS"), Symbol("PLAIN")]).encode_amqp(), 1)
    frame_type, fields = sdk_decode.decode_frame(memoryview(raw[8:]))
    assert frame_type == 0x40 and b"ANONYMOUS" in fields[0]
    frame_type, fields = sdk_decode.decode_frame(memoryview(SASLOutcome(0, None).encode_amqp()))
    assert frame_type == 0x44 and fields[0] == 0 and len(fields) == 2


def _sdk_message_bytes(msg: object) -> bytes:
    out = bytearray()
    sdk_encode.encode_payload(out, msg)
    return bytes(out)


def test_sdk_message_decodes_with_our_codec() -> None:
    msg = SdkMessage(
        data=[b"hello"],
        properties=SdkProperties(message_id=uuid.UUID(int=7), content_type=b"application/json"),
        application_properties={b"unit": 3, b"name": b"x"},
        message_annotations={b"x-opt-partition-key": b"k1", b"user": 1},
    )
    decoded = decode_message(_sdk_message_bytes(msg))
    assert decoded.data == [b"hello"]
    assert decoded.properties.message_id == uuid.UUID(int=7)
    assert decoded.properties.content_type == "application/json"
    assert decoded.application_properties == {"unit": 3, "name": b"x"}  # bytes values go as binary
    assert decoded.message_annotations[Symbol("x-opt-partition-key")] == b"k1"


def test_sdk_batch_is_split_into_events_with_keys() -> None:
    inner = [
        SdkMessage(data=[f"e{i}".encode()], message_annotations={b"x-opt-partition-key": b"pk", b"mine": i})
        for i in range(3)
    ]
    batch = SdkBatch(
        data=[_sdk_message_bytes(m) for m in inner], message_annotations={b"x-opt-partition-key": b"pk"}
    )
    items = store_delivery(_sdk_message_bytes(batch), BATCH_MESSAGE_FORMAT)
    assert [k for _, k in items] == ["pk", "pk", "pk"]
    out = delivery_bytes(items[1][0], 41, 4242, 1_700_000_000_000, items[1][1])
    sdk_msg = sdk_decode.decode_payload(memoryview(out))
    assert sdk_msg.data == [b"e1"] or list(sdk_msg.data) == [b"e1"]
    ann = sdk_msg.message_annotations
    assert ann[b"x-opt-sequence-number"] == 41 and ann[b"x-opt-offset"] == b"4242"
    assert ann[b"x-opt-enqueued-time"] == 1_700_000_000_000 and ann[b"x-opt-partition-key"] == b"pk"
    assert ann[b"mine"] == 1


def test_encode_event_is_readable_by_the_sdk() -> None:
    payload = encode_event(
        b'{"unit": 1}',
        properties={"message_id": "unit-1-cycle-1", "content_type": "application/json"},
        application_properties={"unit": 1},
        annotations={"iothub-connection-device-id": "engine-1"},
    )
    sdk_msg = sdk_decode.decode_payload(memoryview(delivery_bytes(payload, 0, 0, 1, None)))
    assert list(sdk_msg.data) == [b'{"unit": 1}']
    assert sdk_msg.properties.message_id == b"unit-1-cycle-1"
    assert sdk_msg.application_properties == {b"unit": 1}
    assert sdk_msg.message_annotations[b"iothub-connection-device-id"] == b"engine-1"
    assert Uint(0) == 0
