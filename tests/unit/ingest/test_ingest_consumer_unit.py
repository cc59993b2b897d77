"""The consumer's batch handler and the confirming writer, with the in-memory sink and fake contexts
(no network: the SDK is exercised for real in tests/integration/ingest)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest

from enginehub.ingest.cli import build_parser, main
from enginehub.ingest.consumer import ConsumerOptions, IngestConsumer, to_record
from enginehub.ingest.metrics import Metrics
from enginehub.ingest.model import DEFAULT_TABLE
from enginehub.ingest.rules import load_rules, parse_rules, route_batch
from enginehub.ingest.sinks.memory import MemorySink
from enginehub.ingest.testing import make_event, message_id, seed_line
from enginehub.ingest.writer import ConfirmingWriter


class FakeEvent:
    """Quacks like azure.eventhub.EventData for to_record()."""

    def __init__(
        self, seq: int, body: bytes, mid: str | None = None, device: str | None = "engine-1"
    ) -> None:
        self.sequence_number = seq
        self.offset = str(seq * 10)
        self.enqueued_time = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.body = iter([body])  # DATA body: an iterable of bytes sections
        self.message_id = mid
        self.partition_key = None
        self.content_type = None
        self.properties = {b"fleet": b"A"}
        self.system_properties = {b"iothub-connection-device-id": device.encode()} if device else {}


class FakeContext:
    def __init__(self, pid: str = "0") -> None:
        self.partition_id = pid
        self.eventhub_name = "eh1"
        self.consumer_group = "$Default"
        self.checkpoints: list[int] = []
        self.last_enqueued_event_properties = {"sequence_number": 99}

    async def update_checkpoint(self, event: Any) -> None:
        self.checkpoints.append(event.sequence_number)


def _events(start: int, n: int) -> list[FakeEvent]:
    return [FakeEvent(i, seed_line(1, i + 1).encode(), message_id(1, i + 1)) for i in range(start, start + n)]


def _consumer(sink: MemorySink, rules=None, **opts: Any) -> IngestConsumer:
    options = ConsumerOptions(retry_initial=0.001, retry_max=0.01, **opts)
    return IngestConsumer(lambda **kw: None, None, sink, rules or load_rules(None), options)


def test_to_record_maps_sdk_fields() -> None:
    rec = to_record(FakeEvent(5, b"x", "m-5"), "eh1", "$Default", "2")
    assert (rec.partition_id, rec.sequence_number, rec.offset, rec.body) == ("2", 5, "50", b"x")
    assert (rec.message_id, rec.device_id, rec.identity_key) == ("m-5", "engine-1", "mid:m-5")
    assert rec.properties == {"fleet": "A"}
    assert rec.system_properties == {"iothub-connection-device-id": "engine-1"}


async def test_batch_is_checkpointed_only_after_the_write() -> None:
    sink, ctx = MemorySink(), FakeContext()
    consumer = _consumer(sink)
    await consumer._on_batch(ctx, _events(0, 10))
    assert sink.count(DEFAULT_TABLE) == 10 and ctx.checkpoints == [9]
    assert consumer.metrics.rows_written == 10 and consumer.metrics.partition("0").lag == 90


async def test_sink_outage_blocks_the_partition_without_checkpoint_then_resumes() -> None:
    sink, ctx = MemorySink(), FakeContext()
    consumer = _consumer(sink)
    sink.down = True
    task = asyncio.create_task(consumer._on_batch(ctx, _events(0, 5)))
    for _ in range(200):  # poll until several retries were made
        await asyncio.sleep(0.005)
        if sink.write_calls >= 3:
            break
    assert sink.write_calls >= 3, "no retries observed"
    assert not task.done() and ctx.checkpoints == [] and consumer.metrics.sink_down
    sink.down = False
    await asyncio.wait_for(task, 5)
    assert ctx.checkpoints == [4] and sink.count(DEFAULT_TABLE) == 5 and not consumer.metrics.sink_down


async def test_giving_up_on_shutdown_leaves_the_checkpoint_alone() -> None:
    sink, ctx = MemorySink(), FakeContext()
    consumer = _consumer(sink)
    sink.down = True
    consumer._give_up = True
    await consumer._on_batch(ctx, _events(0, 3))
    assert ctx.checkpoints == [] and sink.count(DEFAULT_TABLE) == 0


async def test_draining_consumer_ignores_new_batches() -> None:
    sink, ctx = MemorySink(), FakeContext()
    consumer = _consumer(sink)
    consumer.request_stop()
    await consumer._on_batch(ctx, _events(0, 3))
    assert sink.write_calls == 0 and ctx.checkpoints == []


async def test_poison_payloads_and_unmatched_events_are_dead_lettered_and_checkpointed() -> None:
    sink, ctx = MemorySink(), FakeContext()
    rules = parse_rules({"rule": [{"device_id": "engine-*"}]})
    consumer = _consumer(sink, rules)
    events = _events(0, 3) + [
        FakeEvent(3, b"not a line"),
        FakeEvent(4, b"\xff"),
        FakeEvent(5, b"x", device="pump"),
    ]
    await consumer._on_batch(ctx, events)
    assert sink.count(DEFAULT_TABLE) == 3
    reasons = sorted((d.sequence_number, d.table) for d in sink.dead_letters)
    assert reasons == [(3, DEFAULT_TABLE), (4, DEFAULT_TABLE), (5, "")]
    assert ctx.checkpoints == [5]
    assert (consumer.metrics.dead_letters, consumer.metrics.unmatched) == (3, 1)


async def test_empty_batches_only_update_lag() -> None:
    sink, ctx = MemorySink(), FakeContext()
    consumer = _consumer(sink)
    await consumer._on_batch(ctx, [])
    assert sink.write_calls == 0 and consumer.metrics.partition("0").last_enqueued == 99


async def test_writer_retries_retryable_rows_then_dead_letters_them() -> None:
    sink = MemorySink()
    rows = route_batch([make_event(i) for i in range(4)], load_rules(None)).rows
    sink.fail_row = lambda row: (
        ("UnavailableShardsException", True)
        if row.sequence_number == 1
        else (("Cannot cast", False) if row.sequence_number == 2 else None)
    )
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    writer = ConfirmingWriter(sink, Metrics(), sleep=sleep, max_row_attempts=3, retry_initial=0.1)
    assert await writer.write(rows) is True
    assert sink.count(DEFAULT_TABLE) == 2
    dls = {d.sequence_number: d.reason for d in sink.dead_letters}
    assert set(dls) == {1, 2}
    assert "after 3 attempts" in dls[1] and dls[2] == "Cannot cast"
    assert sleeps == [0.1, 0.2]  # two retries of row 1, with backoff
    assert writer.metrics.rows_written == 2 and writer.metrics.dead_letters == 2


def test_option_validation() -> None:
    with pytest.raises(ValueError, match="ownership expiry"):
        ConsumerOptions(load_balancing_interval=5, ownership_expiry=5).validate()
    with pytest.raises(ValueError, match="batch size"):
        ConsumerOptions(batch_size=0).validate()


def test_prometheus_text() -> None:
    m = Metrics(events=10, rows_written=8, dead_letters=2)
    m.partition("1").last_enqueued = 20
    m.partition("1").last_sequence = 15
    m.observe_batch(0.02)
    text = m.prometheus()
    assert "enginehub_ingest_rows_written_total 8" in text
    assert 'enginehub_ingest_partition_lag_events{partition="1"} 5' in text
    assert 'enginehub_ingest_batch_seconds_bucket{le="0.025"} 1' in text
    assert "enginehub_ingest_batch_seconds_count 1" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "eventhub-connection-string is required"),
        (
            ["--eventhub-connection-string", "Endpoint=sb://x/;SharedAccessKeyName=a;SharedAccessKey=b"],
            "--eventhub",
        ),
        (["--eventhub-connection-string", "X;EntityPath=e", "--sink", "mysql://x"], "unsupported sink"),
        (
            ["--eventhub-connection-string", "X;EntityPath=e", "--starting-position", "soon"],
            "starting-position",
        ),
        (["--eventhub-connection-string", "X;EntityPath=e", "--checkpoint-container", "c"], "go together"),
        (["--eventhub-connection-string", "X;EntityPath=e", "--rules", "/nonexistent.toml"], "not found"),
        (["--eventhub-connection-string", "X;EntityPath=e", "--ownership-expiry", "1"], "ownership expiry"),
        (["--eventhub-connection-string", "X;EntityPath=e", "--batch-size", "0"], "batch size"),
    ],
)
def test_cli_rejects_bad_arguments_clearly(argv, message, capsys, monkeypatch) -> None:
    monkeypatch.delenv("EVENTHUB_CONNECTION_STRING", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help_documents_the_contract() -> None:
    text = build_parser().format_help()
    for option in (
        "--eventhub-connection-string",
        "--sink",
        "--eventhub",
        "--consumer-group",
        "--checkpoint-store",
        "--checkpoint-container",
        "--checkpoint-dir",
        "--table",
        "--load-balancing-interval",
        "--ownership-expiry",
        "--owner-id",
        "--metrics-port",
        "SIGTERM",
    ):
        assert option in text


async def test_concurrent_partition_batches_share_one_commit_and_each_checkpoints_its_own() -> None:
    sink = MemorySink()
    consumer = _consumer(sink)
    ctx0, ctx1 = FakeContext("0"), FakeContext("1")
    await asyncio.gather(consumer._on_batch(ctx0, _events(0, 4)), consumer._on_batch(ctx1, _events(4, 3)))
    assert sink.write_calls == 1  # group commit
    assert (ctx0.checkpoints, ctx1.checkpoints) == ([3], [6]) and sink.count(DEFAULT_TABLE) == 7


def test_to_record_reads_a_real_sdk_event_data() -> None:
    from azure.eventhub import EventData

    event = EventData(b"hello")
    event.message_id = "m1"
    event.content_type = "text/plain"
    event.correlation_id = "c1"
    event.properties = {b"fleet": b"A"}
    event.raw_amqp_message.annotations = {
        b"x-opt-sequence-number": 5,
        b"x-opt-offset": b"77",
        b"x-opt-enqueued-time": 1700000000000,
        b"x-opt-partition-key": b"pk",
        b"iothub-connection-device-id": b"engine-3",
    }
    rec = to_record(event, "eh1", "$Default", "1")
    assert (rec.sequence_number, rec.offset, rec.body, rec.message_id) == (5, "77", b"hello", "m1")
    assert (rec.device_id, rec.partition_key, rec.content_type) == ("engine-3", "pk", "text/plain")
    assert rec.enqueued_time == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)
    assert rec.properties == {"fleet": "A"}
    assert rec.system_properties == {"iothub-connection-device-id": "engine-3", "correlation-id": "c1"}


async def test_an_unreadable_event_is_dead_lettered_not_fatal() -> None:
    class Broken(FakeEvent):
        @property
        def enqueued_time(self):  # type: ignore[override]
            raise ValueError("bad x-opt-enqueued-time")

        @enqueued_time.setter
        def enqueued_time(self, value) -> None:
            pass

    sink, ctx = MemorySink(), FakeContext()
    consumer = _consumer(sink)
    await consumer._on_batch(ctx, [Broken(0, b"first"), *_events(1, 2), Broken(3, b"raw-bytes")])
    assert sink.count(DEFAULT_TABLE) == 2 and ctx.checkpoints == [3]
    got = sorted((d.sequence_number, d.raw, d.key) for d in sink.dead_letters)
    assert got == [(0, b"first", "seq:0:0"), (3, b"raw-bytes", "seq:0:3")]
    assert all("bad x-opt-enqueued-time" in d.reason for d in sink.dead_letters)


class FakeWorker:
    """Stands in for the sink worker process: records what was sent, lets the test decide each verdict."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, asyncio.Future[bool]]] = []

    def send(self, eventhub: str, consumer_group: str, pid: str, items: list[Any]) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.sent.append((pid, future))
        return future


