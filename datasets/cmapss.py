"""Reader and validator for the NASA C-MAPSS text files (train_FD00x, test_FD00x, RUL_FD00x).

The directory comes from an argument, else the environment variable ``ENGINEHUB_CMAPSS_DIR``.

Format (docs/cmapss.md section 2): one row per line, 26 whitespace-separated numeric fields
``unit cycle setting1 setting2 setting3 sensor1 .. sensor21`` (no header; each data line ends with two
spaces and LF). Within a unit, cycles start at 1 and go up by exactly 1; units are numbered 1..N,
contiguously and in order. ``RUL_FD00x.txt`` holds one integer per line (plus a trailing space), one line
per test unit, in unit order.

Every violation raises `CmapssFormatError` naming the file, the 1-based line and the 1-based column.
Standard library only.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from enginehub.datasets.schema import DECIMALS, N_COLUMNS, N_SETTINGS, Row, format_values, row_problem

LOG = logging.getLogger(__name__)

ENV_VAR = "ENGINEHUB_CMAPSS_DIR"
SUBSETS: tuple[str, ...] = ("FD001", "FD002", "FD003", "FD004")
KINDS: tuple[str, ...] = ("train", "test", "RUL")
CHECKSUMS_FILE = "SHA256SUMS"


class CmapssError(Exception):
    """Base class of the errors of this module."""


class CmapssConfigError(CmapssError):
    """The data directory is not given, or does not exist."""


class CmapssFormatError(CmapssError):
    """A missing or corrupt file. `line` and `column` are 1-based (None when the error is not at a place)."""

    def __init__(self, path: Path | str, line: int | None, column: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.column = column
        self.reason = reason
        where = str(self.path)
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {reason}")


class CmapssChecksumError(CmapssFormatError):
    """The file's SHA-256 differs from the one in SHA256SUMS."""


def resolve_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The C-MAPSS directory: `directory` if given, else $ENGINEHUB_CMAPSS_DIR; it must exist."""
    if directory is None or str(directory) == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise CmapssConfigError(
                "no C-MAPSS directory given: pass --dir DIR (or the `directory` argument), or set "
                f"{ENV_VAR}=/path/to/cmapss (the folder holding train_FD001.txt ...)"
            )
        directory = env
    path = Path(directory)
    if not path.is_dir():
        raise CmapssConfigError(f"C-MAPSS directory {path} does not exist or is not a directory")
    return path


def file_name(kind: str, subset: str) -> str:
    """`train_FD001.txt`, `test_FD002.txt`, `RUL_FD003.txt` ..."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return f"{kind}_{check_subset(subset)}.txt"


def check_subset(subset: str) -> str:
    """The subset name normalised to upper case ("fd001" -> "FD001"); ValueError if it is not FD001..FD004."""
    name = subset.upper()
    if name not in SUBSETS:
        raise ValueError(f"unknown C-MAPSS subset {subset!r}: expected one of {', '.join(SUBSETS)}")
    return name


