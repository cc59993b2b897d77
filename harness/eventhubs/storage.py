"""Partition logs: the record format and the two log backends (memory and segment files).

A partition is an append-only log of records. The byte layout of one record is the same in memory
and on disk, so offsets (byte positions of records, the service's ``x-opt-offset``) are identical for
both backends::

    record  = frame body
    frame   = body_length:u32le  crc32(body):u32le
    body    = sequence_number:i64le  enqueued_time_ms:i64le  key_length:i32le  flags:u8  key  payload

``key_length`` is -1 for "no partition key"; the key is UTF-8. ``flags`` bit 0 marks the last record
of an appended batch: on open, a file log keeps only whole batches (a batch interrupted by a crash
is dropped as a whole, never served in part).

File layout (``FileLog``): one directory per partition holding segment files named
``<first sequence number:020d>-<first offset:020d>.log``. Only the newest segment is written; it
is sealed (a new one started) once it reaches ``segment_bytes``. Retention deletes whole sealed
segments, so trimming is cheap and moves ``begin_sequence_number`` to the first record of the oldest
segment kept. An empty segment file still records where the next record goes, so a partition whose
events all expired keeps its sequence numbers and offsets across restarts.

Memory per stored event in a file log: two ``array('q')`` entries (offset and enqueued time), 16
bytes; payloads are read back from the files with ``os.pread``.
"""

from __future__ import annotations

import logging
import re
import struct
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

FRAME = struct.Struct("<II")
META = struct.Struct("<qqiB")
HEADER_SIZE = FRAME.size + META.size  # 29 bytes of overhead per record
FLAG_BATCH_END = 0x01
MAX_BODY = 0xFFFF_FFFF
SEGMENT_RE = re.compile(r"^(\d{20})-(\d{20})\.log$")
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
READ_CHUNK = 1 << 20


class StorageError(Exception):
    """A partition log cannot be opened or written (corruption outside the tail, bad layout, I/O)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as stored in a partition."""

    sequence_number: int
    offset: int  # byte position of the record in the partition log; x-opt-offset is str(offset)
    enqueued_time_ms: int  # UTC epoch milliseconds, assigned by append()
    partition_key: str | None
    payload: bytes  # opaque to the store (an encoded AMQP message)


def record_size(payload_len: int, key: bytes | None) -> int:
    """Bytes one record takes in the log."""
    return HEADER_SIZE + (len(key) if key is not None else 0) + payload_len


def encode_record(
    sequence_number: int, enqueued_time_ms: int, key: bytes | None, payload: bytes, flags: int
) -> bytes:
    """Encode one record (frame + body); ``key`` is the UTF-8 partition key or None."""
    if key is None:
        body = META.pack(sequence_number, enqueued_time_ms, -1, flags) + payload
    else:
        body = META.pack(sequence_number, enqueued_time_ms, len(key), flags) + key + payload
    if len(body) > MAX_BODY:
        raise StorageError(f"record of {len(body)} bytes is larger than the log format allows")
    return FRAME.pack(len(body), zlib.crc32(body)) + body


class RecordError(Exception):
    """A record does not decode: truncated, bad checksum or inconsistent lengths."""


def decode_record(buf: bytes | memoryview, pos: int) -> tuple[int, int, int, str | None, bytes, int]:
    """Decode the record at ``pos``: (seq, time_ms, flags, key, payload, end position).

    Raises RecordError when the bytes from ``pos`` do not hold a whole, intact record.
    """
    if len(buf) - pos < HEADER_SIZE:
        raise RecordError(f"truncated header at {pos}")
    body_len, crc = FRAME.unpack_from(buf, pos)
    start = pos + FRAME.size
    end = start + body_len
    if body_len < META.size or end > len(buf):
        raise RecordError(f"truncated record at {pos} (body {body_len} bytes)")
    if zlib.crc32(buf[start:end]) != crc:
        raise RecordError(f"checksum mismatch at {pos}")
    seq, time_ms, key_len, flags = META.unpack_from(buf, start)
    kstart = start + META.size
    if key_len < 0:
        key = None
        pstart = kstart
    else:
        pstart = kstart + key_len
        if pstart > end:
            raise RecordError(f"key length {key_len} exceeds record at {pos}")
        try:
            key = bytes(buf[kstart:pstart]).decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError(f"partition key is not UTF-8 at {pos}")
    return seq, time_ms, flags, key, bytes(buf[pstart:end]), end


