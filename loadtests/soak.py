"""``python -m enginehub.loadtests soak --duration 600 --json``: the chaos soak of the whole pipeline.

A producer (raw AMQP batches, one partition after the other) and a device fleet (MQTT QoS 1 through the IoT
Hub emulator, routed into the same hub) offer a steady load; ``--consumer-nodes`` ingest processes read it
into one SQLite file. Meanwhile the seeded plan of ``enginehub.loadtests.soakplan`` (``--seed``) is applied
fault by fault: kill -9 and SIGTERM of ingest nodes (each restarted after the fault's hold, as a new
incarnation with its own owner id), a kill -9 and restart of the hub process (the Event Hubs emulator with
its persistent data dir, and the IoT Hub emulator in the same process: ``enginehub.loadtests.soakstack``),
the sink file made unwritable for a while, every device connection dropped, and poison events (payloads
that are not UTF-8). A fault is applied at its planned time, but never before the previous one recovered
(or gave up after ``--recovery-timeout``).

Recovery (``recovery_s``), measured from the moment the fault is lifted (``lifted_at_s``):

- ``kill9`` / ``sigterm``: from the node's restart until every partition is owned by a live incarnation
  and the restarted one owns at least one (read from the file checkpoint store the nodes share);
- ``eventhubs_restart``: from the hub process's restart until the sink holds the first producer batch the
  hub accepted after it (the nodes have reconnected and read new events);
- ``sink_outage``: from the file's restoration until the sink holds the first producer batch accepted
  after it (the backlog held during the outage has been written before it);
- ``device_drop``: from the drop until every device had a message acknowledged again;
- ``poison``: from the send until each poison event accepted is a dead letter.

Invariants, checked after the load and a bounded drain: every id the hub accepted (producer and devices)
is a row (``lost`` 0), no id twice (``duplicates`` 0) and no row that was not sent (``unexpected_rows``),
dead letters exactly for the poison events accepted (none missing, none else), every fault recovered, every
SIGTERMed node exited 0, and every kind of the plan happened. Batches or messages whose send failed
(``unconfirmed``) may or may not be stored; they count neither way. SIGTERM goes to the node's pid, not its
process group.

One JSON line is printed last; the progress goes to stderr. Exit code: 0 every invariant held, 1 one
failed, 2 the stack did not start.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginehub.harness.testing.processes import IngestNode, child_pids, running
from enginehub.loadtests.measure import ProducedLog, analyze
from enginehub.loadtests.soakplan import KINDS, Fault, schedule
from enginehub.loadtests.soakstack import SoakStack
from enginehub.loadtests.stack import IngestSettings, owners, start_node, wait_all_owned

LOG = logging.getLogger(__name__)

TABLE = "enginehub_events"
DEAD_LETTERS = "enginehub_dead_letters"
POISON_BODY = b"\xff\xfe poison, not UTF-8 #"


# ------------------------------------------------------------------------------------------------- load
@dataclass
class AckLog:
    """When each batch was accepted: (monotonic time, last id), in order (one writer thread)."""

    entries: list[tuple[float, str]] = field(default_factory=list)

    def first_after(self, t: float) -> str | None:
        i = bisect.bisect_left(self.entries, t, key=lambda e: e[0])
        return self.entries[i][1] if i < len(self.entries) else None


class Producer(threading.Thread):
    """``rate`` events/s in batches of ``batch``, to partition 0, 1, ... in turn (one RawProducer each)."""

    def __init__(
        self, cs: str, hub: str, partitions: int, rate: float, batch: int, prefix: str, produced: ProducedLog
    ) -> None:
        super().__init__(name="soak-producer", daemon=True)
        from enginehub.loadtests.clients.eventhub import RawProducer
        from enginehub.loadtests.loadrun import bodies

        self.clients = [RawProducer(cs, hub, str(p), timeout=5.0) for p in range(partitions)]
        self.interval = batch / rate
        self.batch = batch
        self.prefix = prefix
        self.produced = produced
        self.acks = AckLog()
        self.bodies = bodies()
        self.stop_event = threading.Event()
        self.failures = 0

    def run(self) -> None:
        from enginehub.loadtests.clients.eventhub import encode_event

        k, nb = 0, len(self.bodies)
        due = time.monotonic()
        while not self.stop_event.is_set():
            client = self.clients[k % len(self.clients)]
            prefix = f"{self.prefix}-p{k % len(self.clients)}"
            first = self._next_first(k)
            events = [
                encode_event(self.bodies[i % nb], f"{prefix}-{i}") for i in range(first, first + self.batch)
            ]
            ok = False
            try:
                client.send_batch(events)
                ok = True
            except Exception as exc:  # the hub is away (a fault): unconfirmed, retried with the next batch
                self.failures += 1
                LOG.debug("producer batch to partition %s failed: %s", client.partition_id, exc)
            self.produced.record(prefix, first, self.batch, ok)
            if ok:
                self.acks.entries.append((time.monotonic(), f"{prefix}-{first + self.batch - 1}"))
            k += 1
            due += self.interval
            now = time.monotonic()
            if due < now - 2.0:  # far behind (the hub was away): hold the rate from here, no burst
                due = now
            self.stop_event.wait(max(0.0, due - now) if ok else max(0.25, due - now))
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.close()

    def _next_first(self, k: int) -> int:
        return (k // len(self.clients)) * self.batch


class Device(threading.Thread):
    """One device: a QoS 1 message every ``interval`` s (reconnecting after a failure); ``last_ack``."""

    def __init__(self, info: dict[str, Any], index: int, interval: float, prefix: str, produced: ProducedLog):
        super().__init__(name=f"soak-device-{index}", daemon=True)
        from enginehub.loadtests.clients.mqtt_device import RawMqttDevice, device_key
        from enginehub.loadtests.loadrun import bodies

        device_id = f"soak-device-{index:03d}"
        key = device_key(info["device_group_key"], device_id)
        self.client = RawMqttDevice(
            info["iothub_gateway_host"],
            info["iothub_hostname"],
            device_id,
            key,
            ca_cert=info["ca_cert"],
            timeout=5.0,
        )
        self.interval = interval
        self.prefix = f"{prefix}-d{index}"
        self.produced = produced
        self.bodies = bodies(64)
        self.last_ack = 0.0
        self.stop_event = threading.Event()

    def run(self) -> None:
        n = 0
        due = time.monotonic() + random.uniform(0, self.interval)  # noqa: S311 - spread, not security
        while not self.stop_event.wait(max(0.0, due - time.monotonic())):
            ok = False
            try:
                self.client.send(self.bodies[n % len(self.bodies)], f"{self.prefix}-{n}")
                ok = True
            except Exception as exc:  # dropped or the hub is away: reconnect with the next message
                LOG.debug("%s: %s", self.name, exc)
                with contextlib.suppress(Exception):
                    self.client.close()
            self.produced.record(self.prefix, n, 1, ok)
            if ok:
                self.last_ack = time.monotonic()
            n += 1
            due = max(due + self.interval, time.monotonic() - 2.0)
        with contextlib.suppress(Exception):
            self.client.close()


# ----------------------------------------------------------------------------------------------- sink
class SinkReader:
    """Read-only queries of the sink file (one connection, opened lazily)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._conn: sqlite3.Connection | None = None

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._conn is None:
            if not self.db.exists():
                return []
            self._conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # no such table yet
            return []

    def has_row(self, message_id: str) -> bool:
        return bool(self._query(f"SELECT 1 FROM {TABLE} WHERE id = ?", (f"mid:{message_id}",)))

    def max_rowid(self) -> int:
        rows = self._query(f"SELECT max(rowid) FROM {TABLE}")
        return int(rows[0][0] or 0) if rows else 0

    def row_ids(self, prefix: str) -> set[str]:
        lo = f"mid:{prefix}-"
        rows = self._query(f"SELECT id FROM {TABLE} WHERE id >= ? AND id < ?", (lo, lo[:-1] + "."))
        return {r[0][4:] for r in rows}

    def dead_letter_ids(self) -> list[str]:
        return [
            r[0][4:] if r[0].startswith("mid:") else r[0]
            for r in self._query(f"SELECT id FROM {DEAD_LETTERS}")
        ]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -------------------------------------------------------------------------------------------- executor
