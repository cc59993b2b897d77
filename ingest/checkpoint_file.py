"""A local file checkpoint store implementing the SDK's ``azure.eventhub.aio.CheckpointStore``.

Same semantics as ``BlobCheckpointStore`` (azure-eventhub-checkpointstoreblob-aio), so the SDK's load
balancer behaves identically with either (checked by one conformance suite run against both):

- ownership claims are conditional on the **etag**: a claim carrying the etag it last saw succeeds only if
  the stored ownership still has that etag (blob ``If-Match``); a claim without an etag succeeds only if no
  ownership exists yet (``If-None-Match: *``). A failed claim is left out of the returned list, exactly as
  the blob store drops ``OwnershipLostError``; every successful claim gets a new etag and
  ``last_modified_time`` (a float timestamp, which the SDK's load balancer compares with ``time.time()``);
- checkpoints are unconditional (last writer wins), ``offset`` kept as a string and ``sequence_number``
  as an int;
- names are lower-cased like blob names; the namespace includes the port, so clients connecting as
  ``localhost`` and ``127.0.0.1`` do not share ownership (same as the blob store).

Safe for several processes on one machine: every claim runs its read-compare-write under an exclusive
``fcntl.flock`` on ``<dir>/<namespace>/<hub>/<group>/.lock``, and every file is replaced atomically
(temp file + ``os.replace``), so readers never see a half-written file. A file that does not parse (for
example after a power loss) is treated as absent and logged: for a checkpoint that means re-reading from
the start position (duplicates, which the sinks absorb, never loss).

Layout: ``<dir>/<ns>/<hub>/<group>/ownership/<partition>.json`` and ``.../checkpoint/<partition>.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from azure.eventhub.aio import CheckpointStore

LOG = logging.getLogger(__name__)


def _component(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"checkpoint store: empty or non-string name {name!r}")
    return quote(name.lower(), safe="$-_.:")


class FileCheckpointStore(CheckpointStore):
    """``FileCheckpointStore(directory)``; the directory is created if missing."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"checkpoint directory {self.directory}: {exc}") from exc
        if not os.access(self.directory, os.W_OK):
            raise ValueError(f"checkpoint directory {self.directory} is not writable")
        self._made: set[Path] = set()  # folders known to exist (created by us)

    # -- paths and files ----------------------------------------------------------------------------------
    def _group_dir(self, namespace: str, eventhub: str, group: str) -> Path:
        return self.directory / _component(namespace) / _component(eventhub) / _component(group)

    @contextlib.contextmanager
    def _locked(self, group_dir: Path) -> Iterator[None]:
        group_dir.mkdir(parents=True, exist_ok=True)
        with open(group_dir / ".lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            LOG.warning("checkpoint store: ignoring unreadable %s (%s)", path, exc)
            return None
        return data if isinstance(data, dict) else None

    def _write(self, path: Path, data: dict[str, Any], durable: bool) -> None:
        """Atomic replace: a temp file private to this process and thread (``.tmp-<pid>-<thread>-<name>``,
        so concurrent writers never share one), then ``os.replace``. Plain ``os`` calls: a checkpoint is
        written per batch, and ``mkstemp`` + ``fdopen`` + ``mkdir`` cost several times the write itself."""
        folder = path.parent
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        tmp = folder / f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}"
        payload = json.dumps(data).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except FileNotFoundError:  # the folder was removed behind our back
            self._made.discard(folder)
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _list(self, namespace: str, eventhub: str, group: str, kind: str) -> list[tuple[str, dict[str, Any]]]:
        folder = self._group_dir(namespace, eventhub, group) / kind
        try:
            names = sorted(os.listdir(folder))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            data = self._read(folder / name)
            if data is not None and "partition_id" in data:
                out.append((str(data["partition_id"]), data))
        return out

    # -- CheckpointStore ----------------------------------------------------------------------------------
    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        items = await asyncio.to_thread(
            self._list, fully_qualified_namespace, eventhub_name, consumer_group, "ownership"
        )
        return [
            {
                "fully_qualified_namespace": fully_qualified_namespace,
                "eventhub_name": eventhub_name,
                "consumer_group": consumer_group,
                "partition_id": pid,
                "owner_id": data.get("owner_id", ""),
                "etag": data.get("etag"),
                "last_modified_time": data.get("last_modified_time"),
            }
            for pid, data in items
        ]

    def _claim_sync(self, ownership_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
        claimed = []
        groups: dict[Path, list[dict[str, Any]]] = {}
        for o in ownership_list:
            key = self._group_dir(o["fully_qualified_namespace"], o["eventhub_name"], o["consumer_group"])
            groups.setdefault(key, []).append(o)
        for group_dir, items in groups.items():
            with self._locked(group_dir):
                for o in items:
                    path = group_dir / "ownership" / f"{_component(str(o['partition_id']))}.json"
                    current = self._read(path)
                    etag = o.get("etag")
                    if (current is None and etag) or (current is not None and current.get("etag") != etag):
                        LOG.info(
                            "owner %r lost the claim on partition %r (etag %r, stored %r)",
                            o.get("owner_id"),
                            o["partition_id"],
                            etag,
                            current.get("etag") if current else None,
                        )
                        continue
                    updated = dict(o)
                    updated["etag"] = uuid.uuid4().hex
                    updated["last_modified_time"] = time.time()
                    self._write(
                        path,
                        {
                            "partition_id": str(o["partition_id"]),
                            "owner_id": o.get("owner_id", ""),
                            "etag": updated["etag"],
                            "last_modified_time": updated["last_modified_time"],
                        },
                        durable=True,
                    )
                    claimed.append(updated)
        return claimed

    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        return await asyncio.to_thread(self._claim_sync, [dict(o) for o in ownership_list])

    def _update_checkpoint_sync(self, checkpoint: dict[str, Any]) -> None:
        group_dir = self._group_dir(
            checkpoint["fully_qualified_namespace"], checkpoint["eventhub_name"], checkpoint["consumer_group"]
        )
        path = group_dir / "checkpoint" / f"{_component(str(checkpoint['partition_id']))}.json"
        data = {
            "partition_id": str(checkpoint["partition_id"]),
            "offset": str(checkpoint["offset"]),
            "sequence_number": int(checkpoint["sequence_number"]),  # type: ignore[arg-type]
        }
        self._write(path, data, durable=False)

    async def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        # Inline, not in a thread: a checkpoint is one small non-durable file replaced in the page cache
        # (tens of microseconds), cheaper than the thread hop, and it is written once per batch.
        self._update_checkpoint_sync(dict(checkpoint))

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        items = await asyncio.to_thread(
            self._list, fully_qualified_namespace, eventhub_name, consumer_group, "checkpoint"
        )
        return [
            {
                "fully_qualified_namespace": fully_qualified_namespace,
                "eventhub_name": eventhub_name,
                "consumer_group": consumer_group,
                "partition_id": pid,
                "offset": str(data.get("offset")),
                "sequence_number": int(data.get("sequence_number", -1)),
            }
            for pid, data in items
            if data.get("offset") is not None
        ]

    async def close(self) -> None:
        """Nothing to release (files are opened per operation)."""
