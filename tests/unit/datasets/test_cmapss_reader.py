"""The C-MAPSS reader/validator on the real files and on corrupt copies (in tmp_path, never in the repo)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from enginehub.datasets import cmapss
from enginehub.datasets.cmapss import CmapssChecksumError, CmapssConfigError, CmapssFormatError
from enginehub.datasets.schema import Row, format_values

# subset: (train rows, train units, test rows, test units) -- docs/cmapss.md, verified on the files.
COUNTS = {
    "FD001": (20631, 100, 13096, 100),
    "FD002": (53759, 260, 33991, 259),
    "FD003": (24720, 100, 16596, 100),
    "FD004": (61249, 249, 41214, 248),
}

FIRST_FD001 = (
    "1 1 -0.0007 -0.0004 100.0 518.67 641.82 1589.70 1400.60 14.62 21.61 554.36 2388.06 9046.19 1.30 "
    "47.47 521.66 2388.02 8138.62 8.4195 0.03 392 2388 100.00 39.06 23.4190"
)
BASE = Row(
    1,
    1,
    (-0.0007, -0.0004, 100.0),
    (518.67, 641.82, 1589.7, 1400.6, 14.62, 21.61, 554.36, 2388.06, 9046.19, 1.3, 47.47, 521.66, 2388.02)
    + (8138.62, 8.4195, 0.03, 392.0, 2388.0, 100.0, 39.06, 23.419),
)


def line(unit: int, cycle: int) -> str:
    return " ".join(format_values(BASE._replace(unit=unit, cycle=cycle))) + "  \n"


def fleet_text(lengths: list[int]) -> str:
    return "".join(line(u, c) for u, n in enumerate(lengths, 1) for c in range(1, n + 1))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def write_subset(tmp_path: Path, train: list[int], test: list[int], rul: list[int]) -> Path:
    write(tmp_path, "train_FD001.txt", fleet_text(train))
    write(tmp_path, "test_FD001.txt", fleet_text(test))
    write(tmp_path, "RUL_FD001.txt", "".join(f"{r} \n" for r in rul))
    return tmp_path


# ---------------------------------------------------------------- the real files


@pytest.mark.parametrize("subset", ["FD001", "FD003"])  # all four: test_validate_all_real_files...
def test_real_subset_counts(cmapss_dir: Path, subset: str) -> None:
    train_rows, train_units, test_rows, test_units = COUNTS[subset]
    data = cmapss.load_subset(subset, cmapss_dir)
    assert (len(data.train), data.train_units, cmapss.count_units(data.train)) == (
        train_rows,
        train_units,
        train_units,
    )
    assert (len(data.test), data.test_units, cmapss.count_units(data.test)) == (
        test_rows,
        test_units,
        test_units,
    )
    assert len(data.rul) == test_units
    assert sum(cmapss.unit_lengths(data.train).values()) == train_rows


def test_first_row_of_fd001_parsed_exactly(cmapss_dir: Path) -> None:
    first = next(cmapss.iter_rows(cmapss_dir / "train_FD001.txt"))
    assert first == BASE
    assert " ".join(format_values(first)) == FIRST_FD001
    assert cmapss.read_rul(cmapss_dir / "RUL_FD001.txt")[:3] == [112, 98, 69]


def test_fd001_lifetimes_match_the_documented_ones(cmapss_dir: Path) -> None:
    lengths = cmapss.unit_lengths(cmapss.read_rows(cmapss_dir / "train_FD001.txt"))
    life = sorted(lengths.values())
    assert (life[0], life[len(life) // 2], life[-1]) == (128, 199, 362)


def test_validate_all_real_files_with_checksums(cmapss_dir: Path) -> None:
    summaries = cmapss.validate(cmapss_dir)
    got = {s.file: (s.rows, s.units, s.checksum) for s in summaries}
    assert all(s.standard_precision for s in summaries)
    for subset, (tr, tru, te, teu) in COUNTS.items():
        assert got[f"train_{subset}.txt"] == (tr, tru, "ok")
        assert got[f"test_{subset}.txt"] == (te, teu, "ok")
        assert got[f"RUL_{subset}.txt"] == (teu, None, "ok")
    assert len(summaries) == 12


# ---------------------------------------------------------------- directory resolution


def test_resolve_dir_argument_env_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cmapss.resolve_dir(tmp_path) == tmp_path
    monkeypatch.setenv(cmapss.ENV_VAR, str(tmp_path))
    assert cmapss.resolve_dir(None) == tmp_path
    monkeypatch.delenv(cmapss.ENV_VAR)
    with pytest.raises(CmapssConfigError, match="ENGINEHUB_CMAPSS_DIR") as err:
        cmapss.resolve_dir(None)
    assert "--dir" in str(err.value)
    with pytest.raises(CmapssConfigError, match="does not exist"):
        cmapss.resolve_dir(tmp_path / "nope")


def test_subset_and_file_names() -> None:
    assert cmapss.check_subset("fd002") == "FD002"
    assert cmapss.file_name("RUL", "fd004") == "RUL_FD004.txt"
    with pytest.raises(ValueError, match="FD001, FD002"):
        cmapss.check_subset("FD005")
    with pytest.raises(ValueError, match="kind"):
        cmapss.file_name("valid", "FD001")


# ---------------------------------------------------------------- small valid / corrupt files


def test_small_valid_subset_round_trips(tmp_path: Path) -> None:
    write_subset(tmp_path, [3, 2], [2, 1, 4], [10, 20, 30])
    data = cmapss.load_subset("FD001", tmp_path)
    assert [(r.unit, r.cycle) for r in data.train] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    assert data.test_units == 3 and data.rul == [10, 20, 30]
    assert cmapss.unit_lengths(data.test) == {1: 2, 2: 1, 3: 4}
    summaries = cmapss.validate(tmp_path, ["FD001"])
    assert [s.checksum for s in summaries] == ["skipped"] * 3  # no SHA256SUMS here


def test_file_without_final_newline_and_crlf_accepted(tmp_path: Path) -> None:
    text = fleet_text([2]).replace("\n", "\r\n").rstrip("\r\n")
    assert len(cmapss.read_rows(write(tmp_path, "train_FD001.txt", text))) == 2


def corrupt(lines: list[str], lineno: int, col: int, value: str) -> str:
    fields = lines[lineno - 1].split()
    fields[col - 1] = value
    lines = list(lines)
    lines[lineno - 1] = " ".join(fields) + "  \n"
    return "".join(lines)


@pytest.mark.parametrize(
    ("lineno", "col", "value", "reason"),
    [
        (2, 7, "abc", "expected a number, got 'abc'"),
        (3, 26, "nan", "expected a finite number"),
        (3, 3, "inf", "expected a finite number"),
        (2, 4, "1_0", "expected a number"),
        (2, 5, "１", "expected a number"),  # full-width digit: float() would accept it
        (2, 1, "1.0", "positive integer (unit)"),
        (4, 2, "-2", "positive integer (cycle)"),
        (2, 2, "3", "cycle 3 follows cycle 1 of unit 1: expected 2"),
        (4, 2, "2", "unit 2 must start at cycle 1, got 2"),
        (4, 1, "3", "unit 3 follows unit 1: units must be contiguous"),
        (1, 1, "2", "first unit must be 1"),
        (1, 2, "5", "unit 1 must start at cycle 1"),
        (5, 1, "1", "unit 1 follows unit 2: units must be contiguous"),
    ],
)
def test_corrupt_field_names_file_line_column(
    tmp_path: Path, lineno: int, col: int, value: str, reason: str
) -> None:
    lines = fleet_text([3, 3]).splitlines(keepends=True)
    path = write(tmp_path, "train_FD001.txt", corrupt(lines, lineno, col, value))
    with pytest.raises(CmapssFormatError) as err:
        cmapss.read_rows(path)
    assert (err.value.path, err.value.line, err.value.column) == (path, lineno, col)
    assert reason in err.value.reason
    assert str(err.value).startswith(f"{path}:{lineno}:{col}: ")


@pytest.mark.parametrize(
    ("edit", "col", "reason"),
    [
        (lambda f: f[:25], 26, "expected 26 numeric columns, found 25"),
        (lambda f: [*f, "1.0"], 27, "found 27"),
        (lambda f: [], 1, "empty line"),
    ],
)
def test_wrong_column_count(tmp_path: Path, edit, col: int, reason: str) -> None:  # noqa: ANN001
    lines = fleet_text([3]).splitlines(keepends=True)
    lines[1] = " ".join(edit(lines[1].split())) + "\n"
    path = write(tmp_path, "test_FD001.txt", "".join(lines))
    with pytest.raises(CmapssFormatError) as err:
        cmapss.read_rows(path)
    assert (err.value.line, err.value.column) == (2, col)
    assert reason in err.value.reason


def test_corrupt_real_file_copy_is_located(cmapss_dir: Path, tmp_path: Path) -> None:
    lines = (cmapss_dir / "train_FD001.txt").read_text(encoding="latin-1").splitlines(keepends=True)
    path = write(tmp_path, "train_FD001.txt", corrupt(lines, 12345, 17, "12.3.4"))
    with pytest.raises(
        CmapssFormatError, match=r"train_FD001\.txt:12345:17: expected a number, got '12\.3\.4'"
    ):
        cmapss.read_rows(path)
    # A dropped line (a lost cycle) is caught too, on the line after the gap.
    del lines[999]
    path = write(tmp_path, "train_FD001.txt", "".join(lines))
    with pytest.raises(CmapssFormatError) as err:
        cmapss.read_rows(path)
    assert (err.value.line, err.value.column) == (1000, 2)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(CmapssFormatError, match="file not found") as err:
        cmapss.read_rows(tmp_path / "train_FD001.txt")
    assert err.value.line is None and str(err.value) == f"{tmp_path / 'train_FD001.txt'}: file not found"
    with pytest.raises(CmapssFormatError, match="file is empty"):
        cmapss.read_rows(write(tmp_path, "train_FD001.txt", ""))
    with pytest.raises(CmapssFormatError, match="file is empty"):
        cmapss.read_rul(write(tmp_path, "RUL_FD001.txt", ""))
    with pytest.raises(CmapssFormatError, match="cannot read"):
        cmapss.read_rows(tmp_path)  # a directory


def test_missing_file_in_subset_is_named(tmp_path: Path) -> None:
    write_subset(tmp_path, [2], [2], [5])
    (tmp_path / "test_FD001.txt").unlink()
    with pytest.raises(CmapssFormatError, match=r"test_FD001\.txt: file not found"):
        cmapss.validate(tmp_path, ["FD001"])
    with pytest.raises(CmapssFormatError, match=r"test_FD001\.txt: file not found"):
        cmapss.load_subset("FD001", tmp_path)


@pytest.mark.parametrize(
    ("text", "lineno", "col", "reason"),
    [
        ("10 \n2.5 \n", 2, 1, "non-negative integer"),
        ("10 \n-1 \n", 2, 1, "non-negative integer"),
        ("10 \n1 2 \n", 2, 2, "found 2 fields"),
        ("10 \n\n3 \n", 2, 1, "found 0 fields"),
    ],
)
def test_corrupt_rul_file(tmp_path: Path, text: str, lineno: int, col: int, reason: str) -> None:
    path = write(tmp_path, "RUL_FD001.txt", text)
    with pytest.raises(CmapssFormatError) as err:
        cmapss.read_rul(path)
    assert (err.value.line, err.value.column) == (lineno, col)
    assert reason in err.value.reason


@pytest.mark.parametrize(("rul", "lineno"), [([5, 6], 3), ([5, 6, 7, 8], 4)])
def test_rul_lines_must_match_test_units(tmp_path: Path, rul: list[int], lineno: int) -> None:
    write_subset(tmp_path, [2], [1, 1, 1], rul)
    for call in (lambda: cmapss.validate(tmp_path, ["FD001"]), lambda: cmapss.load_subset("FD001", tmp_path)):
        with pytest.raises(CmapssFormatError, match=f"{len(rul)} RUL lines for 3 test units") as err:
            call()
        assert err.value.path.name == "RUL_FD001.txt" and err.value.line == lineno


# ---------------------------------------------------------------- checksums


def sums(tmp_path: Path, **override: str) -> None:
    lines = []
    for name in ("train_FD001.txt", "test_FD001.txt", "RUL_FD001.txt"):
        digest = override.get(name.split("_")[0], hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
        if digest != "-":
            lines.append(f"{digest}  {name}\n")
    write(tmp_path, "SHA256SUMS", "".join(lines))


def test_checksums_ok_unlisted_mismatch_and_skipped(tmp_path: Path) -> None:
    write_subset(tmp_path, [2], [2], [5])
    sums(tmp_path, RUL="-")
    assert [s.checksum for s in cmapss.validate(tmp_path, ["FD001"])] == ["ok", "ok", "unlisted"]
    sums(tmp_path, test="0" * 64)
    with pytest.raises(CmapssChecksumError, match=r"test_FD001\.txt: SHA-256 [0-9a-f]{64} differs"):
        cmapss.validate(tmp_path, ["FD001"])
    summaries = cmapss.validate(tmp_path, ["FD001"], verify_checksums=False)
    assert [s.checksum for s in summaries] == ["skipped"] * 3
    assert summaries[0].sha256 == cmapss.sha256_file(tmp_path / "train_FD001.txt")


def test_bad_checksums_file(tmp_path: Path) -> None:
    path = write(tmp_path, "SHA256SUMS", f"{'a' * 64}  RUL_FD001.txt\n\nnot-a-digest  x.txt\n")
    with pytest.raises(CmapssFormatError) as err:
        cmapss.read_checksums(path)
    assert (err.value.line, err.value.column) == (3, 1)
    path = write(tmp_path, "SHA256SUMS", f"{'A' * 64} *RUL_FD001.txt\n")
    assert cmapss.read_checksums(path) == {"RUL_FD001.txt": "a" * 64}


def test_validate_file_rejects_foreign_names(tmp_path: Path) -> None:
    with pytest.raises(CmapssFormatError, match="not a C-MAPSS file name"):
        cmapss.validate_file(write(tmp_path, "train_FD009.txt", fleet_text([1])))
    summary = cmapss.validate_file(write(tmp_path, "train_FD003.txt", fleet_text([2, 3])))
    assert summary.as_dict() | {"sha256": "", "decimals": None} == {
        "file": "train_FD003.txt",
        "subset": "FD003",
        "kind": "train",
        "rows": 5,
        "units": 2,
        "sha256": "",
        "checksum": "skipped",
        "decimals": None,
    }


# ---------------------------------------------------------------- writing


def test_written_subset_is_byte_identical_to_the_nasa_files(cmapss_dir: Path, tmp_path: Path) -> None:
    data = cmapss.load_subset("FD001", cmapss_dir)
    paths = cmapss.write_subset(data, tmp_path, "FD001")
    for path in paths:
        assert path.read_bytes() == (cmapss_dir / path.name).read_bytes(), path.name
    assert [s.checksum for s in cmapss.validate(tmp_path, ["FD001"])] == ["ok", "ok", "ok"]
    assert cmapss.read_checksums(tmp_path / "SHA256SUMS") == {
        k: v for k, v in cmapss.read_checksums(cmapss_dir / "SHA256SUMS").items() if k.endswith("FD001.txt")
    }


def test_write_subset_keeps_other_checksums_and_renames(tmp_path: Path) -> None:
    write_subset(tmp_path, [2], [1], [3])
    small = cmapss.load_subset("FD001", tmp_path)
    cmapss.write_subset(small, tmp_path, "FD003")
    cmapss.write_subset(small, tmp_path, "FD004", checksums=False)
    assert set(cmapss.read_checksums(tmp_path / "SHA256SUMS")) == {
        "train_FD003.txt",
        "test_FD003.txt",
        "RUL_FD003.txt",
    }
    assert cmapss.load_subset("FD004", tmp_path) == cmapss.Subset("FD004", small.train, small.test, small.rul)
    assert cmapss.format_line(BASE) == FIRST_FD001 + "  \n"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no rows"),
        ([BASE._replace(cycle=2)], "row 0: unit 1 cycle 2 cannot follow start"),
        ([BASE, BASE._replace(unit=3)], "row 1: unit 3 cycle 1 cannot follow unit 1 cycle 1"),
        ([BASE, BASE._replace(cycle=3)], "row 1: unit 1 cycle 3 cannot follow"),
        ([BASE, BASE._replace(cycle=2, sensors=BASE.sensors[:3])], "row 1: sensors must be a tuple of 21"),
    ],
)
def test_write_rows_rejects_bad_rows_and_writes_nothing(
    tmp_path: Path, rows: list[Row], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        cmapss.write_rows(tmp_path / "train_FD001.txt", rows)
    assert not list(tmp_path.iterdir())


def test_write_rul_and_subset_errors(tmp_path: Path) -> None:
    for bad, message in (([], "no RUL values"), ([3, -1], "RUL 1"), ([2.5], "RUL 0"), ([True], "RUL 0")):
        with pytest.raises(ValueError, match=message):
            cmapss.write_rul(tmp_path / "RUL_FD001.txt", bad)
    rows = [BASE, BASE._replace(cycle=2)]
    with pytest.raises(ValueError, match="1 RUL values for 2 test units"):
        cmapss.write_subset(cmapss.Subset("x", rows, rows + [BASE._replace(unit=2)], [4]), tmp_path)
    assert not list(tmp_path.iterdir())
    assert cmapss.read_rul(cmapss.write_rul(tmp_path / "RUL_FD001.txt", [0, 7])) == [0, 7]


def test_datasets_readme_lists_the_verified_checksums_and_counts(cmapss_dir: Path) -> None:
    readme = (Path(cmapss.__file__).parent / "README.md").read_text(encoding="utf-8")
    table = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(".txt"):
            table[cells[0]] = (cells[1], cells[2], cells[3])
    sums = cmapss.read_checksums(cmapss_dir / "SHA256SUMS")
    assert {name: digest for name, (_, _, digest) in table.items()} == {
        k: v for k, v in sums.items() if k != "readme.txt"
    }
    for subset, (tr, tru, te, teu) in COUNTS.items():
        assert table[f"train_{subset}.txt"][:2] == (str(tr), str(tru))
        assert table[f"test_{subset}.txt"][:2] == (str(te), str(teu))
        assert table[f"RUL_{subset}.txt"][0] == str(teu)


def test_error_hierarchy_and_direct_helpers(tmp_path: Path) -> None:
    assert issubclass(CmapssFormatError, cmapss.CmapssError) and issubclass(
        CmapssConfigError, cmapss.CmapssError
    )
    assert issubclass(CmapssChecksumError, CmapssFormatError)
    path = tmp_path / "x.txt"
    assert cmapss.parse_fields(path, 7, FIRST_FD001 + "  \n") == BASE
    with pytest.raises(CmapssFormatError, match=r"x\.txt:7:26: expected a number, got '1e'"):
        cmapss.parse_fields(path, 7, FIRST_FD001[:-7] + "1e")
    assert cmapss.check_order([BASE, BASE._replace(cycle=2), BASE._replace(unit=2)]) == 3
    summary = cmapss.validate_file(write(tmp_path, "RUL_FD002.txt", "3 \n4 \n"))
    assert isinstance(summary, cmapss.FileSummary) and (summary.rows, summary.units) == (2, None)


def test_validate_records_per_column_decimals(cmapss_dir: Path, tmp_path: Path) -> None:
    from enginehub.datasets.schema import DECIMALS

    for summary in cmapss.validate(cmapss_dir, ["FD001"], verify_checksums=False):
        if summary.kind == "RUL":
            assert summary.decimals is None and summary.standard_precision
        else:
            assert summary.decimals == DECIMALS and summary.standard_precision
            assert summary.as_dict()["decimals"] == list(DECIMALS)
    # A file printed with other precision is still valid, and the summary says how it differs.
    lines = fleet_text([2]).splitlines(keepends=True)
    lines[1] = lines[1].replace(" 1589.70 ", " 1589.7 ").replace(" 23.4190", " 23.41901")
    summary = cmapss.validate_file(write(tmp_path, "test_FD001.txt", "".join(lines)))
    assert summary.decimals is not None and not summary.standard_precision
    assert summary.decimals[7] == 2 and summary.decimals[25] == 5  # the max per column is kept
    assert cmapss.decimals_of_shapes(["d d d.dd", "d dd d.d dd.ddd"]) == (0, 0, 2, 3)


def test_cli_notes_nonstandard_precision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from enginehub.datasets import cli

    write_subset(tmp_path, [2], [1], [4])
    text = (tmp_path / "train_FD001.txt").read_text().replace(" 100.0 ", " 100 ")
    (tmp_path / "train_FD001.txt").write_text(text)
    assert cli.main(["validate", "--dir", str(tmp_path), "--subset", "FD001"]) == 0
    out = capsys.readouterr().out
    assert out.count("note: decimals per column") == 1 and "[0, 0, 4, 4, 0, 2" in out
