"""`harness eventhubs` as a process: one JSON line, /health, SIGTERM -> exit 0, and a restart (also after
kill -9) on the same --data-dir keeps sequence numbers, offsets and content; consumers resume from a
checkpointed offset."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from azure.eventhub import EventData
from eh_sdk_helpers import producer, receive

pytestmark = pytest.mark.integration


def start(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "enginehub.harness", "eventhubs", "--port", "0", "--http-port", "0",
         "--data-dir", str(data_dir), "--policy", "RootManageSharedAccessKey=test-key", "--partitions", "2",
         *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(
            f"no JSON line; exit {proc.wait()}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, json.loads(line)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_json_health_sigterm_and_restart_keeps_the_log(tmp_path: Path) -> None:
    proc, info = start(tmp_path)
    try:
        assert (
            info["eventhub_names"] == ["eh1"]
            and "UseDevelopmentEmulator=true" in info["eventhubs_connection_string"]
        )
        with urllib.request.urlopen(info["health_url"], timeout=5) as resp:
            assert resp.status == 200 and json.load(resp)["status"] == "healthy"
        cs = info["eventhub_connection_strings"]["eh1"]
        with producer(cs) as p:
            p.send_batch([EventData(f"before-{i}") for i in range(3)], partition_id="1")
        before = receive(cs, partition_id="1", expect=3)
    finally:
        assert stop(proc) == 0

    proc, info = start(tmp_path)  # same data dir, new port
    try:
        cs = info["eventhub_connection_strings"]["eh1"]
        after = receive(cs, partition_id="1", expect=3)
        assert [(e.sequence_number, e.offset, e.body_as_str()) for e in after] == [
            (e.sequence_number, e.offset, e.body_as_str()) for e in before
        ]
        with producer(cs) as p:
            p.send_event(EventData("after-restart"), partition_id="1")
        checkpoint = before[-1].offset  # resume after the last checkpointed event
        resumed = receive(cs, partition_id="1", starting_position=checkpoint, expect=1)
        assert resumed[0].body_as_str() == "after-restart" and resumed[0].sequence_number == 3
    finally:
        assert stop(proc, signal.SIGKILL) == -signal.SIGKILL

    proc, info = start(tmp_path)  # after kill -9
    try:
        cs = info["eventhub_connection_strings"]["eh1"]
        got = receive(cs, partition_id="1", expect=4)
        assert [e.body_as_str() for e in got] == ["before-0", "before-1", "before-2", "after-restart"]
    finally:
        assert stop(proc, signal.SIGINT) == 0


def test_cli_bad_options_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "Config.json"
    bad.write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "enginehub.harness", "eventhubs", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "not valid JSON" in result.stderr and result.stdout == ""
    result = subprocess.run(
        [sys.executable, "-m", "enginehub.harness", "eventhubs", "--policy", "nokey"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "NAME=KEY" in result.stderr


def test_cli_accepts_microsoft_config_json_and_documents_every_option(tmp_path: Path) -> None:
    config = tmp_path / "Config.json"
    config.write_text(
        json.dumps(
            {
                "UserConfig": {
                    "NamespaceConfig": [
                        {
                            "Type": "EventHub",
                            "Name": "emulatorNs1",
                            "Entities": [
                                {"Name": "eh1", "PartitionCount": "2", "ConsumerGroups": [{"Name": "cg1"}]},
                                {"Name": "telemetry", "PartitionCount": "3", "ConsumerGroups": []},
                            ],
                        }
                    ],
                    "LoggingConfig": {"Type": "File"},
                }
            }
        )
    )
    proc, info = start(tmp_path / "data", "--config", str(config))
    try:
        assert info["eventhub_names"] == ["eh1", "telemetry"] and info["namespace"] == "emulatorNs1"
        with producer(info["eventhub_connection_strings"]["telemetry"]) as p:
            assert p.get_partition_ids() == ["0", "1", "2"]
    finally:
        assert stop(proc) == 0
    help_text = subprocess.run(
        [sys.executable, "-m", "enginehub.harness", "eventhubs", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for option in ("--host", "--port", "--http-port", "--config", "--data-dir", "--partitions", "--hub",
                   "--consumer-group", "--policy", "--max-message-size", "--retention-seconds"):  # fmt: skip
        assert option in help_text