def _open_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        fh = open(path, encoding="latin-1", newline="")  # noqa: SIM115 - closed in finally
    except FileNotFoundError:
        raise CmapssFormatError(path, None, None, "file not found") from None
    except OSError as exc:
        raise CmapssFormatError(path, None, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        yield from enumerate(fh, 1)
    finally:
        fh.close()


def _bad_field(path: Path, lineno: int, col: int, text: str, expected: str) -> CmapssFormatError:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return CmapssFormatError(path, lineno, col, f"expected {expected}, got {shown!r}")


def parse_fields(path: Path, lineno: int, line: str) -> Row:
    """One data line -> Row, checking the field count and that each field is a finite number."""
    fields = line.split()
    if len(fields) != N_COLUMNS:
        if not fields:
            raise CmapssFormatError(path, lineno, 1, f"empty line: expected {N_COLUMNS} numeric columns")
        col = N_COLUMNS + 1 if len(fields) > N_COLUMNS else len(fields) + 1
        raise CmapssFormatError(
            path, lineno, col, f"expected {N_COLUMNS} numeric columns, found {len(fields)}"
        )
    ints: list[int] = []
    for col in (1, 2):
        text = fields[col - 1]
        if not text.isascii() or not text.isdigit():
            raise _bad_field(
                path, lineno, col, text, "a positive integer (" + ("unit", "cycle")[col - 1] + ")"
            )
        ints.append(int(text))
    values: list[float] = []
    for col in range(3, N_COLUMNS + 1):
        text = fields[col - 1]
        try:
            if "_" in text or not text.isascii():
                raise ValueError(text)
            v = float(text)
        except ValueError:
            raise _bad_field(path, lineno, col, text, "a number") from None
        if not math.isfinite(v):
            raise _bad_field(path, lineno, col, text, "a finite number")
        values.append(v)
    return Row(ints[0], ints[1], tuple(values[:N_SETTINGS]), tuple(values[N_SETTINGS:]))


def iter_rows(path: str | os.PathLike[str]) -> Iterator[Row]:
    """Stream and validate one train_/test_ file: 26 numeric columns, units 1..N contiguous and in order,
    cycles starting at 1 and going up by exactly 1 within each unit. Raises CmapssFormatError."""
    return _iter_rows(Path(path), None)


# Digits -> "d", signs dropped: "1 12 -0.0007" -> "d dd d.dddd"; a file has a few dozen such shapes.
_SHAPE = str.maketrans("0123456789", "dddddddddd", "+-")


def decimals_of_shapes(shapes: Iterable[str]) -> tuple[int, ...]:
    """Largest number of decimals per column over line shapes (see `_SHAPE`); exponents count as text."""
    best: list[int] = []
    for shape in shapes:
        for i, field in enumerate(shape.split()):
            _, dot, frac = field.partition(".")
            n = len(frac) if dot else 0
            if i == len(best):
                best.append(n)
            elif n > best[i]:
                best[i] = n
    return tuple(best)


def _iter_rows(path: Path, shapes: set[str] | None) -> Iterator[Row]:
    prev: Row | None = None
    for lineno, line in _open_lines(path):
        row = parse_fields(path, lineno, line)
        if shapes is not None:
            shapes.add(line.translate(_SHAPE))
        if prev is None:
            if row.unit != 1:
                raise CmapssFormatError(path, lineno, 1, f"first unit must be 1, got {row.unit}")
            if row.cycle != 1:
                raise CmapssFormatError(path, lineno, 2, f"unit 1 must start at cycle 1, got {row.cycle}")
        elif row.unit == prev.unit:
            if row.cycle != prev.cycle + 1:
                raise CmapssFormatError(
                    path,
                    lineno,
                    2,
                    f"cycle {row.cycle} follows cycle {prev.cycle} of unit {row.unit}: "
                    f"expected {prev.cycle + 1} (cycles go up by exactly 1)",
                )
        elif row.unit == prev.unit + 1:
            if row.cycle != 1:
                raise CmapssFormatError(
                    path, lineno, 2, f"unit {row.unit} must start at cycle 1, got {row.cycle}"
                )
        else:
            raise CmapssFormatError(
                path,
                lineno,
                1,
                f"unit {row.unit} follows unit {prev.unit}: units must be contiguous and in order "
                f"(expected {prev.unit} or {prev.unit + 1})",
            )
        prev = row
        yield row
    if prev is None:
        raise CmapssFormatError(path, 1, None, "file is empty: expected C-MAPSS rows")


def read_rows(path: str | os.PathLike[str]) -> list[Row]:
    """All rows of one train_/test_ file, validated (see `iter_rows`)."""
    return list(iter_rows(path))


def read_rul(path: str | os.PathLike[str]) -> list[int]:
    """The true RULs of an RUL_FD00x file: one non-negative integer per line, in test-unit order."""
    path = Path(path)
    out: list[int] = []
    for lineno, line in _open_lines(path):
        fields = line.split()
        if len(fields) != 1:
            col = 1 if not fields else 2
            raise CmapssFormatError(
                path, lineno, col, f"expected 1 integer per line, found {len(fields)} fields"
            )
        text = fields[0]
        if not text.isascii() or not text.isdigit():
            raise _bad_field(path, lineno, 1, text, "a non-negative integer (RUL in cycles)")
        out.append(int(text))
    if not out:
        raise CmapssFormatError(path, 1, None, "file is empty: expected one RUL per test unit")
    return out


def count_units(rows: Iterable[Row]) -> int:
    """Number of distinct units (rows are unit-contiguous, so the last unit number for a valid file)."""
    return len({r.unit for r in rows})


def unit_lengths(rows: Iterable[Row]) -> dict[int, int]:
    """Cycles per unit: {unit: number of rows}."""
    out: dict[int, int] = {}
    for r in rows:
        out[r.unit] = out.get(r.unit, 0) + 1
    return out


@dataclass(frozen=True)
class Subset:
    """One C-MAPSS subset: run-to-failure train rows, truncated test rows, and the test units' true RUL."""

    name: str
    train: list[Row]
    test: list[Row]
    rul: list[int]

    @property
    def train_units(self) -> int:
        return self.train[-1].unit if self.train else 0

    @property
    def test_units(self) -> int:
        return self.test[-1].unit if self.test else 0


def load_subset(subset: str, directory: str | os.PathLike[str] | None = None) -> Subset:
    """Read and validate train_, test_ and RUL_ of `subset`; the RUL file must have one line per test unit."""
    name = check_subset(subset)
    base = resolve_dir(directory)
    train = read_rows(base / file_name("train", name))
    test = read_rows(base / file_name("test", name))
    rul_path = base / file_name("RUL", name)
    rul = read_rul(rul_path)
    _check_rul_count(rul_path, len(rul), test[-1].unit)
    return Subset(name, train, test, rul)


def _check_rul_count(path: Path, lines: int, units: int) -> None:
    if lines != units:
        raise CmapssFormatError(
            path,
            min(lines, units) + 1,
            1,
            f"{lines} RUL lines for {units} test units: expected one line per test unit",
        )


@dataclass(frozen=True)
class FileSummary:
    """What `validate` found in one file (JSON-ready via `as_dict`)."""

    file: str
    subset: str
    kind: str
    rows: int
    units: int | None  # None for RUL files
    sha256: str  # the file's digest
    checksum: str  # "ok", "unlisted" or "skipped"
    decimals: tuple[int, ...] | None = None  # most decimals seen per column (26); None for RUL files

    @property
    def standard_precision(self) -> bool:
        """True when every column has the NASA files' decimals (`schema.DECIMALS`); RUL files: True."""
        return self.decimals is None or self.decimals == DECIMALS

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "subset": self.subset,
            "kind": self.kind,
            "rows": self.rows,
            "units": self.units,
            "sha256": self.sha256,
            "checksum": self.checksum,
            "decimals": None if self.decimals is None else list(self.decimals),
        }


