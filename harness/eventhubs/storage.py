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
import mmap
import os
import re
import struct
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
    if key_len < -1:
        raise RecordError(f"bad key length {key_len} at {pos}")
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
        self, items: Sequence[tuple[bytes, str | None]], now_ms: int, encode: bool
    ) -> tuple[list[StoredEvent], list[bytes], list[int], int]:
        """Frame a batch at the tail without changing state: (events, records, offsets, end offset).

        Validates every item before anything is stored; with ``encode=False`` only sizes are computed.
        This is the per-event hot path of the emulator, hence the inlined packing.
        """
        last_time = self._times[-1] if self._times else 0
        time_ms = now_ms if now_ms > last_time else last_time
        seq = self.next_seq
        offset = self.next_offset
        events: list[StoredEvent] = []
        records: list[bytes] = []
        offsets: list[int] = []
        add_event = events.append
        add_record = records.append
        add_offset = offsets.append
        meta_pack = META.pack
        frame_pack = FRAME.pack
        crc32 = zlib.crc32
        last = len(items) - 1
        for i, (payload, key) in enumerate(items):
            if type(payload) is not bytes:
                if not isinstance(payload, bytes | bytearray | memoryview):
                    raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
                payload = bytes(payload)
            if key is None:
                kb = b""
                klen = -1
            elif type(key) is str:
                kb = key.encode("utf-8")
                klen = len(kb)
            else:
                raise TypeError(f"partition_key must be str or None, not {type(key).__name__}")
            body_len = META.size + len(kb) + len(payload)
            if body_len > MAX_BODY:
                raise StorageError(f"record of {body_len} bytes is larger than the log format allows")
            if encode:
                body = meta_pack(seq, time_ms, klen, FLAG_BATCH_END if i == last else 0) + kb + payload
                add_record(frame_pack(body_len, crc32(body)) + body)
            add_event(StoredEvent(seq, offset, time_ms, key, payload))
            add_offset(offset)
            seq += 1
            offset += FRAME.size + body_len
        return events, records, offsets, offset

    def _commit_index(self, offsets: list[int], time_ms: int, end_offset: int) -> None:
        n = len(offsets)
        self._offsets.extend(offsets)
        self._times.extend(array("q", [time_ms]) * n)
        self.next_seq += n
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
        events, _, offsets, end = self._encode_batch(items, now_ms, encode=False)
        if not events:
            return events
        self._events.extend(events)
        self._commit_index(offsets, events[0].enqueued_time_ms, end)
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

    def reset(self) -> None:
        """Forget every event; sequence numbers and offsets start again at 0."""
        _IndexedLog.__init__(self)
        self._events = []

    def close(self) -> None:
        pass


class _Segment:
    """One segment file: ``count`` records from ``base_seq``/``base_offset``, ``size`` bytes."""

    __slots__ = ("base_offset", "base_seq", "count", "fd", "last_time_ms", "path", "size")

    def __init__(self, path: Path, base_seq: int, base_offset: int, fd: int) -> None:
        self.path = path
        self.base_seq = base_seq
        self.base_offset = base_offset
        self.fd = fd
        self.size = 0
        self.count = 0
        self.last_time_ms = 0

    @property
    def end_offset(self) -> int:
        return self.base_offset + self.size


def segment_name(base_seq: int, base_offset: int) -> str:
    return f"{base_seq:020d}-{base_offset:020d}.log"


