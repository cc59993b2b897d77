"""The plugin as users meet it: a throwaway test suite run by pytest in a child process (the plugin is
loaded through its entry point, as in any project that installs enginehub)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def run_suite(tmp_path: Path, files: dict[str, str], *args: str, env: dict[str, str] | None = None) -> str:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("ENGINEHUB_", "CRATEDB_"))}
    child_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         *args, str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=child_env, cwd=tmp_path,
    )  # fmt: skip
    return proc.stdout + proc.stderr


def test_cratedb_skips_with_how_to_enable(tmp_path: Path) -> None:
    out = run_suite(
        tmp_path,
        {"test_c.py": "import pytest\n@pytest.mark.integration\ndef test_c(cratedb_schema):\n    pass\n"},
        "--cratedb-provider", "container",
        env={"DOCKER_HOST": "tcp://127.0.0.1:9"},  # a closed loopback port: no engine answers
    )  # fmt: skip
    assert "1 skipped" in out, out
    assert "no cratedb: --cratedb-provider=container, but the Docker engine does not answer" in out, out


def test_external_without_its_variable_skips_with_the_variable_name(tmp_path: Path) -> None:
    out = run_suite(
        tmp_path,
        {"test_e.py": "import pytest\n@pytest.mark.integration\ndef test_e(eventhub):\n    pass\n"},
        "--enginehub-target", "external",
    )  # fmt: skip
    assert "1 skipped" in out and "ENGINEHUB_EVENTHUBS_CONNECTION_STRING is not set" in out, out


def test_unmarked_integration_test_fails_with_the_reason(tmp_path: Path) -> None:
    out = run_suite(
        tmp_path,
        {
            "tests/integration/test_x.py": "def test_unmarked():\n    pass\n",
            "tests/integration/test_y.py": "import pytest\npytestmark = pytest.mark.integration\n"
            "def test_marked():\n    pass\n",
            "tests/unit/test_z.py": "import pytest\n@pytest.mark.cratedb\ndef test_crate_only():\n    pass\n",
        },
    )
    assert "1 passed, 2 errors" in out, out
    assert "lacks @pytest.mark.integration" in out and "marked cratedb but not integration" in out, out


def test_slow_is_opt_in(tmp_path: Path) -> None:
    files = {"test_s.py": "import pytest\n@pytest.mark.slow\ndef test_s():\n    pass\n"}
    assert "1 skipped" in run_suite(tmp_path, files)
    assert "1 passed" in run_suite(tmp_path, files, "--run-slow")


def test_local_eventhubs_namespace_for_a_user_suite(tmp_path: Path) -> None:
    test = """
import pytest
from azure.eventhub import EventHubProducerClient

pytestmark = pytest.mark.integration

def test_hub(eventhubs, eventhub):
    assert eventhubs.provider == "process"
    with EventHubProducerClient.from_connection_string(eventhub.connection_string, retry_total=0) as p:
        assert p.get_eventhub_properties()["eventhub_name"] == eventhub.name
"""
    out = run_suite(tmp_path, {"test_u.py": test}, "--eventhubs-provider", "process")
    assert "1 passed" in out, out
    assert "eventhubs: process (--eventhubs-provider=process)" in out, out


def test_usable_with_dash_p_when_autoload_is_off(tmp_path: Path) -> None:
    files = {"test_p.py": "import pytest\n@pytest.mark.slow\ndef test_s():\n    pass\n"}
    out = run_suite(
        tmp_path, files, "-p", "enginehub.harness.testing.pytest_plugin", "--strict-markers",
        env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )  # fmt: skip
    assert "1 skipped" in out and "opt in with --run-slow" in out, out