def _pipelined(depth: int) -> tuple[IngestConsumer, FakeWorker]:
    consumer = _consumer(MemorySink(), pipeline_depth=depth, checkpoint_interval=0)
    worker = FakeWorker()
    consumer.worker = worker  # type: ignore[assignment]
    return consumer, worker


async def test_pipelined_batches_are_checkpointed_in_order_never_past_an_unconfirmed_one() -> None:
    consumer, worker = _pipelined(depth=3)
    ctx = FakeContext()
    for start in (0, 10, 20):  # each handler returns once its batch is sent: three in flight
        await asyncio.wait_for(consumer._on_batch(ctx, _events(start, 10)), 1)
    assert len(worker.sent) == 3 and ctx.checkpoints == []
    worker.sent[2][1].set_result(True)  # the newest is confirmed first: nothing may be checkpointed yet
    worker.sent[1][1].set_result(True)
    await asyncio.sleep(0.01)
    assert ctx.checkpoints == []
    worker.sent[0][1].set_result(False)  # the oldest was not stored (shutdown): no checkpoint past it
    await asyncio.sleep(0.01)
    assert ctx.checkpoints == []
    # a later batch, sent once the failed ones have left the window, is not checkpointed either
    await consumer._on_batch(ctx, _events(30, 10))
    worker.sent[3][1].set_result(True)
    await consumer._wait_window("0")
    assert ctx.checkpoints == []
    assert consumer._inflight == 0 and consumer._idle.is_set()