def read_checksums(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a `sha256sum` output file: {file name: lowercase hex digest}. Bad lines -> CmapssFormatError."""
    path = Path(path)
    out: dict[str, str] = {}
    for lineno, line in _open_lines(path):
        if not line.strip():
            continue
        digest, sep, name = line.rstrip("\r\n").partition(" ")
        name = name.lstrip(" *")
        if not sep or len(digest) != 64 or not name or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise CmapssFormatError(path, lineno, 1, "expected '<64 hex digits>  <file name>'")
        out[name] = digest.lower()
    return out


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def validate_file(path: str | os.PathLike[str], checksums: dict[str, str] | None = None) -> FileSummary:
    """Validate one file (kind and subset from its name) and, with `checksums`, compare its SHA-256."""
    path = Path(path)
    stem = path.name.removesuffix(".txt")
    kind, _, subset = stem.partition("_")
    if kind not in KINDS or subset.upper() not in SUBSETS:
        raise CmapssFormatError(
            path, None, None, "not a C-MAPSS file name (expected train_/test_/RUL_FD00x.txt)"
        )
    decimals = None
    if kind == "RUL":
        rows, units = len(read_rul(path)), None
    else:
        rows = 0
        last = 0
        shapes: set[str] = set()
        for row in _iter_rows(path, shapes):
            rows += 1
            last = row.unit
        units = last
        decimals = decimals_of_shapes(shapes)
    digest = sha256_file(path)
    status = "skipped"
    if checksums is not None:
        expected = checksums.get(path.name)
        if expected is None:
            status = "unlisted"
        elif expected != digest:
            raise CmapssChecksumError(
                path, None, None, f"SHA-256 {digest} differs from {expected} in {CHECKSUMS_FILE}"
            )
        else:
            status = "ok"
    return FileSummary(path.name, subset.upper(), kind, rows, units, digest, status, decimals)


def validate(
    directory: str | os.PathLike[str] | None = None,
    subsets: Iterable[str] = SUBSETS,
    verify_checksums: bool = True,
) -> list[FileSummary]:
    """Validate train_, test_ and RUL_ of each subset; RUL lines must equal test units.

    With `verify_checksums`, files are compared with SHA256SUMS when that file is present in the
    directory (a file not listed there is reported as "unlisted"). Raises CmapssFormatError on the first
    problem, CmapssConfigError when the directory cannot be resolved.
    """
    base = resolve_dir(directory)
    names = [check_subset(s) for s in subsets]
    checksums = None
    if verify_checksums and (base / CHECKSUMS_FILE).is_file():
        checksums = read_checksums(base / CHECKSUMS_FILE)
    out: list[FileSummary] = []
    for name in names:
        summaries = [validate_file(base / file_name(kind, name), checksums) for kind in KINDS]
        test, rul = summaries[1], summaries[2]
        _check_rul_count(base / rul.file, rul.rows, test.units or 0)
        out.extend(summaries)
        LOG.debug("validated %s: %s", name, [s.as_dict() for s in summaries])
    return out


# ---------------------------------------------------------------- writing files in the NASA format


def format_line(row: Row) -> str:
    """The NASA file line of `row`: 26 fields with the column decimals, two trailing spaces, LF."""
    return " ".join(format_values(row)) + "  \n"


def check_order(rows: Iterable[Row]) -> int:
    """Check rows are well formed and in file order (units 1..N contiguous, cycles 1, 2, ...); the count.

    Raises ValueError naming the 0-based row index.
    """
    prev: Row | None = None
    n = 0
    for n, row in enumerate(rows, 1):
        problem = row_problem(row)
        if problem:
            raise ValueError(f"row {n - 1}: {problem}")
        if prev is None:
            ok = row.unit == 1 and row.cycle == 1
        elif row.unit == prev.unit:
            ok = row.cycle == prev.cycle + 1
        else:
            ok = row.unit == prev.unit + 1 and row.cycle == 1
        if not ok:
            after = "start" if prev is None else f"unit {prev.unit} cycle {prev.cycle}"
            raise ValueError(f"row {n - 1}: unit {row.unit} cycle {row.cycle} cannot follow {after}")
        prev = row
    if n == 0:
        raise ValueError("no rows")
    return n


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="ascii", newline="")
    tmp.replace(path)


def write_rows(path: str | os.PathLike[str], rows: Sequence[Row]) -> Path:
    """Write rows as a train_/test_ file, byte-for-byte in the NASA format; ValueError on bad rows
    (nothing is written then). The file is replaced atomically."""
    check_order(rows)
    path = Path(path)
    _write_text(path, "".join(format_line(r) for r in rows))
    return path


def write_rul(path: str | os.PathLike[str], rul: Sequence[int]) -> Path:
    """Write an RUL_ file: one non-negative integer and a space per line."""
    for i, v in enumerate(rul):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"RUL {i}: expected a non-negative int, got {v!r}")
    if not rul:
        raise ValueError("no RUL values")
    path = Path(path)
    _write_text(path, "".join(f"{v} \n" for v in rul))
    return path


def write_subset(
    subset: Subset, directory: str | os.PathLike[str], name: str = "FD001", checksums: bool = True
) -> list[Path]:
    """Write train_/test_/RUL_<name>.txt (and SHA256SUMS listing them) so `validate` and `load_subset` read
    them back; the directory is created. RUL lines must match the test units (ValueError)."""
    name = check_subset(name)
    if len(subset.rul) != subset.test_units:
        raise ValueError(f"{len(subset.rul)} RUL values for {subset.test_units} test units")
    check_order(subset.train)
    check_order(subset.test)
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    paths = [
        write_rows(base / file_name("train", name), subset.train),
        write_rows(base / file_name("test", name), subset.test),
        write_rul(base / file_name("RUL", name), subset.rul),
    ]
    if checksums:
        listed = read_checksums(base / CHECKSUMS_FILE) if (base / CHECKSUMS_FILE).is_file() else {}
        listed.update({p.name: sha256_file(p) for p in paths})
        _write_text(base / CHECKSUMS_FILE, "".join(f"{d}  {n}\n" for n, d in sorted(listed.items())))
    return paths
