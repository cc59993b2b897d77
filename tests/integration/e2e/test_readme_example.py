"""The README's example, verbatim: a user's test of their consumer against the local stack."""

import pytest

from enginehub.harness.testing.sinks import count_rows, read_rows
from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration


def test_every_engine_message_lands_once(iothub, azurite, checkpoint_container, ingest_node, fleet, tmp_path):
    sink = f"sqlite:///{tmp_path / 'events.db'}"
    for name in ("node-a", "node-b"):  # two consumer processes share the partitions
        ingest_node(
            name=name,
            eventhub_connection_string=iothub.eventhub_connection_string,
            sink=sink,
            checkpoint_store=azurite.connection_string,
            checkpoint_container=checkpoint_container,
        )
    run = fleet(units=3, rate=30, duration=5, run_id="readme", dataset="synthetic")
    summary = run.result(timeout=90)  # the `simulate --json` summary
    assert summary["failed"] == 0 and summary["acked"] > 0

    wait_until(
        lambda: count_rows(sink, message_id_prefix="readme-") >= summary["acked"],
        timeout=60,
        describe=lambda: f"{count_rows(sink, message_id_prefix='readme-')} of {summary['acked']} rows",
    )
    rows = read_rows(sink, message_id_prefix="readme-")
    assert len(rows) == summary["acked"]  # exactly once
    assert {r["device_id"] for r in rows.values()} == {"engine-0001", "engine-0002", "engine-0003"}
