"""`enginehub-datasets validate` as the Makefile and CI call it: the installed script, in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).with_name("enginehub-datasets")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ENGINEHUB_CMAPSS_DIR"} | (env or {})
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=120, check=False
    )


def test_validate_json_on_real_files(cmapss_dir: Path) -> None:
    # All four subsets are validated in-process by the unit tests; here the contract, on two of them.
    proc = run(
        "validate", "--json", "--subset", "FD003", "FD001", env={"ENGINEHUB_CMAPSS_DIR": str(cmapss_dir)}
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"] is True and out["subsets"] == ["FD003", "FD001"] and out["dir"] == str(cmapss_dir)
    assert isinstance(out["seconds"], float) and len(out["files"]) == 6
    files = {f["file"]: f for f in out["files"]}
    assert (files["train_FD003.txt"]["rows"], files["train_FD003.txt"]["units"]) == (24720, 100)
    assert (files["test_FD001.txt"]["rows"], files["test_FD001.txt"]["units"]) == (13096, 100)
    assert files["RUL_FD001.txt"]["rows"] == 100 and files["RUL_FD001.txt"]["units"] is None
    assert {f["checksum"] for f in out["files"]} == {"ok"}


def test_validate_text_one_subset_via_python_m(cmapss_dir: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "enginehub.datasets",
            "validate",
            "--dir",
            str(cmapss_dir),
            "--subset",
            "fd003",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^train_FD003\.txt +rows=24720 +units=100 +sha256=ok$", proc.stdout, re.M)
    assert re.search(r"^test_FD003\.txt +rows=16596 +units=100 +sha256=ok$", proc.stdout, re.M)
    assert "FD001" not in proc.stdout


def test_validate_corrupt_file_exits_1_with_location(cmapss_dir: Path, tmp_path: Path) -> None:
    for name in ("train_FD001.txt", "test_FD001.txt", "RUL_FD001.txt"):
        shutil.copyfile(cmapss_dir / name, tmp_path / name)
    lines = (tmp_path / "test_FD001.txt").read_text().splitlines(keepends=True)
    fields = lines[41].split()
    fields[9] = "x9"
    lines[41] = " ".join(fields) + "\n"
    (tmp_path / "test_FD001.txt").write_text("".join(lines))
    proc = run("validate", "--dir", str(tmp_path), "--subset", "FD001", "--json")
    assert proc.returncode == 1
    assert f"{tmp_path / 'test_FD001.txt'}:42:10: expected a number, got 'x9'" in proc.stderr
    out = json.loads(proc.stdout)
    assert (out["ok"], out["line"], out["column"]) == (False, 42, 10)
    assert out["file"] == str(tmp_path / "test_FD001.txt")


def test_validate_without_directory_explains_and_exits_2(tmp_path: Path) -> None:
    proc = run("validate")
    assert proc.returncode == 2
    assert "ENGINEHUB_CMAPSS_DIR" in proc.stderr and "--dir" in proc.stderr
    proc = run("validate", "--dir", str(tmp_path), "--subset", "FD007")
    assert proc.returncode == 2 and "unknown C-MAPSS subset 'FD007'" in proc.stderr


def test_help_explains_and_no_command_is_a_usage_error() -> None:
    proc = run("validate", "--help")
    assert proc.returncode == 0
    for word in ("--dir", "--subset", "--json", "--no-checksums", "file:line:column", "ENGINEHUB_CMAPSS_DIR"):
        assert word in proc.stdout
    proc = run()
    assert proc.returncode == 2 and "validate" in proc.stderr


def test_synthetic_to_dir_then_validate_as_subprocesses(tmp_path: Path) -> None:
    proc = run("synthetic", "--out", str(tmp_path), "--units", "5", "--seed", "9", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == ["train_FD001.txt", "test_FD001.txt", "RUL_FD001.txt"]
    proc = run("validate", "--subset", "FD001", "--json", env={"ENGINEHUB_CMAPSS_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)["files"]
    assert [f["units"] for f in files] == [5, 5, None] and {f["checksum"] for f in files} == {"ok"}


def test_synthetic_rows_to_a_closed_pipe_exit_quietly() -> None:
    producer = subprocess.Popen(
        [str(SCRIPT), "synthetic", "--units", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert producer.stdout is not None
    first = producer.stdout.readline()
    producer.stdout.close()  # like `| head -1`
    _, err = producer.communicate(timeout=60)
    assert first.startswith(b"1 1 ") and producer.returncode == 0 and b"Traceback" not in err