class FileLog(_IndexedLog):
    """A partition log in segment files under ``directory`` (see the module docstring).

    Opening scans every segment: record framing and checksums are verified, sequence numbers must
    be contiguous. A bad or incomplete tail of the newest segment (a crash mid-write) is truncated
    to the last whole batch and logged; damage anywhere else raises StorageError (never served).
    """

    def __init__(
        self,
        directory: Path,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = False,
        max_read_bytes: int = 4 * READ_CHUNK,
    ) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.max_read_bytes = max_read_bytes
        self._segments: list[_Segment] = []
        self._seg_starts: list[int] = []  # base_offset of each segment, for bisect
        self.truncated_bytes = 0  # bytes dropped from a torn tail on open
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- open / recovery ---------------------------------------------------------------------
    def _open(self) -> None:
        found: list[tuple[int, int, Path]] = []
        for entry in self.directory.iterdir():
            m = SEGMENT_RE.match(entry.name)
            if m:
                found.append((int(m.group(2)), int(m.group(1)), entry))
            elif entry.name.endswith(".log"):
                raise StorageError(f"{entry}: unexpected file name in a partition log directory")
        found.sort()
        if not found:
            self._new_segment(0, 0)
            return
        # The tail is the newest segment holding data: only it may end in a torn batch. Segments after
        # it are empty (a roll that happened just before a crash).
        last_data = max((n for n, (_, _, path) in enumerate(found) if path.stat().st_size), default=0)
        for n, (base_offset, base_seq, path) in enumerate(found):
            if n and (base_seq != self.next_seq or base_offset != self.next_offset):
                if n > last_data and self.truncated_bytes:
                    # An empty segment started after the batches that the tail lost (a power loss
                    # without fsync): it points past the end, so it goes too.
                    LOG.warning("%s: removing an empty segment past the truncated tail", path)
                    path.unlink()
                    continue
                raise StorageError(
                    f"{path}: segment starts at seq {base_seq} offset {base_offset} but the previous one "
                    f"ends at seq {self.next_seq} offset {self.next_offset} (a segment is missing or damaged)"
                )
            if n == 0:
                self.begin_seq = self.next_seq = base_seq
                self.next_offset = base_offset
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
            seg = _Segment(path, base_seq, base_offset, fd)
            self._segments.append(seg)
            self._seg_starts.append(base_offset)
            self._scan(seg, n >= last_data)

    def _scan(self, seg: _Segment, last: bool) -> None:
        """Index the records of ``seg``; truncate a torn tail when it is the newest segment."""
        size = os.fstat(seg.fd).st_size
        offsets = array("q")
        times = array("q")
        pos = good = good_count = good_time = 0
        error = ""
        if size:
            # mmap, not read(): the pages are dropped again when unmapped, so opening a large log
            # does not leave its size behind in the resident memory.
            with mmap.mmap(seg.fd, size, access=mmap.ACCESS_READ) as data:
                view = memoryview(data)
                try:
                    pos, good, good_count, good_time, error = self._scan_records(
                        data, view, size, seg.base_seq, seg.base_offset, offsets, times
                    )
                finally:
                    view.release()
        if pos == size and good != size and not error:
            error = "the last batch is incomplete"
        if error:
            if not last:
                raise StorageError(f"{seg.path}: {error}; the segment is sealed, refusing to serve it")
            dropped = size - good
            LOG.warning(
                "%s: %s; truncating the torn tail (%d bytes, %d records) at byte %d",
                seg.path,
                error,
                dropped,
                len(offsets) - good_count,
                good,
            )
            os.ftruncate(seg.fd, good)
            self.truncated_bytes += dropped
            del offsets[good_count:]
            del times[good_count:]
        seg.size = good if error else size
        seg.count = len(offsets)
        seg.last_time_ms = good_time if error else (times[-1] if times else 0)
        self._offsets.extend(offsets)
        self._times.extend(times)
        self.next_seq = seg.base_seq + seg.count
        self.next_offset = seg.end_offset

    @staticmethod
    def _scan_records(
        data: mmap.mmap, view: memoryview, size: int, seq: int, base: int, offsets: array, times: array
    ) -> tuple[int, int, int, int, str]:
        """Walk the records; returns (stop position, end of last whole batch, its count, its time, error)."""
        pos = good = good_count = good_time = 0
        unpack_frame = FRAME.unpack_from
        unpack_meta = META.unpack_from
        crc32 = zlib.crc32
        meta_size = META.size
        while pos < size:
            if size - pos < HEADER_SIZE:
                return pos, good, good_count, good_time, f"truncated header at byte {pos}"
            body_len, crc = unpack_frame(data, pos)
            start = pos + 8
            end = start + body_len
            if body_len < meta_size or end > size:
                return pos, good, good_count, good_time, f"truncated record at byte {pos}"
            if crc32(view[start:end]) != crc:
                return pos, good, good_count, good_time, f"checksum mismatch at byte {pos}"
            rseq, time_ms, key_len, flags = unpack_meta(data, start)
            if rseq != seq or not -1 <= key_len <= body_len - meta_size:
                return (
                    pos,
                    good,
                    good_count,
                    good_time,
                    f"record at byte {pos} has sequence {rseq}, expected {seq}",
                )
            offsets.append(base + pos)
            times.append(time_ms)
            seq += 1
            pos = end
            if flags & FLAG_BATCH_END:
                good = pos
                good_count = len(offsets)
                good_time = time_ms
        return pos, good, good_count, good_time, ""

    def _new_segment(self, base_seq: int, base_offset: int) -> _Segment:
        path = self.directory / segment_name(base_seq, base_offset)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        seg = _Segment(path, base_seq, base_offset, fd)
        self._segments.append(seg)
        self._seg_starts.append(base_offset)
        if self.fsync:
            _fsync_dir(self.directory)
        return seg

    # -- data path ---------------------------------------------------------------------------
    def append(self, items: Sequence[tuple[bytes, str | None]], now_ms: int) -> list[StoredEvent]:
        events, records, offsets, end = self._encode_batch(items, now_ms, encode=True)
        if not events:
            return events
        data = b"".join(records)
        seg = self._segments[-1]
        try:
            written = os.write(seg.fd, data)
            while written < len(data):
                written += os.write(seg.fd, data[written:])
            if self.fsync:
                os.fsync(seg.fd)
        except OSError as exc:
            try:
                os.ftruncate(seg.fd, seg.size)
            except OSError:
                LOG.exception("%s: cannot undo a failed append", seg.path)
            raise StorageError(f"{seg.path}: append of {len(events)} events failed: {exc}") from exc
        seg.size += len(data)
        seg.count += len(events)
        seg.last_time_ms = events[-1].enqueued_time_ms
        self._commit_index(offsets, events[0].enqueued_time_ms, end)
        if seg.size >= self.segment_bytes:
            self._new_segment(self.next_seq, self.next_offset)
        return events

    def read(self, from_seq: int, max_count: int) -> list[StoredEvent]:
        i = from_seq - self.begin_seq
        if i < 0:
            i = 0
        n = len(self._offsets)
        if max_count <= 0 or i >= n:
            return []
        j = min(n, i + max_count)
        offsets = self._offsets
        start = offsets[i]
        stop = offsets[j] if j < n else self.next_offset
        if stop - start > self.max_read_bytes:
            # Keep one call's I/O bounded: stop at the last record that ends within the budget.
            j = max(i + 1, bisect_right(offsets, start + self.max_read_bytes, i, j) - 1)
            stop = offsets[j] if j < n else self.next_offset
        out: list[StoredEvent] = []
        k = bisect_right(self._seg_starts, start) - 1
        seq = self.begin_seq + i
        pos = start
        while pos < stop:
            seg = self._segments[k]
            seg_stop = min(stop, seg.end_offset)
            buf = os.pread(seg.fd, seg_stop - pos, pos - seg.base_offset)
            if len(buf) != seg_stop - pos:
                raise StorageError(f"{seg.path}: short read at offset {pos} (file changed underneath?)")
            seq = self._parse(buf, pos, seq, out, seg)
            pos = seg_stop
            k += 1
        return out

    @staticmethod
    def _parse(buf: bytes, base: int, seq: int, out: list[StoredEvent], seg: _Segment) -> int:
        p = 0
        size = len(buf)
        unpack_frame = FRAME.unpack_from
        unpack_meta = META.unpack_from
        crc32 = zlib.crc32
        view = memoryview(buf)
        while p < size:
            body_len, crc = unpack_frame(buf, p)
            start = p + 8
            end = start + body_len
            rseq, time_ms, key_len, _ = unpack_meta(buf, start)
            if rseq != seq or end > size or crc32(view[start:end]) != crc:
                raise StorageError(
                    f"{seg.path}: record at offset {base + p} is damaged; refusing to serve it"
                )
            kstart = start + 21
            if key_len < 0:
                key = None
                pstart = kstart
            else:
                pstart = kstart + key_len
                key = buf[kstart:pstart].decode("utf-8")
            out.append(StoredEvent(seq, base + p, time_ms, key, buf[pstart:end]))
            seq += 1
            p = end
        return seq

    def trim_before(self, cutoff_ms: int) -> int:
        """Delete whole segments whose newest event is older than ``cutoff_ms``; returns events dropped."""
        dropped = 0
        while self._segments:
            seg = self._segments[0]
            if seg.count == 0:
                if len(self._segments) == 1:
                    break
                # An empty leading segment (left by an earlier full expiry) is followed by data.
            elif seg.last_time_ms >= cutoff_ms:
                break
            elif len(self._segments) == 1:
                # Everything expired: start an empty segment that remembers where the next record goes.
                self._new_segment(self.next_seq, self.next_offset)
            self._segments.pop(0)
            self._seg_starts.pop(0)
            os.close(seg.fd)
            seg.fd = -1
            seg.path.unlink(missing_ok=True)
            if seg.count:
                self._drop_index_prefix(seg.count)
                dropped += seg.count
                LOG.debug("%s: retention deleted %d events", seg.path, seg.count)
        return dropped

    def reset(self) -> None:
        """Delete every segment; sequence numbers and offsets start again at 0."""
        self.close()
        for seg in self._segments:
            seg.path.unlink(missing_ok=True)
        self._segments = []
        self._seg_starts = []
        _IndexedLog.__init__(self)
        self._new_segment(0, 0)

    def close(self) -> None:
        for seg in self._segments:
            if seg.fd >= 0:
                try:
                    os.close(seg.fd)
                except OSError:
                    pass
                seg.fd = -1

    @property
    def segment_count(self) -> int:
        return len(self._segments)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