class Soak:
    """The run's processes, load and faults; :meth:`apply` applies one fault and times its recovery."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.db = workdir / "sink.db"
        self.checkpoints = workdir / "checkpoints"
        self.run_id = f"soak{uuid.uuid4().hex[:8]}"
        self.produced = ProducedLog()
        self.poison = ProducedLog()
        self.poison_n = 0
        self.stack = SoakStack(workdir, args.partitions)
        self.settings = IngestSettings(batch_size=args.ingest_batch_size, prefetch=args.ingest_prefetch)
        self.nodes: list[IngestNode | None] = []
        self.incarnations: list[int] = []
        self.exits: list[dict[str, Any]] = []
        self.reader = SinkReader(self.db)
        self.producer: Producer | None = None
        self.devices: list[Device] = []
        self.t0 = 0.0

    # -- stack ---------------------------------------------------------------------------------------
    def _start_node(self, i: int) -> IngestNode:
        self.incarnations[i] += 1
        owner = f"n{i}-{self.incarnations[i]}"
        info = self.stack.info
        node = start_node(
            self.workdir, owner, info["eventhub_connection_string"], info["eventhub_name"],
            f"sqlite:///{self.db}", self.checkpoints, self.settings,
        )  # fmt: skip
        self.nodes[i] = node
        return node

    def live_owners(self) -> set[str]:
        return {n.owner_id for n in self.nodes if n is not None and n.running}

    def start(self) -> None:
        self.stack.start()
        self.nodes = [None] * self.args.consumer_nodes
        self.incarnations = [0] * self.args.consumer_nodes
        for i in range(self.args.consumer_nodes):
            self._start_node(i)
        wait_all_owned(self.checkpoints, self.args.partitions, self.live_owners(), timeout=90)
        info = self.stack.info
        self.producer = Producer(
            info["eventhub_connection_string"], info["eventhub_name"], self.args.partitions,
            self.args.rate, self.args.batch_size, self.run_id, self.produced,
        )  # fmt: skip
        interval = self.args.devices / self.args.device_rate if self.args.device_rate > 0 else 1.0
        self.devices = [
            Device(info, i, interval, self.run_id, self.produced) for i in range(self.args.devices)
        ]
        self.t0 = time.monotonic()
        self.producer.start()
        for d in self.devices:
            d.start()

    def stop_load(self) -> None:
        for t in [self.producer, *self.devices]:
            if t is not None:
                t.stop_event.set()
        for t in [self.producer, *self.devices]:
            if t is not None:
                t.join(15)

    def stop_nodes(self) -> None:
        for i, node in enumerate(self.nodes):
            if node is not None:
                self._stop_node(i, "end", 30)

    def shutdown(self) -> None:
        self.stop_load()
        self.stop_nodes()
        self.stack.stop()
        self.reader.close()

    def _stop_node(self, i: int, why: str, timeout: float) -> int | None:
        node = self.nodes[i]
        if node is None:
            return None
        self.nodes[i] = None
        try:
            code: int | None = node.terminate(timeout)  # SIGTERM to the node's pid only
        except AssertionError as exc:
            LOG.warning("%s", exc)
            code = node.returncode
        self.exits.append({"node": node.owner_id, "signal": "SIGTERM", "why": why, "exit_code": code})
        return code

    # -- faults --------------------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def _poll(self, done: Callable[[], bool], since: float) -> float | None:
        """Seconds from ``since`` (monotonic) until ``done()``; None after --recovery-timeout."""
        deadline = time.monotonic() + self.args.recovery_timeout
        while time.monotonic() < deadline:
            if done():
                return round(time.monotonic() - since, 2)
            time.sleep(0.1)
        return None

    def _fresh_row(self, lifted: float) -> Callable[[], bool]:
        assert self.producer is not None
        acks = self.producer.acks

        def done() -> bool:
            last_id = acks.first_after(lifted)
            return last_id is not None and self.reader.has_row(last_id)

        return done

    def apply(self, fault: Fault) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": fault.kind, "planned_at_s": fault.at, "at_s": round(self.now(), 2)}
        start = time.monotonic()
        if fault.kind in ("kill9", "sigterm"):
            i = int(fault.target or 0)
            node = self.nodes[i]
            assert node is not None
            out["node"] = node.owner_id
            if fault.kind == "kill9":
                workers = child_pids(node.pid)
                node.kill()
                self.nodes[i] = None
                self.exits.append({"node": node.owner_id, "signal": "SIGKILL", "exit_code": node.returncode})
                self._reap_orphans(workers)
            else:
                out["exit_code"] = self._stop_node(i, "fault", 30)
            time.sleep(max(0.0, fault.hold - (time.monotonic() - start)))
            lifted = time.monotonic()
            new = self._start_node(i)
            out["restarted_as"] = new.owner_id

            def owned() -> bool:
                seen = owners(self.checkpoints)
                live = self.live_owners()
                return (
                    len(seen) >= self.args.partitions
                    and all(o in live for o in seen.values())
                    and new.owner_id in seen.values()
                )

            recovered = owned
        elif fault.kind == "eventhubs_restart":
            self.stack.kill()
            time.sleep(fault.hold)
            self.stack.start()
            lifted = time.monotonic()
            recovered = self._fresh_row(lifted)
        elif fault.kind == "sink_outage":
            from enginehub.ingest.testing import unwritable

            with unwritable(self.db):
                settle = min(1.0, fault.hold / 2)  # a batch already past the sink's check may still commit
                time.sleep(settle)
                before = self.reader.max_rowid()
                time.sleep(max(0.0, fault.hold - settle))
                out["rows_written_during"] = self.reader.max_rowid() - before
            lifted = time.monotonic()
            recovered = self._fresh_row(lifted)
        elif fault.kind == "device_drop":
            out["dropped"] = self.stack.drop_devices()
            lifted = time.monotonic()
            devices = self.devices

            def recovered() -> bool:
                return all(d.last_ack > lifted for d in devices)
        elif fault.kind == "poison":
            ids = self._send_poison(fault.count)
            out["accepted"] = len(ids)
            lifted = time.monotonic()

            def recovered() -> bool:
                have = set(self.reader.dead_letter_ids())
                return all(x in have for x in ids)
        else:  # pragma: no cover - the plan only has known kinds
            raise ValueError(fault.kind)
        out["hold_s"] = round(lifted - start, 2)
        out["lifted_at_s"] = round(lifted - self.t0, 2)
        out["recovery_s"] = self._poll(recovered, lifted)
        LOG.info("fault %s", json.dumps(out))
        return out

    def _reap_orphans(self, pids: list[int]) -> None:
        """A killed node's sink worker should exit on its own (its socket to the parent closes)."""
        deadline = time.monotonic() + 15
        while any(running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in pids:
            if running(p):
                LOG.warning("sink worker %d outlived its killed node by 15 s: SIGKILL", p)
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)

    def _send_poison(self, count: int) -> list[str]:
        from enginehub.loadtests.clients.eventhub import RawProducer, encode_event

        info = self.stack.info
        client = RawProducer(info["eventhub_connection_string"], info["eventhub_name"], None, timeout=5.0)
        prefix = f"{self.run_id}-x"
        first = self.poison_n
        self.poison_n += count
        ids = [f"{prefix}-{n}" for n in range(first, first + count)]
        ok = False
        try:
            client.send_batch(
                [encode_event(POISON_BODY + str(n).encode(), i) for n, i in enumerate(ids, first)]
            )
            ok = True
        except Exception as exc:
            LOG.warning("poison batch not accepted: %s", exc)
        finally:
            client.close()
        self.poison.record(prefix, first, count, ok)
        return ids if ok else []

    # -- end -----------------------------------------------------------------------------------------
    def drain(self) -> float | None:
        acked = set(self.produced.ids("acked"))
        poison = set(self.poison.ids("acked"))
        start = time.monotonic()
        deadline = start + self.args.drain_timeout
        while time.monotonic() < deadline:
            if acked <= self.reader.row_ids(self.run_id) and poison <= set(self.reader.dead_letter_ids()):
                return round(time.monotonic() - start, 2)
            time.sleep(1.0)
        return None


