"""Event Hubs emulator state: namespace -> hubs -> partitions (append-only logs) and consumer groups.

All methods run on the emulator's asyncio event-loop thread; nothing here locks. Appends are
synchronous writes: when ``Partition.append`` returns, the batch is in the log (with a data dir, in
the file, so it survives ``kill -9`` of the emulator; add ``fsync`` in the config to survive power loss).

Without a data dir the logs live in memory. With one, each hub gets a directory
(``<data_dir>/<hub name lower-cased>/``) holding ``hub.json`` (creation time) and one directory per
partition with the segment files described in ``storage.py``. A data dir is locked (flock on
``<data_dir>/.lock``) so two emulators never write the same logs.

Limitations (by design):
* Retention: a memory log drops single events; a file log drops whole sealed segments, so an event may
  outlive the retention by up to one segment's worth of appends. Trimming happens on append, on
  ``trim()`` and in ``run_retention()``.
* Once every retained event has expired, ``last_sequence_number`` still reports the last sequence
  number ever assigned, while ``last_offset`` is -1 and ``last_enqueued_time_ms`` is 0.
* Partition counts come from the config: more partitions than on disk start empty; fewer leave the
  extra directories untouched (logged) and unserved.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import logging
import os
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from enginehub.harness.eventhubs.config import EmulatorConfig, HubConfig
from enginehub.harness.eventhubs.storage import FileLog, MemoryLog, StorageError, StoredEvent

LOG = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONSUMER_GROUP", "EventHubsStore", "Hub", "Partition", "StorageError", "StoredEvent"]

DEFAULT_CONSUMER_GROUP = "$Default"


class Partition:
    """One partition: an append-only log plus the waiters of consumers tailing it."""

    def __init__(
        self,
        hub_name: str,
        partition_id: str,
        log: MemoryLog | FileLog,
        clock: Callable[[], float],
        retention_ms: int | None = None,
    ) -> None:
        self.hub_name = hub_name
        self.partition_id = partition_id
        self._log = log
        self._clock = clock
        self._retention_ms = retention_ms
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []

    # -- runtime properties (the $management READ answer) ----------------------------------------
    @property
    def begin_sequence_number(self) -> int:
        """First retained sequence number (0 for a fresh partition; moves with retention)."""
        return self._log.begin_seq

    @property
    def last_sequence_number(self) -> int:
        """Sequence number of the newest event, -1 when nothing was ever stored."""
        return self._log.next_seq - 1

    @property
    def last_offset(self) -> int:
        """Offset of the newest retained event, -1 when empty."""
        return self._log.last_offset

    @property
    def last_enqueued_time_ms(self) -> int:
        """Enqueued time of the newest retained event, 0 when empty."""
        return self._log.last_time_ms

    @property
    def is_empty(self) -> bool:
        return len(self._log) == 0

    # -- data path ---------------------------------------------------------------------------
    def append(self, items: Sequence[tuple[bytes, str | None]]) -> list[StoredEvent]:
        """Append (payload, partition_key) pairs as one atomic batch; returns the stored events."""
        if not items:
            return []
        now_ms = int(self._clock() * 1000)
        events = self._log.append(items, now_ms)
        if self._retention_ms is not None:
            self._log.trim_before(now_ms - self._retention_ms)
        if self._waiters:
            self._wake()
        return events

    def read(self, from_sequence: int, max_count: int) -> list[StoredEvent]:
        """Up to ``max_count`` events from ``from_sequence`` (clamped to the first retained one)."""
        return self._log.read(from_sequence, max_count)

    def sequence_at_offset(self, offset: int, inclusive: bool) -> int:
        """First sequence number to deliver for an offset filter (``>=`` when inclusive, else ``>``).

        Offset -1 gives the first retained event; an offset past the end gives last + 1.
        """
        return self._log.seq_at_offset(offset, inclusive)

    def sequence_at_time(self, enqueued_time_ms: int, inclusive: bool) -> int:
        """First sequence number to deliver for an enqueued-time filter."""
        return self._log.seq_at_time(enqueued_time_ms, inclusive)

    def trim(self, now: float | None = None) -> int:
        """Apply retention now; returns the number of events dropped."""
        if self._retention_ms is None:
            return 0
        now_ms = int((self._clock() if now is None else now) * 1000)
        return self._log.trim_before(now_ms - self._retention_ms)

    async def wait_for(self, sequence_number: int, timeout: float) -> bool:
        """Wait until ``sequence_number`` exists; True when it does, False on timeout."""
        if sequence_number <= self.last_sequence_number:
            return True
        if timeout <= 0:
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (sequence_number, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        finally:
            try:
                self._waiters.remove(entry)
            except ValueError:
                pass

    def _wake(self) -> None:
        last = self.last_sequence_number
        keep = []
        for seq, fut in self._waiters:
            if seq <= last:
                if not fut.done():
                    fut.set_result(True)
            else:
                keep.append((seq, fut))
        self._waiters[:] = keep

    def reset(self) -> None:
        """Drop every event (control plane, tests): as new, sequence numbers restart at 0."""
        self._log.reset()

    def describe(self) -> dict[str, object]:
        """The partition's runtime properties as plain data (no side effects)."""
        return {
            "partition_id": self.partition_id,
            "begin_sequence_number": self.begin_sequence_number,
            "last_sequence_number": self.last_sequence_number,
            "last_offset": self.last_offset,
            "last_enqueued_time_ms": self.last_enqueued_time_ms,
            "is_empty": self.is_empty,
        }

    def close(self) -> None:
        self._log.close()

    def __repr__(self) -> str:
        return (
            f"Partition({self.hub_name}/{self.partition_id}, "
            f"seq {self.begin_sequence_number}..{self.last_sequence_number})"
        )


