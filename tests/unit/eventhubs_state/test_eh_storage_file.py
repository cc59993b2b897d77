"""File logs: restart keeps sequence numbers/offsets/content, torn tails are cut, damage is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.state import EventHubsStore
from enginehub.harness.eventhubs.storage import (
    FLAG_BATCH_END,
    HEADER_SIZE,
    FileLog,
    RecordError,
    StorageError,
    decode_record,
    encode_record,
)

T0 = 1_700_000_000_000


def seg_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.log"))


def fill(log: FileLog, batches: int, per_batch: int = 3, size: int = 10) -> None:
    for b in range(batches):
        log.append([(bytes([b % 256]) * size, f"k{i}" if i % 2 else None) for i in range(per_batch)], T0 + b)


def test_record_roundtrip_and_errors() -> None:
    rec = encode_record(7, T0, "clé".encode(), b"payload", FLAG_BATCH_END)
    assert len(rec) == HEADER_SIZE + len("clé".encode()) + 7
    assert decode_record(rec, 0) == (7, T0, FLAG_BATCH_END, "clé", b"payload", len(rec))
    assert decode_record(encode_record(1, 2, None, b"", 0), 0)[3] is None
    with pytest.raises(RecordError, match="truncated header"):
        decode_record(rec[:10], 0)
    with pytest.raises(RecordError, match="truncated record"):
        decode_record(rec[:-1], 0)
    bad = bytearray(rec)
    bad[-1] ^= 0xFF
    with pytest.raises(RecordError, match="checksum mismatch"):
        decode_record(bytes(bad), 0)


def test_restart_preserves_everything(tmp_path: Path) -> None:
    log = FileLog(tmp_path, segment_bytes=4096)
    fill(log, 100)
    before = log.read(0, 1000)
    state = (log.begin_seq, log.next_seq, log.next_offset, log.last_offset, log.last_time_ms)
    assert len(seg_files(tmp_path)) > 1, "the test should span several segments"
    log.close()
    again = FileLog(tmp_path, segment_bytes=4096)
    assert (
        again.begin_seq,
        again.next_seq,
        again.next_offset,
        again.last_offset,
        again.last_time_ms,
    ) == state
    assert again.truncated_bytes == 0
    assert again.read(0, 1000) == before
    nxt = again.append([(b"after", None)], T0 + 999)[0]
    assert (nxt.sequence_number, nxt.offset) == (300, state[2])
    again.close()


def test_reads_cross_segments_and_are_bounded(tmp_path: Path) -> None:
    log = FileLog(tmp_path, segment_bytes=4096, max_read_bytes=1000)
    fill(log, 60, per_batch=2, size=100)
    got = log.read(0, 500)
    assert 0 < len(got) < 120
    assert sum(HEADER_SIZE + len(e.payload) + len(e.partition_key or "") for e in got) <= 1000
    # Paging with the returned counts yields every event exactly once, in order, across segments.
    seen = []
    seq = 0
    while True:
        page = log.read(seq, 500)
        if not page:
            break
        seen.extend(page)
        seq = page[-1].sequence_number + 1
    assert [e.sequence_number for e in seen] == list(range(120))
    assert [e.offset for e in seen] == list(log._offsets)
    log.close()


def test_single_huge_event_is_still_returned(tmp_path: Path) -> None:
    log = FileLog(tmp_path, max_read_bytes=100)
    log.append([(b"x" * 5000, None), (b"y", None)], T0)
    assert [len(e.payload) for e in log.read(0, 10)] == [5000]
    assert [e.payload for e in log.read(1, 10)] == [b"y"]
    log.close()


@pytest.mark.parametrize("cut", [1, 5, HEADER_SIZE, HEADER_SIZE + 3])
def test_torn_tail_cut_mid_record(tmp_path: Path, cut: int, caplog) -> None:
    log = FileLog(tmp_path)
    log.append([(b"a" * 50, None)], T0)
    good_size = log.next_offset
    log.append([(b"b" * 50, "key")], T0)
    log.close()
    path = seg_files(tmp_path)[-1]
    with open(path, "r+b") as f:
        f.truncate(good_size + cut)
    again = FileLog(tmp_path)
    assert again.next_seq == 1 and again.next_offset == good_size
    assert again.truncated_bytes == cut
    assert path.stat().st_size == good_size
    assert [e.payload for e in again.read(0, 10)] == [b"a" * 50]
    assert "truncating the torn tail" in caplog.text
    assert again.append([(b"c", None)], T0)[0].offset == good_size
    again.close()


def test_garbage_tail_is_truncated(tmp_path: Path) -> None:
    log = FileLog(tmp_path)
    log.append([(b"a", None), (b"b", None)], T0)
    size = log.next_offset
    log.close()
    with open(seg_files(tmp_path)[-1], "ab") as f:
        f.write(os.urandom(3) + b"\xff" * 200)
    again = FileLog(tmp_path)
    assert again.next_seq == 2 and again.next_offset == size
    again.close()


def test_bad_checksum_in_tail_record(tmp_path: Path) -> None:
    log = FileLog(tmp_path)
    log.append([(b"a" * 20, None)], T0)
    size = log.next_offset
    log.append([(b"b" * 20, None)], T0)
    log.close()
    path = seg_files(tmp_path)[-1]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # flip a payload bit of the last record
    path.write_bytes(bytes(data))
    again = FileLog(tmp_path)
    assert again.next_seq == 1 and again.next_offset == size
    again.close()


def test_partial_batch_is_dropped_whole(tmp_path: Path) -> None:
    """A batch is atomic: if only some of its records reached the file, none are kept."""
    log = FileLog(tmp_path)
    log.append([(b"first", None)], T0)
    size = log.next_offset
    log.close()
    # Simulate a crash after the first two records of a three-record batch reached the file.
    recs = [encode_record(1 + i, T0, None, b"r%d" % i, FLAG_BATCH_END if i == 2 else 0) for i in range(3)]
    with open(seg_files(tmp_path)[-1], "ab") as f:
        f.write(recs[0] + recs[1])
    again = FileLog(tmp_path)
    assert again.next_seq == 1 and again.next_offset == size
    assert [e.payload for e in again.read(0, 10)] == [b"first"]
    again.close()


def test_damage_in_sealed_segment_is_refused(tmp_path: Path) -> None:
    log = FileLog(tmp_path, segment_bytes=4096)
    fill(log, 100)
    log.close()
    first = seg_files(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[100] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="the segment is sealed, refusing to serve it"):
        FileLog(tmp_path, segment_bytes=4096)


def test_missing_segment_is_refused(tmp_path: Path) -> None:
    log = FileLog(tmp_path, segment_bytes=4096)
    fill(log, 100)
    log.close()
    files = seg_files(tmp_path)
    assert len(files) >= 3
    files[1].unlink()
    with pytest.raises(StorageError, match="a segment is missing or damaged"):
        FileLog(tmp_path, segment_bytes=4096)


def test_damage_found_while_reading_is_refused(tmp_path: Path) -> None:
    log = FileLog(tmp_path)
    log.append([(b"a" * 20, None), (b"b" * 20, None)], T0)
    with open(seg_files(tmp_path)[-1], "r+b") as f:  # bit rot under a running emulator
        f.seek(log.next_offset - 3)
        f.write(b"\x00\x01\x02")
    assert log.read(0, 1)[0].payload == b"a" * 20
    with pytest.raises(StorageError, match="is damaged; refusing to serve it"):
        log.read(1, 1)
    log.close()


def test_unexpected_log_file_name(tmp_path: Path) -> None:
    (tmp_path / "junk.log").write_bytes(b"")
    with pytest.raises(StorageError, match="unexpected file name"):
        FileLog(tmp_path)


def test_retention_restart_keeps_positions(tmp_path: Path) -> None:
    log = FileLog(tmp_path, segment_bytes=4096)
    fill(log, 50)
    end = (log.next_seq, log.next_offset)
    assert log.trim_before(T0 + 10_000) == 150
    assert (log.begin_seq, log.next_seq, log.next_offset) == (150, *end)
    assert log.read(0, 10) == [] and len(log) == 0
    log.close()
    again = FileLog(tmp_path, segment_bytes=4096)
    assert (again.begin_seq, again.next_seq, again.next_offset) == (150, *end)
    ev = again.append([(b"new", None)], T0 + 20_000)[0]
    assert (ev.sequence_number, ev.offset) == end
    fill(again, 50)
    assert again.trim_before(T0 + 20_000 - 1) == 0
    assert again.trim_before(T0 + 20_001) >= 1  # the old empty segment and the expired one go
    again.close()


def test_fsync_option(tmp_path: Path) -> None:
    log = FileLog(tmp_path, fsync=True, segment_bytes=4096)
    fill(log, 40)
    assert log.read(0, 1)[0].sequence_number == 0
    log.close()


def test_store_restart_and_created_at(tmp_path: Path) -> None:
    config = EmulatorConfig.simple(partitions=2, policies={"p": "k"})
    store = EventHubsStore(config, data_dir=tmp_path, clock=lambda: 1000.0)
    store.hub("eh1").partitions["1"].append([(b"x", "k")])
    store.close()
    again = EventHubsStore(config, data_dir=tmp_path, clock=lambda: 5000.0)
    assert again.hub("eh1").created_at_ms == 1_000_000
    p1 = again.hub("eh1").partitions["1"]
    assert p1.last_sequence_number == 0 and p1.read(0, 1)[0].payload == b"x"
    assert p1.last_enqueued_time_ms == 1_000_000
    again.close()


def test_data_dir_is_locked(tmp_path: Path) -> None:
    config = EmulatorConfig.simple(partitions=1)
    store = EventHubsStore(config, data_dir=tmp_path)
    with pytest.raises(StorageError, match="in use by another emulator process"):
        EventHubsStore(config, data_dir=tmp_path)
    store.close()
    EventHubsStore(config, data_dir=tmp_path).close()


def test_fewer_partitions_than_on_disk_warns(tmp_path: Path, caplog) -> None:
    EventHubsStore(EmulatorConfig.simple(partitions=4), data_dir=tmp_path).close()
    EventHubsStore(EmulatorConfig.simple(partitions=2), data_dir=tmp_path).close()
    assert "beyond the configured count 2" in caplog.text


def test_bad_hub_metadata(tmp_path: Path) -> None:
    (tmp_path / "eh1").mkdir()
    (tmp_path / "eh1" / "hub.json").write_text("{not json")
    with pytest.raises(StorageError, match="not a valid hub metadata file"):
        EventHubsStore(EmulatorConfig.simple(partitions=1), data_dir=tmp_path)
    # the failed open released the lock
    (tmp_path / "eh1" / "hub.json").unlink()
    EventHubsStore(EmulatorConfig.simple(partitions=1), data_dir=tmp_path).close()


def test_failed_write_is_undone_and_reported(tmp_path: Path, monkeypatch) -> None:
    import enginehub.harness.eventhubs.storage as storage

    log = FileLog(tmp_path)
    log.append([(b"kept", None)], T0)
    size = log.next_offset
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "write", half_then_enospc)
    with pytest.raises(StorageError, match="append of 2 events failed: .*No space left"):
        log.append([(b"a" * 100, None), (b"b" * 100, None)], T0)
    monkeypatch.setattr(storage.os, "write", real_write)
    assert (log.next_seq, log.next_offset) == (1, size)
    assert seg_files(tmp_path)[-1].stat().st_size == size
    assert log.append([(b"next", None)], T0)[0].sequence_number == 1
    log.close()
    again = FileLog(tmp_path)
    assert [e.payload for e in again.read(0, 10)] == [b"kept", b"next"]
    again.close()


def test_oversized_record_rejected_before_anything_is_written(tmp_path: Path, monkeypatch) -> None:
    import enginehub.harness.eventhubs.storage as storage

    monkeypatch.setattr(storage, "MAX_BODY", 1000)
    log = FileLog(tmp_path)
    with pytest.raises(StorageError, match="larger than the log format allows"):
        log.append([(b"ok", None), (b"x" * 2000, None)], T0)
    assert log.next_seq == 0 and log.next_offset == 0
    assert seg_files(tmp_path)[-1].stat().st_size == 0
    log.close()


def test_torn_tail_before_an_empty_rolled_segment(tmp_path: Path) -> None:
    """Power loss without fsync: the new (empty) segment exists but the end of the previous one is lost."""
    log = FileLog(tmp_path, segment_bytes=4096)
    while log.segment_count < 2:
        log.append([(b"p" * 500, None), (b"q" * 500, None)], T0)
    keep = log._offsets[-2]  # everything before the last batch
    kept_seq = log.next_seq - 2
    log.close()
    full, empty = seg_files(tmp_path)[-2:]
    assert empty.stat().st_size == 0
    base = int(full.name.split("-")[1].split(".")[0])
    with open(full, "r+b") as f:
        f.truncate(keep - base + 7)  # half of the last batch's first record survived
    again = FileLog(tmp_path, segment_bytes=4096)
    assert (again.next_seq, again.next_offset) == (kept_seq, keep)
    assert not empty.exists()
    assert again.append([(b"after", None)], T0)[0].offset == keep
    again.close()