def check(result: dict[str, Any], planned_kinds: set[str]) -> list[str]:
    """The invariants (see the module docstring) on a result: the failures, [] when all held (pure)."""
    failures = []
    zero = ("lost", "duplicates", "unexpected_rows", "missing_dead_letters", "unexpected_dead_letters")
    for key in (*zero, "duplicate_dead_letters"):
        if result.get(key):
            failures.append(f"{key} {result[key]} (must be 0)")
    if not result.get("produced"):
        failures.append("nothing was produced")
    if result.get("drain_s") is None:
        failures.append("the sink did not hold every accepted id within the drain timeout")
    for f in result.get("faults", []):
        if f.get("error"):
            failures.append(f"{f['kind']} at {f['at_s']} s could not be applied: {f['error']}")
        elif f.get("recovery_s") is None:
            failures.append(f"{f['kind']} at {f['at_s']} s did not recover")
        if f["kind"] == "sink_outage" and f.get("rows_written_during"):
            failures.append(
                f"sink_outage at {f['at_s']} s: {f['rows_written_during']} rows written during it"
            )
    for e in result.get("node_exits", []):
        if e["signal"] == "SIGTERM" and e.get("exit_code") != 0:
            failures.append(f"{e['node']} exited {e.get('exit_code')} after SIGTERM (0 expected)")
    happened = {f["kind"] for f in result.get("faults", [])}
    missing = sorted(planned_kinds - happened)
    if missing:
        failures.append(f"fault kinds that never happened: {missing}")
    return failures


