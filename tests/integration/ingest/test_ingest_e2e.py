"""End to end: real azure-eventhub producer -> Event Hubs emulator -> `ingest` consumer processes (real
EventHubConsumerClient) -> SQLite, with the SDK's BlobCheckpointStore on a real Azurite or our file store."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from enginehub.harness.testing.processes import child_pids, running
from enginehub.ingest.checkpoint_file import FileCheckpointStore
from enginehub.ingest.testing import (
    PARTITIONS,
    consumer_args,
    json_payload,
    list_checkpoints,
    list_ownership,
    message_id,
    namespace,
    poll,
    produce,
    row_count,
    seed_line,
    sqlite_query,
    unwritable,
)

pytestmark = pytest.mark.integration


def _known_events(n: int, units: int = 10) -> list[tuple[str, str]]:
    """n events with known ids; every 3rd one JSON, the rest seed lines."""
    out = []
    for i in range(n):
        unit, cycle = 1 + i % units, 1 + i // units
        body = json_payload(unit, cycle) if i % 3 == 0 else seed_line(unit, cycle)
        out.append((body, message_id(unit, cycle)))
    return out


def _blob_store(azurite: Any, container: str) -> Any:
    """A factory: the SDK's blob store is bound to one event loop, the helpers make one per call."""
    from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

    return lambda: BlobCheckpointStore.from_connection_string(azurite.connection_string, container)


def test_n_events_exactly_n_rows_checkpoints_and_graceful_release(
    emulator, azurite, checkpoint_container, consumers, tmp_path: Path
) -> None:
    n = 3000
    events = _known_events(n)
    produce(emulator.connection_string, events)
    db = tmp_path / "ingest.db"
    node = consumers(
        consumer_args(
            emulator,
            db,
            "--checkpoint-store",
            azurite.connection_string,
            "--checkpoint-container",
            checkpoint_container,
            "--owner-id",
            "node-a",
            "--metrics-port",
            "0",
        )
    )
    poll(lambda: row_count(db) >= n, 60, lambda: f"{row_count(db)} rows; log:\n{node.tail()}")
    metrics_url = re.search(r"metrics on (http://\S+)", node.log.read_text())
    assert metrics_url, node.tail()
    poll(
        lambda: f"enginehub_ingest_rows_written_total {n}\n" in _scrape(metrics_url.group(1)),
        15,
        lambda: _scrape(metrics_url.group(1))[:600],
    )
    text = _scrape(metrics_url.group(1))
    assert "enginehub_ingest_dead_letters_total 0" in text and "enginehub_ingest_batch_seconds_count" in text
    assert 'enginehub_ingest_partition_lag_events{partition="0"} 0' in text

    rows = sqlite_query(db, 'SELECT id, payload, "unit #", "cycle #", event_metadata FROM enginehub_events')
    assert len(rows) == n and len({r[0] for r in rows}) == n
    expected = {f"mid:{mid}": body for body, mid in events}
    for key, payload, unit, cycle, meta in rows:
        assert expected[key] == payload
        assert key == f"mid:{message_id(unit, cycle)}"
        assert json.loads(meta)["message_id"] == key[4:]
    assert sqlite_query(db, "SELECT count(*) FROM enginehub_dead_letters") == [(0,)]

    # checkpoints reach the last event of every partition, all owned by node-a
    store = _blob_store(azurite, checkpoint_container)
    ns = namespace(emulator)
    last = {
        str(pid): max(s for (s,) in sqlite_query(db, _seq_sql(pid)) or [(-1,)]) for pid in range(PARTITIONS)
    }
    poll(
        lambda: {p: c["sequence_number"] for p, c in list_checkpoints(store, ns).items()} == last,
        15,
        lambda: f"checkpoints {list_checkpoints(store, ns)} vs last written {last}",
    )
    owners = {o["partition_id"]: o["owner_id"] for o in list_ownership(store, ns)}
    assert owners == {str(p): "node-a" for p in range(PARTITIONS)}

    node.terminate()  # SIGTERM: finish, checkpoint, release ownership, exit 0
    assert node.wait(30) == 0, node.tail()
    released = {o["partition_id"]: o["owner_id"] for o in list_ownership(store, ns)}
    assert all(not owner for owner in released.values()), released


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _seq_sql(pid: int) -> str:
    return (
        "SELECT json_extract(event_metadata, '$.sequence_number') FROM enginehub_events "
        f"WHERE json_extract(partition_context, '$.partition_id') = '{pid}'"
    )


