"""Property tests: the record codec's error contract, memory/file equivalence, crash at any byte."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enginehub.harness.eventhubs.storage import (
    FileLog,
    MemoryLog,
    RecordError,
    decode_record,
    encode_record,
)

keys = st.none() | st.text(max_size=20)
items = st.tuples(st.binary(max_size=300), keys)
batches = st.lists(st.lists(items, min_size=1, max_size=6), min_size=1, max_size=12)


@given(st.binary(max_size=200), st.integers(0, 50))
@settings(max_examples=300, deadline=None)
def test_decode_arbitrary_bytes_only_raises_record_error(data: bytes, pos: int) -> None:
    try:
        seq, time_ms, flags, key, payload, end = decode_record(data, min(pos, len(data)))
    except RecordError:
        return
    assert end <= len(data) and 0 <= flags <= 255 and len(payload) <= len(data)


@given(st.integers(0, 2**62), st.integers(0, 2**62), keys, st.binary(max_size=500), st.integers(0, 255))
@settings(max_examples=200, deadline=None)
def test_record_roundtrip(seq: int, time_ms: int, key: str | None, payload: bytes, flags: int) -> None:
    kb = key.encode() if key is not None else None
    rec = encode_record(seq, time_ms, kb, payload, flags)
    assert decode_record(b"junk" + rec, 4) == (seq, time_ms, flags, key, payload, 4 + len(rec))


@given(batches)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_file_log_equals_memory_log_and_survives_reopen(batch_list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mem = MemoryLog()
        log = FileLog(Path(tmp), segment_bytes=4096)
        for t, batch in enumerate(batch_list):
            assert mem.append(batch, 1000 + t) == log.append(batch, 1000 + t)
        expected = mem.read(0, 10_000)
        assert log.read(0, 10_000) == expected
        log.close()
        again = FileLog(Path(tmp), segment_bytes=4096)
        assert again.read(0, 10_000) == expected
        assert (again.next_seq, again.next_offset) == (mem.next_seq, mem.next_offset)
        again.close()


@given(batches, st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_crash_at_any_byte_keeps_a_prefix_of_whole_batches(batch_list, data) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = FileLog(Path(tmp))
        ends = [0]  # file size after each batch
        for t, batch in enumerate(batch_list):
            log.append(batch, 1000 + t)
            ends.append(log.next_offset)
        expected = log.read(0, 10_000)
        log.close()
        cut = data.draw(st.integers(0, ends[-1]))
        path = next(Path(tmp).glob("*.log"))
        with open(path, "r+b") as f:
            f.truncate(cut)
        again = FileLog(Path(tmp))
        kept = max(e for e in ends if e <= cut)
        assert again.next_offset == kept
        got = again.read(0, 10_000)
        assert got == expected[: len(got)]
        assert again.truncated_bytes == cut - kept
        again.close()
