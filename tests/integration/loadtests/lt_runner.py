"""Run ``python -m enginehub.loadtests ...`` as users do and read its JSON line (the runner tests)."""

from __future__ import annotations

import json
import subprocess
import sys


def run_runner(args: list[str], timeout: float) -> tuple[dict, subprocess.CompletedProcess]:
    proc = subprocess.run(
        [sys.executable, "-m", "enginehub.loadtests", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output (exit {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1]), proc