def test_poison_payloads_and_duplicate_deliveries(emulator, consumers, tmp_path: Path) -> None:
    good = _known_events(400)
    poison: list[tuple[bytes | str, str | None]] = [
        ("1 2 3", "poison-short"),
        ('{"unit": 1, "cycle": "x"}', "poison-json"),
        (b"\xff\xfe\xfd", "poison-utf8"),
        (seed_line(1, 1).replace("100.0", "NaN?"), "poison-value"),
        ("", None),  # no message id: keyed by (partition, sequence number)
    ]
    resent = good[:50]  # device re-sends after a dropped PUBACK: same message ids
    produce(emulator.connection_string, [*good, *poison, *resent])
    db, ckpt = tmp_path / "ingest.db", tmp_path / "ckpt"
    args = consumer_args(emulator, db, "--checkpoint-dir", str(ckpt))
    node = consumers(args)
    total = len(good) + len(poison) + len(resent)
    store = FileCheckpointStore(ckpt)
    ns = namespace(emulator)

    def checkpointed() -> int:
        return sum(c["sequence_number"] + 1 for c in list_checkpoints(store, ns).values())

    poll(lambda: checkpointed() == total, 60, lambda: f"checkpointed {checkpointed()}/{total}\n{node.tail()}")
    assert row_count(db) == len(good)
    dls = sqlite_query(
        db, "SELECT id, reason, raw, partition_id, sequence_number FROM enginehub_dead_letters"
    )
    assert len(dls) == len(poison)
    by_id = {d[0]: d for d in dls}
    assert "not UTF-8" in by_id["mid:poison-utf8"][1] and by_id["mid:poison-utf8"][2] == b"\xff\xfe\xfd"
    assert "json" in by_id["mid:poison-json"][1].lower()
    no_id = [d for d in dls if d[0].startswith("seq:")]
    assert len(no_id) == 1 and no_id[0][0] == f"seq:{no_id[0][3]}:{no_id[0][4]}"
    node.terminate()
    assert node.wait(30) == 0, node.tail()

    # a replay (fresh checkpoint store) delivers everything again: still one row each
    again = consumers(consumer_args(emulator, db, "--checkpoint-dir", str(tmp_path / "ckpt2")))
    store2 = FileCheckpointStore(tmp_path / "ckpt2")

    def checkpointed2() -> int:
        return sum(c["sequence_number"] + 1 for c in list_checkpoints(store2, ns).values())

    poll(lambda: checkpointed2() == total, 60, lambda: f"replayed {checkpointed2()}/{total}\n{again.tail()}")
    assert row_count(db) == len(good)
    assert row_count(db, "enginehub_dead_letters") == len(poison)
    again.terminate()
    assert again.wait(30) == 0, again.tail()


def test_sink_outage_holds_the_checkpoint_and_loses_nothing(emulator, consumers, tmp_path: Path) -> None:
    db, ckpt = tmp_path / "ingest.db", tmp_path / "ckpt"
    first = _known_events(200)
    produce(emulator.connection_string, first)
    node = consumers(consumer_args(emulator, db, "--checkpoint-dir", str(ckpt), "--metrics-port", "0"))
    store, ns = FileCheckpointStore(ckpt), namespace(emulator)

    def checkpointed() -> int:
        return sum(c["sequence_number"] + 1 for c in list_checkpoints(store, ns).values())

    poll(lambda: checkpointed() == 200, 60, lambda: f"checkpointed {checkpointed()}\n{node.tail()}")
    before = list_checkpoints(store, ns)
    second = _known_events(600)[200:]
    try:
        outage = unwritable(db)
        outage.__enter__()
    except RuntimeError as exc:
        pytest.skip(f"cannot make the SQLite file unwritable here: {exc}")
    try:
        produce(emulator.connection_string, second)
        poll(
            lambda: "sink unavailable" in node.tail(60),
            30,
            lambda: f"no outage reported; log:\n{node.tail()}",
        )
        time.sleep(2)  # let it retry for a while with the file still unwritable (the point of the test)
        assert list_checkpoints(store, ns) == before, "checkpoint moved while the sink was down"
        assert row_count(db) == 200
    finally:
        outage.__exit__(None, None, None)
    poll(
        lambda: checkpointed() == 600,
        60,
        lambda: f"checkpointed {checkpointed()} after recovery\n{node.tail()}",
    )
    assert row_count(db) == 600
    assert "sink is back" in node.log.read_text()
    node.terminate()
    assert node.wait(30) == 0, node.tail()