async def test_pipelined_confirmations_checkpoint_each_batch_in_order() -> None:
    consumer, worker = _pipelined(depth=3)
    ctx = FakeContext()
    for start in (0, 10):
        await consumer._on_batch(ctx, _events(start, 10))
    worker.sent[0][1].set_result(True)
    worker.sent[1][1].set_result(True)
    await consumer._wait_window("0")
    assert ctx.checkpoints == [9, 19]
    assert consumer.metrics.partition("0").last_written == 19 and consumer.metrics.events == 20


async def test_a_full_window_holds_the_partition_until_its_oldest_batch_is_confirmed() -> None:
    consumer, worker = _pipelined(depth=2)
    ctx = FakeContext()
    await consumer._on_batch(ctx, _events(0, 5))
    await consumer._on_batch(ctx, _events(5, 5))
    third = asyncio.create_task(consumer._on_batch(ctx, _events(10, 5)))
    await asyncio.sleep(0.02)
    assert not third.done() and len(worker.sent) == 2  # bounded: the SDK gets no new batch handed out
    worker.sent[0][1].set_result(True)
    await asyncio.wait_for(third, 1)
    assert len(worker.sent) == 3 and ctx.checkpoints == [4]
    for _, future in worker.sent[1:]:
        future.set_result(True)
    await consumer._wait_window("0")
    assert ctx.checkpoints == [4, 9, 14]