# -- partition-key hashing ------------------------------------------------------------------------
# Jenkins lookup3 ("hashlittle2") over the key's characters, folded to a signed 16-bit value exactly
# as azure-eventhub's buffered producer does (azure/eventhub/_buffered_producer/_partition_resolver.py,
# MIT), so that buffered and unbuffered Python sends agree on the partition. Never Python's hash().

_M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - c) & _M32
    a ^= _rot(c, 4)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rot(a, 6)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rot(b, 8)
    b = (b + a) & _M32
    a = (a - c) & _M32
    a ^= _rot(c, 16)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rot(a, 19)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rot(b, 4)
    b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    c ^= b
    c = (c - _rot(b, 14)) & _M32
    a ^= c
    a = (a - _rot(c, 11)) & _M32
    b ^= a
    b = (b - _rot(a, 25)) & _M32
    c ^= b
    c = (c - _rot(b, 16)) & _M32
    a ^= c
    a = (a - _rot(c, 4)) & _M32
    b ^= a
    b = (b - _rot(a, 14)) & _M32
    c ^= b
    c = (c - _rot(b, 24)) & _M32
    return a, b, c


def _word(codes: Sequence[int], p: int, n: int) -> int:
    v = 0
    for i in range(n):
        v += codes[p + i] << (8 * i)
    return v


def partition_key_hash(key: str) -> int:
    """The SDK's ``generate_hash_code``: lookup3 of the key folded to a signed 16-bit integer."""
    if not key:
        return 0
    codes = [ord(ch) for ch in key]
    length = len(codes)
    a = b = c = (0xDEADBEEF + length) & _M32
    p = 0
    rest = length
    while rest > 12:
        a = (a + _word(codes, p, 4)) & _M32
        b = (b + _word(codes, p + 4, 4)) & _M32
        c = (c + _word(codes, p + 8, 4)) & _M32
        a, b, c = _mix(a, b, c)
        p += 12
        rest -= 12
    # Tail (1..12 characters); the reference adds words without masking, then masks once.
    if rest > 8:
        c += _word(codes, p + 8, rest - 8)
    if rest > 4:
        b += _word(codes, p + 4, min(rest - 4, 4))
    a += _word(codes, p, min(rest, 4))
    a &= _M32
    b &= _M32
    c &= _M32
    a, b, c = _final(a, b, c)
    value = (c ^ b) & 0xFFFF
    return struct.unpack(">h", struct.pack(">H", value))[0]


class Hub:
    """One event hub: fixed partitions "0".."N-1" and its consumer groups."""

    def __init__(
        self,
        name: str,
        partitions: dict[str, Partition],
        consumer_groups: set[str],
        created_at_ms: int,
        max_message_size: int,
    ) -> None:
        self.name = name
        self.partition_ids = list(partitions)
        self.partitions = partitions
        self.consumer_groups = consumer_groups
        self.consumer_groups.add(DEFAULT_CONSUMER_GROUP)
        self.created_at_ms = created_at_ms
        self.max_message_size = max_message_size
        self._rr = -1
        self._key_cache: Callable[[str], str] = functools.lru_cache(maxsize=65536)(self._key_to_partition)

    def _key_to_partition(self, key: str) -> str:
        return self.partition_ids[abs(partition_key_hash(key) % len(self.partition_ids))]

    def partition_for_key(self, key: str) -> str:
        """Partition id for a partition key: stable across restarts and processes."""
        return self._key_cache(key)

    def next_partition(self) -> str:
        """Round-robin partition id for sends without key or partition id."""
        self._rr = (self._rr + 1) % len(self.partition_ids)
        return self.partition_ids[self._rr]

    def has_consumer_group(self, name: str) -> bool:
        """Consumer-group names compare case-insensitively, like the service."""
        low = name.lower()
        return any(cg.lower() == low for cg in self.consumer_groups)

    def __repr__(self) -> str:
        return f"Hub({self.name}, {len(self.partition_ids)} partitions)"