def _encode_key(key: str | None) -> bytes | None:
    if key is None:
        return None
    if not isinstance(key, str):
        raise TypeError(f"partition_key must be str or None, not {type(key).__name__}")
    return key.encode("utf-8")


class _IndexedLog:
    """Shared part of both backends: compact offset/time index and the position of the tail.

    ``_offsets[i]`` and ``_times[i]`` belong to sequence number ``begin_seq + i``. Enqueued times
    are kept non-decreasing (a clock step back reuses the previous time) so time lookups bisect.
    """

    def __init__(self) -> None:
        self.begin_seq = 0
        self.next_seq = 0
        self.next_offset = 0
        self._offsets = array("q")
        self._times = array("q")

    # -- properties the partition exposes -------------------------------------------------
    @property
    def last_offset(self) -> int:
        return self._offsets[-1] if self._offsets else -1

    @property
    def last_time_ms(self) -> int:
        return self._times[-1] if self._times else 0

    def __len__(self) -> int:
        return len(self._offsets)

    # -- lookups ----------------------------------------------------------------------------
    def seq_at_offset(self, offset: int, inclusive: bool) -> int:
        if inclusive:
            i = bisect_left(self._offsets, offset)
        else:
            i = bisect_right(self._offsets, offset)
        return self.begin_seq + i

    def seq_at_time(self, time_ms: int, inclusive: bool) -> int:
        if inclusive:
            i = bisect_left(self._times, time_ms)
        else:
            i = bisect_right(self._times, time_ms)
        return self.begin_seq + i

    def _encode_batch(
        self, items: Sequence[tuple[bytes, str | None]], now_ms: int
    ) -> tuple[list[StoredEvent], list[bytes]]:
        """Frame a batch at the tail without changing state; returns (events, record bytes)."""
        time_ms = now_ms if now_ms > self.last_time_ms else self.last_time_ms
        seq = self.next_seq
        offset = self.next_offset
        events: list[StoredEvent] = []
        records: list[bytes] = []
        last = len(items) - 1
        for i, (payload, key) in enumerate(items):
            if not isinstance(payload, bytes | bytearray | memoryview):
                raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
            payload = bytes(payload)
            rec = encode_record(seq, time_ms, _encode_key(key), payload, FLAG_BATCH_END if i == last else 0)
            records.append(rec)
            events.append(StoredEvent(seq, offset, time_ms, key, payload))
            seq += 1
            offset += len(rec)
        return events, records

    def _commit_index(self, events: list[StoredEvent], end_offset: int) -> None:
        self._offsets.extend([e.offset for e in events])
        self._times.extend([e.enqueued_time_ms for e in events])
        self.next_seq += len(events)
        self.next_offset = end_offset

    def _drop_index_prefix(self, count: int) -> None:
        if count <= 0:
            return
        del self._offsets[:count]
        del self._times[:count]
        self.begin_seq += count


class MemoryLog(_IndexedLog):
    """A partition log kept in memory (no data dir). Offsets are computed as if written to a file."""

    def __init__(self) -> None:
        super().__init__()
        self._events: list[StoredEvent] = []

    def append(self, items: Sequence[tuple[bytes, str | None]], now_ms: int) -> list[StoredEvent]:
        events, records = self._encode_batch(items, now_ms)
        if not events:
            return events
        end = events[-1].offset + len(records[-1])
        self._events.extend(events)
        self._commit_index(events, end)
        return events

    def read(self, from_seq: int, max_count: int) -> list[StoredEvent]:
        i = from_seq - self.begin_seq
        if i < 0:
            i = 0
        if max_count <= 0:
            return []
        return self._events[i : i + max_count]

    def trim_before(self, cutoff_ms: int) -> int:
        """Drop events enqueued before ``cutoff_ms``; returns how many were dropped."""
        n = bisect_left(self._times, cutoff_ms)
        if n:
            del self._events[:n]
            self._drop_index_prefix(n)
        return n

    def close(self) -> None:
        pass