async def test_a_partition_the_sdk_stops_calling_is_warned_about_once_until_it_answers_again(caplog) -> None:
    caplog.set_level(logging.INFO, logger="enginehub.ingest.consumer")
    sink, ctx = MemorySink(), FakeContext()
    consumer = _consumer(sink, silence_warning=10.0, batch_wait=0.5)
    await consumer._on_init(ctx)
    await consumer._on_batch(ctx, [])  # an idle partition: the SDK's empty batch every batch_wait
    heard = consumer._heard["0"]
    assert consumer.check_silence(now=heard + 9.9) == []
    assert consumer.check_silence(now=heard + 10.5) == ["0"]
    assert "partition 0: nothing from Event Hubs for 10 s" in caplog.text
    assert consumer.check_silence(now=heard + 60) == []  # once per silence, not every check
    await consumer._on_batch(ctx, [])  # the SDK calls again
    assert "partition 0: Event Hubs answers again" in caplog.text
    again = consumer._heard["0"]
    assert consumer.check_silence(now=again + 5) == []
    assert consumer.check_silence(now=again + 11) == ["0"]  # a new silence is a new warning
    await consumer._on_close(ctx, "SHUTDOWN")
    assert consumer.check_silence(now=again + 100) == []  # a partition no longer owned is not watched


async def test_a_partition_held_by_our_own_handler_is_not_called_silent(caplog) -> None:
    sink, ctx = MemorySink(), FakeContext()
    consumer = _consumer(sink, silence_warning=10.0, batch_wait=0.5)
    await consumer._on_init(ctx)
    sink.down = True  # the handler retries the write: the SDK waits for us, not we for it
    task = asyncio.create_task(consumer._on_batch(ctx, _events(0, 5)))
    for _ in range(200):
        await asyncio.sleep(0.005)
        if sink.write_calls >= 2:
            break
    assert not task.done() and "0" in consumer._busy
    assert consumer.check_silence(now=consumer._heard["0"] + 60) == []
    sink.down = False
    await asyncio.wait_for(task, 5)
    # the handler's return counts as heard: its silence starts now, not at the batch's start
    assert consumer.check_silence(now=consumer._heard["0"] + 9) == []
    assert "nothing from Event Hubs" not in caplog.text


def test_the_silence_limit_is_off_at_zero_and_never_below_three_batch_waits() -> None:
    assert _consumer(MemorySink(), silence_warning=0)._silence_limit() == 0
    assert _consumer(MemorySink(), silence_warning=1.0, batch_wait=2.0)._silence_limit() == 6.0
    assert _consumer(MemorySink(), silence_warning=20.0, batch_wait=2.0)._silence_limit() == 20.0
    with pytest.raises(ValueError, match="silence warning"):
        ConsumerOptions(silence_warning=-1).validate()