def summarize_faults(faults: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, float | None]]:
    """(count per kind, max recovery_s per kind) (pure)."""
    counts = Counter(f["kind"] for f in faults)
    worst: dict[str, float | None] = {}
    for f in faults:
        r = f.get("recovery_s")
        prev = worst.get(f["kind"], 0.0)
        worst[f["kind"]] = None if r is None or prev is None else max(prev, r)
    return dict(sorted(counts.items())), dict(sorted(worst.items()))


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    kinds = tuple(args.kinds.split(",")) if args.kinds else KINDS
    plan = schedule(args.seed, args.duration, nodes=args.consumer_nodes, kinds=kinds, mean_gap=args.mean_gap)
    LOG.info("fault plan (seed %d): %s", args.seed, json.dumps([f.to_json() for f in plan]))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="enginehub-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    LOG.info("workdir %s", workdir)
    soak = Soak(args, workdir)
    passed = False
    try:
        try:
            soak.start()
        except Exception as exc:
            LOG.error("the soak's stack did not start: %s", exc)
            return {}, 2
        faults: list[dict[str, Any]] = []
        for fault in plan:
            while soak.now() < fault.at:
                time.sleep(min(0.2, fault.at - soak.now()))
            try:
                faults.append(soak.apply(fault))
            except Exception as exc:  # e.g. the hub did not come back: report it, stop the plan, still drain
                LOG.exception("applying %s failed; no further faults", fault)
                faults.append(
                    {"kind": fault.kind, "planned_at_s": fault.at, "at_s": round(soak.now(), 2)}
                    | {"error": f"{type(exc).__name__}: {exc}", "recovery_s": None}
                )
                break
        while soak.now() < args.duration:
            time.sleep(min(0.5, args.duration - soak.now()))
        elapsed = round(soak.now(), 1)
        soak.stop_load()
        drain = soak.drain()
        soak.stop_nodes()
        report = analyze(soak.db, TABLE, soak.run_id, soak.produced, [], None)
        dead = soak.reader.dead_letter_ids()
        poison_acked = set(soak.poison.ids("acked"))
        poison_allowed = poison_acked | set(soak.poison.ids("unconfirmed"))
        counts, worst = summarize_faults(faults)
        result: dict[str, Any] = {
            "seed": args.seed,
            "duration_s": args.duration,
            "elapsed_s": elapsed,
            "partitions": args.partitions,
            "consumer_nodes": args.consumer_nodes,
            "devices": args.devices,
            "offered_events_per_s": args.rate + args.device_rate,
            "produced": report.produced,
            "unconfirmed": report.unconfirmed,
            # sends that failed (the fault cut the answer off) but were stored all the same
            "unconfirmed_stored": report.rows
            - report.duplicates
            - report.unexpected_rows
            - (report.produced - report.lost),
            "rows": report.rows,
            "lost": report.lost,
            "duplicates": report.duplicates,
            "unexpected_rows": report.unexpected_rows,
            "lost_examples": report.lost_examples,
            "poison_injected": len(poison_acked),
            "dead_letters": len(dead),
            "duplicate_dead_letters": len(dead) - len(set(dead)),
            "missing_dead_letters": len(poison_acked - set(dead)),
            "unexpected_dead_letters": len(set(dead) - poison_allowed),
            "drain_s": drain,
            "hub_starts": soak.stack.starts,
            "fault_counts": counts,
            "recovery_s_max": worst,
            "faults": faults,
            "node_exits": soak.exits,
        }
        failures = check(result, set(kinds))
        result["failures"] = failures
        result["passed"] = not failures
        for failure in failures:
            LOG.error("invariant failed: %s", failure)
        passed = not failures
        return result, 0 if passed else 1
    finally:
        soak.shutdown()
        if not args.workdir:
            if passed:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                LOG.info("logs kept in %s", workdir)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m enginehub.loadtests soak", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--json", action="store_true", help="print the one-line JSON result last")
    p.add_argument(
        "--duration", type=float, default=600.0, help="seconds of load with faults (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=1, help="the fault plan's seed (default %(default)s)")
    p.add_argument(
        "--kinds", default="", help=f"comma-separated fault kinds (default all: {','.join(KINDS)})"
    )
    p.add_argument("--mean-gap", type=float, default=20.0, help="s between faults on average in a long run")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--consumer-nodes", type=int, default=2)
    p.add_argument("--rate", type=float, default=200.0, help="producer events/s (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=20, help="events per producer batch")
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--device-rate", type=float, default=16.0, help="messages/s of the whole fleet")
    p.add_argument("--ingest-batch-size", type=int, default=200)
    p.add_argument("--ingest-prefetch", type=int, default=1000)
    p.add_argument("--recovery-timeout", type=float, default=60.0, help="s a fault may take to recover")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--workdir", help="keep logs, the sink and the hub's data here (default: a temp dir)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    kinds = tuple(args.kinds.split(",")) if args.kinds else KINDS
    try:
        schedule(args.seed, args.duration, nodes=args.consumer_nodes, kinds=kinds, mean_gap=args.mean_gap)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rate <= 0 or args.batch_size <= 0 or args.devices < 0:
        parser.error("--rate and --batch-size must be > 0, --devices >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out, code = run(args)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2), flush=True)  # noqa: T201
    return code