def test_kill_9_one_of_three_nodes_takeover_within_bound_exactly_n_rows(
    emulator, azurite, checkpoint_container, consumers, tmp_path: Path
) -> None:
    n = 6000
    events = _known_events(n, units=20)
    db = tmp_path / "ingest.db"
    store, ns = _blob_store(azurite, checkpoint_container), namespace(emulator)
    nodes = {
        name: consumers(
            consumer_args(
                emulator,
                db,
                "--checkpoint-store",
                azurite.connection_string,
                "--checkpoint-container",
                checkpoint_container,
                "--owner-id",
                name,
            ),
            name,
        )
        for name in ("n1", "n2", "n3")
    }

    def owners() -> dict[str, str]:
        return {o["partition_id"]: o["owner_id"] for o in list_ownership(store, ns)}

    # 4 partitions over 3 nodes: every node owns at least one once balanced
    poll(
        lambda: set(owners().values()) == set(nodes) and len(owners()) == PARTITIONS,
        40,
        lambda: f"ownership {owners()}",
    )
    producer = threading.Thread(
        target=lambda: [
            produce(emulator.connection_string, events[i : i + 200]) or time.sleep(0.1)
            for i in range(0, n, 200)
        ],
        daemon=True,
    )
    producer.start()
    poll(lambda: row_count(db) >= n // 4, 60, lambda: f"{row_count(db)} rows")
    victim_parts = {p for p, o in owners().items() if o == "n2"}
    workers = child_pids(nodes["n2"].proc.pid)
    assert len(workers) == 1, f"expected one sink worker under n2, found {workers}"
    nodes["n2"].kill9()
    killed_at = time.monotonic()
    assert nodes["n2"].wait(10) == -9
    poll(
        lambda: all(owners().get(p) in ("n1", "n3") for p in victim_parts),
        30,
        lambda: f"ownership {owners()} (n2 had {sorted(victim_parts)})",
    )
    takeover_s = time.monotonic() - killed_at
    poll(lambda: not running(workers[0]), 30, lambda: f"n2's sink worker {workers[0]} outlived it")
    producer.join(60)
    poll(lambda: row_count(db) >= n, 90, lambda: f"{row_count(db)}/{n} rows; n1:\n{nodes['n1'].tail(10)}")
    assert sqlite_query(db, "SELECT count(*), count(DISTINCT id) FROM enginehub_events") == [(n, n)]
    assert takeover_s <= 10.0, f"takeover took {takeover_s:.1f} s (> 10 s)"
    print(f"crash takeover: {takeover_s:.1f} s for partitions {sorted(victim_parts)}")
    for name in ("n1", "n3"):
        nodes[name].terminate()
    for name in ("n1", "n3"):
        assert nodes[name].wait(30) == 0, nodes[name].tail()


def test_sigterm_while_the_sink_is_down_exits_3_without_checkpoint_and_loses_nothing(
    emulator, consumers, tmp_path: Path
) -> None:
    db, ckpt = tmp_path / "ingest.db", tmp_path / "ckpt"
    produce(emulator.connection_string, _known_events(100))
    args = consumer_args(emulator, db, "--checkpoint-dir", str(ckpt), "--drain-timeout", "2")
    node = consumers(args)
    store, ns = FileCheckpointStore(ckpt), namespace(emulator)

    def checkpointed() -> int:
        return sum(c["sequence_number"] + 1 for c in list_checkpoints(store, ns).values())

    poll(lambda: checkpointed() == 100, 60, lambda: f"checkpointed {checkpointed()}\n{node.tail()}")
    try:
        outage = unwritable(db)
        outage.__enter__()
    except RuntimeError as exc:
        pytest.skip(f"cannot make the SQLite file unwritable here: {exc}")
    try:
        produce(emulator.connection_string, _known_events(300)[100:])
        poll(lambda: "sink unavailable" in node.tail(60), 30, lambda: f"no outage reported:\n{node.tail()}")
        before = list_checkpoints(store, ns)
        node.terminate()
        assert node.wait(60) == 3, node.tail()  # drain timed out: batch not confirmed, not checkpointed
        assert "NOT checkpointed" in node.log.read_text()
        assert list_checkpoints(store, ns) == before
    finally:
        outage.__exit__(None, None, None)
    successor = consumers(args)
    poll(lambda: checkpointed() == 300, 60, lambda: f"checkpointed {checkpointed()}\n{successor.tail()}")
    assert row_count(db) == 300
    successor.terminate()
    assert successor.wait(30) == 0, successor.tail()


def test_an_unreachable_namespace_is_reported_and_the_node_resumes_when_it_is_back(
    consumers, tmp_path: Path
) -> None:
    """The emulator goes away under a node and comes back on the same port. azure-eventhub 5.15 retries a
    refused connect at once, without a log line; the node backs off (ingest/reconnect.py), so it does not
    spin a CPU while the namespace is down, warns about each silent partition, says when Event Hubs answers
    again, and reads on from its checkpoints: N events before and M after -> exactly N + M rows."""
    from enginehub.harness.eventhubs.config import EmulatorConfig
    from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator
    from enginehub.harness.testing.processes import cpu_seconds
    from enginehub.ingest.testing import EVENTHUB

    cfg = EmulatorConfig.simple(hubs=[EVENTHUB], partitions=PARTITIONS)
    data = tmp_path / "eventhubs"  # persisted: the second emulator keeps the sequence numbers
    first = EmulatorThread(EventHubsEmulator(cfg, port=0, http_port=None, data_dir=data))
    emu = first.start()
    port = emu.port
    db = tmp_path / "ingest.db"
    args = consumer_args(emu, db, "--checkpoint-dir", str(tmp_path / "ckpt"), "--batch-wait", "0.2")
    node = consumers([*args, "--silence-warning", "2"])
    events = _known_events(70)
    second = None
    try:
        poll(lambda: node.tail(200).count("claimed by") == PARTITIONS, 60, node.tail)
        assert "nothing from Event Hubs" not in node.tail(200)  # idle but connected: empty batches count
        produce(emu.connection_string, events[:30])
        poll(lambda: row_count(db) == 30, 60, lambda: f"rows {row_count(db)}\n{node.tail()}")
        first.stop()
        poll(lambda: node.tail(200).count("nothing from Event Hubs") == PARTITIONS, 30, node.tail)
        assert "refuses connections; retrying with backoff" in node.tail(400)
        before, t0 = cpu_seconds(node.proc.pid), time.monotonic()
        time.sleep(5.0)  # a measurement window, not a wait for a condition
        cpu = (cpu_seconds(node.proc.pid) - before) / (time.monotonic() - t0)
        second = EmulatorThread(EventHubsEmulator(cfg, port=port, http_port=None, data_dir=data))
        emu = second.start()
        back = time.monotonic()
        produce(emu.connection_string, events[30:])
        poll(lambda: row_count(db) == 70, 60, lambda: f"rows {row_count(db)}\n{node.tail()}")
        resumed = time.monotonic() - back
        print(
            f"\nnode CPU with Event Hubs down: {cpu:.1%} of a core; restart -> all 70 rows in {resumed:.2f} s"
        )
        assert cpu < 0.25, f"node used {cpu:.0%} of a core while Event Hubs was down\n{node.tail()}"
        poll(lambda: node.tail(400).count("Event Hubs answers again") == PARTITIONS, 60, node.tail)
        assert row_count(db) == 70  # nothing lost, nothing read twice: checkpoints intact
        node.terminate()
        assert node.wait(30) == 0, node.tail()
    finally:
        if second is not None:
            second.stop()
        first.stop()