class EventHubsStore:
    """The emulator's whole state for one namespace."""

    def __init__(
        self,
        config: EmulatorConfig,
        data_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.namespace = config.namespace
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._clock = clock
        self.hubs: dict[str, Hub] = {}
        self._by_lower: dict[str, Hub] = {}
        self._lock_fd = -1
        self.closed = False
        if self.data_dir is not None:
            self._lock_fd = _lock_data_dir(self.data_dir)
        try:
            for hub_config in config.hubs:
                hub = self._open_hub(hub_config)
                self.hubs[hub.name] = hub
                self._by_lower[hub.name.lower()] = hub
        except BaseException:
            self.close()
            raise

    def _open_hub(self, hc: HubConfig) -> Hub:
        retention_ms = (
            None if self.config.retention_seconds is None else int(self.config.retention_seconds * 1000)
        )
        created_at_ms = int(self._clock() * 1000)
        partitions: dict[str, Partition] = {}
        hub_dir = None
        if self.data_dir is not None:
            hub_dir = self.data_dir / hc.name.lower()
            created_at_ms = _load_or_create_hub_meta(hub_dir, hc.name, created_at_ms)
        for i in range(hc.partition_count):
            pid = str(i)
            log: MemoryLog | FileLog
            if hub_dir is None:
                log = MemoryLog()
            else:
                log = FileLog(
                    hub_dir / pid,
                    segment_bytes=self.config.segment_bytes,
                    fsync=self.config.fsync,
                )
            partitions[pid] = Partition(hc.name, pid, log, self._clock, retention_ms)
        if hub_dir is not None:
            _warn_extra_partitions(hub_dir, hc.partition_count)
        return Hub(hc.name, partitions, set(hc.consumer_groups), created_at_ms, self.config.max_message_size)

    def hub(self, name: str) -> Hub:
        """The hub called ``name`` (case-insensitive); KeyError when there is none."""
        try:
            return self._by_lower[name.lower()]
        except KeyError:
            raise KeyError(name) from None

    def trim(self) -> int:
        """Apply retention to every partition now; returns the number of events dropped."""
        return sum(p.trim() for hub in self.hubs.values() for p in hub.partitions.values())

    async def run_retention(self, interval_s: float = 60.0) -> None:
        """Apply retention every ``interval_s`` seconds until cancelled (appends also trim as they go).

        A no-op loop is not started when no retention is configured.
        """
        if self.config.retention_seconds is None:
            return
        while not self.closed:
            await asyncio.sleep(interval_s)
            if self.closed:
                return
            try:
                dropped = self.trim()
            except StorageError:
                LOG.exception("retention trimming failed")
            else:
                if dropped:
                    LOG.info("retention dropped %d events", dropped)

    def reset(self, hub: str | None = None) -> None:
        """Drop every event of one hub (or all hubs); for the control plane and tests."""
        hubs = [self.hub(hub)] if hub is not None else list(self.hubs.values())
        for h in hubs:
            for partition in h.partitions.values():
                partition.reset()

    def describe(self) -> dict[str, object]:
        """A side-effect-free snapshot of namespace, hubs, consumer groups and partition positions."""
        return {
            "namespace": self.namespace,
            "data_dir": str(self.data_dir) if self.data_dir is not None else None,
            "hubs": {
                h.name: {
                    "created_at_ms": h.created_at_ms,
                    "consumer_groups": sorted(h.consumer_groups),
                    "partitions": [h.partitions[pid].describe() for pid in h.partition_ids],
                }
                for h in self.hubs.values()
            },
        }

    def health(self) -> tuple[bool, str]:
        """For ``HealthServer(check=store.health)``: healthy while the store is open."""
        if self.closed:
            return False, "The event store is closed."
        return True, "Service is healthy."

    def close(self) -> None:
        """Close every log file (idempotent)."""
        self.closed = True
        for hub in self.hubs.values():
            for partition in hub.partitions.values():
                partition.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1


def _lock_data_dir(data_dir: Path) -> int:
    """Take an exclusive lock on ``data_dir`` so two emulators never write the same logs.

    The lock is an flock on ``<data_dir>/.lock``: the kernel drops it when the process dies, also on
    ``kill -9``, so a crash never leaves a stale lock behind.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"{data_dir}: cannot use as a data dir: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StorageError(
            f"{data_dir} is in use by another emulator process (its .lock is held); "
            "stop it or use another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _load_or_create_hub_meta(hub_dir: Path, name: str, created_at_ms: int) -> int:
    hub_dir.mkdir(parents=True, exist_ok=True)
    meta = hub_dir / "hub.json"
    if meta.exists():
        try:
            data = json.loads(meta.read_text("utf-8"))
            return int(data["created_at_ms"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{meta} is not a valid hub metadata file: {exc}") from exc
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps({"name": name, "created_at_ms": created_at_ms}), "utf-8")
    os.replace(tmp, meta)
    return created_at_ms


def _warn_extra_partitions(hub_dir: Path, count: int) -> None:
    extra = sorted(
        p.name for p in hub_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) >= count
    )
    if extra:
        LOG.warning(
            "%s holds partitions %s beyond the configured count %d; they are kept but not served",
            hub_dir,
            ",".join(extra),
            count,
        )
