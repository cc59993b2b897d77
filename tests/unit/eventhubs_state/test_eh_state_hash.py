"""Partition-key hashing: identical to the SDK's buffered-producer resolver and stable across processes."""

from __future__ import annotations

import subprocess
import sys

from azure.eventhub._buffered_producer._partition_resolver import PartitionResolver, generate_hash_code
from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.state import EventHubsStore, partition_key_hash


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_hash_matches_sdk(key: str) -> None:
    assert partition_key_hash(key) == generate_hash_code(key)


def test_hash_matches_sdk_on_every_tail_length() -> None:
    for n in range(0, 30):
        key = "".join(chr(ord("a") + (i * 7) % 26) for i in range(n))
        assert partition_key_hash(key) == generate_hash_code(key), n


def test_partition_for_key_matches_sdk_resolver() -> None:
    store = EventHubsStore(EmulatorConfig.simple(partitions=4))
    hub = store.hub("eh1")
    resolver = PartitionResolver(hub.partition_ids)
    for i in range(200):
        key = f"unit-{i}"
        assert hub.partition_for_key(key) == resolver.get_partition_id_by_partition_key(key)
    assert len({hub.partition_for_key(f"unit-{i}") for i in range(200)}) == 4


def test_hash_stable_across_processes() -> None:
    keys = [f"unit-{i}" for i in range(20)] + ["\u00e9\u00e8", "k"]
    code = (
        "import sys, json; from enginehub.harness.eventhubs.state import partition_key_hash;"
        "print(json.dumps([partition_key_hash(k) for k in json.loads(sys.argv[1])]))"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(keys)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(out.stdout) == [partition_key_hash(k) for k in keys]
