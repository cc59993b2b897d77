"""Conformance suite for partitions, run over both log backends (memory and segment files)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.state import EventHubsStore, Partition, StoredEvent
from enginehub.harness.eventhubs.storage import HEADER_SIZE


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


BACKENDS = ["memory", "file"]


@pytest.fixture(params=BACKENDS)
def make_store(request, tmp_path: Path):
    stores: list[EventHubsStore] = []

    def make(clock=None, **options) -> EventHubsStore:
        config = EmulatorConfig.simple(hubs=["eh1"], partitions=options.pop("partitions", 2), **options)
        data_dir = tmp_path / "data" if request.param == "file" else None
        store = EventHubsStore(config, data_dir=data_dir, clock=clock or FakeClock())
        stores.append(store)
        return store

    make.backend = request.param
    yield make
    for s in stores:
        s.close()


def part(store: EventHubsStore, pid: str = "0") -> Partition:
    return store.hub("eh1").partitions[pid]


def test_fresh_partition_is_empty(make_store) -> None:
    p = part(make_store())
    assert (p.begin_sequence_number, p.last_sequence_number, p.last_offset, p.last_enqueued_time_ms) == (
        0,
        -1,
        -1,
        0,
    )
    assert p.is_empty
    assert p.read(0, 10) == []
    assert p.sequence_at_offset(-1, False) == 0
    assert p.sequence_at_time(0, True) == 0


def test_append_assigns_seq_offset_time(make_store) -> None:
    clock = FakeClock(1000.5)
    p = part(make_store(clock))
    events = p.append([(b"a", None), (b"bb", "k1")])
    assert [e.sequence_number for e in events] == [0, 1]
    assert events[0].offset == 0
    assert events[1].offset == HEADER_SIZE + 1  # byte position: record 0 is header + 1 payload byte
    assert all(e.enqueued_time_ms == 1_000_500 for e in events)
    assert events[1].partition_key == "k1" and events[0].partition_key is None
    clock.now += 1
    more = p.append([(b"ccc", "\u00e9t\u00e9")])
    assert more[0].sequence_number == 2
    assert more[0].offset == events[1].offset + HEADER_SIZE + 2 + 2
    assert p.last_sequence_number == 2 and p.last_offset == more[0].offset
    assert p.last_enqueued_time_ms == 1_001_500
    assert p.read(0, 10) == events + more
    assert isinstance(p.read(0, 1)[0], StoredEvent)


def test_read_windows(make_store) -> None:
    p = part(make_store())
    for i in range(10):
        p.append([(b"x%d" % (i * 3 + j), None) for j in range(3)])
    assert [e.payload for e in p.read(5, 4)] == [b"x5", b"x6", b"x7", b"x8"]
    assert [e.sequence_number for e in p.read(28, 100)] == [28, 29]
    assert p.read(30, 10) == []
    assert p.read(31, 10) == []
    assert p.read(0, 0) == []
    assert len(p.read(0, 1000)) == 30


def test_empty_batch_is_noop(make_store) -> None:
    p = part(make_store())
    assert p.append([]) == []
    assert p.last_sequence_number == -1


def test_bad_payload_type_rejected_and_nothing_stored(make_store) -> None:
    p = part(make_store())
    p.append([(b"ok", None)])
    with pytest.raises(TypeError, match="payload must be bytes"):
        p.append([(b"fine", None), ("not bytes", None)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="partition_key must be str"):
        p.append([(b"fine", 42)])  # type: ignore[list-item]
    assert p.last_sequence_number == 0
    assert [e.payload for e in p.read(0, 10)] == [b"ok"]
    assert p.append([(b"next", None)])[0].sequence_number == 1


def test_enqueued_time_never_goes_back(make_store) -> None:
    clock = FakeClock(2000.0)
    p = part(make_store(clock))
    p.append([(b"a", None)])
    clock.now = 1000.0  # wall clock stepped back
    e = p.append([(b"b", None)])[0]
    assert e.enqueued_time_ms == 2_000_000


@pytest.mark.parametrize("inclusive", [True, False])
def test_offset_filter(make_store, inclusive: bool) -> None:
    p = part(make_store())
    events = p.append([(b"e%d" % i, None) for i in range(5)])
    o2 = events[2].offset
    assert p.sequence_at_offset(o2, inclusive) == (2 if inclusive else 3)
    # An offset between records: first record after it, either way.
    assert p.sequence_at_offset(o2 + 1, inclusive) == 3
    assert p.sequence_at_offset(-1, inclusive) == 0
    assert p.sequence_at_offset(events[-1].offset, inclusive) == (4 if inclusive else 5)
    assert p.sequence_at_offset(10**12, inclusive) == 5


@pytest.mark.parametrize("inclusive", [True, False])
def test_time_filter(make_store, inclusive: bool) -> None:
    clock = FakeClock(100.0)
    p = part(make_store(clock))
    for i in range(4):
        clock.now = 100.0 + i
        p.append([(b"a", None), (b"b", None)])  # two events per second
    # seqs 2,3 at 101000 ms
    assert p.sequence_at_time(101_000, inclusive) == (2 if inclusive else 4)
    assert p.sequence_at_time(100_500, inclusive) == 2
    assert p.sequence_at_time(0, inclusive) == 0
    assert p.sequence_at_time(200_000, inclusive) == 8


def test_partitions_are_independent(make_store) -> None:
    store = make_store()
    store.hub("eh1").partitions["0"].append([(b"a", None)])
    p1 = store.hub("eh1").partitions["1"]
    assert p1.last_sequence_number == -1
    assert p1.append([(b"b", None)])[0].sequence_number == 0


def test_retention_moves_begin(make_store) -> None:
    clock = FakeClock(1000.0)
    store = make_store(clock, retention_seconds=10, segment_bytes=4096)
    p = part(store)
    for i in range(40):
        clock.now = 1000.0 + i
        p.append([(b"y" * 300, None)])  # ~330 bytes a record: about 12 records per 4 KiB segment
    assert p.begin_sequence_number > 0, "retention did not trim anything"
    begin = p.begin_sequence_number
    first = p.read(0, 1)[0]
    assert first.sequence_number == begin  # reading below begin starts at begin
    assert first.enqueued_time_ms >= (1039 - 10) * 1000 - 13_000  # file log trims whole segments only
    assert p.last_sequence_number == 39
    assert p.sequence_at_offset(-1, False) == begin
    assert p.sequence_at_time(0, True) == begin
    # Everything expired: the partition is empty but sequence numbers continue.
    clock.now = 5000.0
    store.trim()
    ev = p.append([(b"z", None)])[0]
    assert ev.sequence_number == 40
    assert p.begin_sequence_number <= 40
    assert p.last_sequence_number == 40


async def test_wait_for_wakes_on_append(make_store) -> None:
    p = part(make_store())
    assert await p.wait_for(0, 0) is False
    waiter = asyncio.create_task(p.wait_for(1, 5.0))
    await asyncio.sleep(0)
    p.append([(b"a", None)])
    await asyncio.sleep(0)
    assert not waiter.done()
    p.append([(b"b", None)])
    assert await asyncio.wait_for(waiter, 5.0) is True
    assert await p.wait_for(1, 0) is True
    assert await p.wait_for(5, 0.01) is False
    assert p._waiters == []


def test_hub_lookup_and_groups(make_store) -> None:
    store = make_store(consumer_groups=["cg1"])
    hub = store.hub("EH1")
    assert hub is store.hubs["eh1"]
    assert hub.partition_ids == ["0", "1"]
    assert hub.consumer_groups == {"$Default", "cg1"}
    assert hub.has_consumer_group("$default") and hub.has_consumer_group("CG1")
    assert not hub.has_consumer_group("cg2")
    assert hub.max_message_size == 1048576
    assert hub.created_at_ms == 1_700_000_000_000
    with pytest.raises(KeyError):
        store.hub("nope")
    assert store.namespace == "emulatorNs1"


def test_round_robin(make_store) -> None:
    hub = make_store(partitions=3).hub("eh1")
    assert [hub.next_partition() for _ in range(7)] == ["0", "1", "2", "0", "1", "2", "0"]


def test_reset_and_describe(make_store) -> None:
    store = make_store()
    p = part(store)
    p.append([(b"a", None), (b"b", None)])
    snap = store.describe()
    assert snap["namespace"] == "emulatorNs1"
    assert snap["hubs"]["eh1"]["partitions"][0]["last_sequence_number"] == 1
    assert snap["hubs"]["eh1"]["consumer_groups"] == ["$Default"]
    assert store.describe() == snap  # no side effects
    store.reset("eh1")
    assert (p.begin_sequence_number, p.last_sequence_number, p.read(0, 10)) == (0, -1, [])
    assert p.append([(b"c", None)])[0].offset == 0


def test_health_follows_close(make_store) -> None:
    store = make_store()
    assert store.health() == (True, "Service is healthy.")
    store.close()
    store.close()  # idempotent
    assert store.health()[0] is False


async def test_run_retention_loop(make_store) -> None:
    clock = FakeClock(1000.0)
    store = make_store(clock, retention_seconds=10, segment_bytes=4096)
    p = part(store)
    p.append([(b"old", None)])
    clock.now = 2000.0
    task = asyncio.create_task(store.run_retention(interval_s=0.001))
    deadline = asyncio.get_running_loop().time() + 5
    while p.begin_sequence_number == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.001)
    task.cancel()
    assert p.begin_sequence_number == 1, f"retention loop did not trim: {p.describe()}"
    assert p.is_empty and p.last_sequence_number == 0


async def test_run_retention_without_retention_returns(make_store) -> None:
    await asyncio.wait_for(make_store().run_retention(0.001), 1)
