"""`enginehub-datasets` in-process: exit codes, output, synthetic rows (subprocess runs: integration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enginehub.datasets import cli, cmapss, codecs, synthetic


def test_validate_small_dir_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cmapss.write_subset(synthetic.generate_subset(units=3, seed=1), tmp_path, "FD002")
    assert cli.main(["validate", "--dir", str(tmp_path), "--subset", "FD002"]) == 0
    out = capsys.readouterr().out
    assert "train_FD002.txt" in out and "units=3" in out and "sha256=ok" in out and out.startswith("train_")
    argv = ["validate", "--dir", str(tmp_path), "--subset", "FD002", "fd002", "--json", "--no-checksums"]
    assert cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["subsets"] == ["FD002"] and len(doc["files"]) == 3
    assert doc["ok"] is True and [f["checksum"] for f in doc["files"]] == ["skipped"] * 3
    assert doc["files"][2]["rows"] == 3 and doc["files"][1]["units"] == 3


def test_validate_missing_file_and_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "--dir", str(tmp_path), "--subset", "FD001", "--json"]) == 1
    captured = capsys.readouterr()
    assert "train_FD001.txt: file not found" in captured.err
    assert json.loads(captured.out)["line"] is None
    assert cli.main(["validate", "--dir", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["validate", "--bogus"])
    assert exc.value.code == 2


def test_synthetic_prints_decodable_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["synthetic", "--units", "2", "--seed", "4", "--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [codecs.decode_line(x) for x in lines] == synthetic.generate_fleet(units=2, seed=4)[:5]
    assert cli.main(["synthetic", "--units", "1", "--conditions", "6", "--format", "json"]) == 0
    rows = [codecs.decode_json(x) for x in capsys.readouterr().out.splitlines()]
    assert rows == synthetic.generate_fleet(units=1, conditions=6)


def test_synthetic_out_writes_a_valid_subset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["synthetic", "--out", str(tmp_path), "--units", "4", "--conditions", "6", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "FD002" and doc["units"] == 4
    data = cmapss.load_subset("FD002", tmp_path)
    assert (
        data.train == synthetic.generate_fleet(units=4, conditions=6) and len(data.train) == doc["train_rows"]
    )
    assert cli.main(["validate", "--dir", str(tmp_path), "--subset", "FD002"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--units", "0"], "units must be an int >= 1"),
        (["--name", "FD009"], "unknown C-MAPSS subset"),
        (["--limit", "-1"], "--limit must be >= 0"),
    ],
)
def test_synthetic_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["synthetic", *args]) == 2
    assert message in capsys.readouterr().err


def test_synthetic_out_unwritable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["synthetic", "--out", str(blocker / "sub"), "--units", "1"]) == 1
    assert "cannot write" in capsys.readouterr().err
