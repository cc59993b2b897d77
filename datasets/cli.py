"""`enginehub-datasets`: validate the NASA C-MAPSS files, print synthetic rows.

    enginehub-datasets validate [--dir D] [--subset FD00x ...] [--json] [--no-checksums]

Exit status: 0 when every file is valid, 1 when a file is missing or corrupt (the message names
file:line:column), 2 on a usage or configuration error (e.g. no directory given and
$ENGINEHUB_CMAPSS_DIR unset).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from enginehub.datasets import cmapss

LOG = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enginehub-datasets",
        description=(
            "C-MAPSS turbofan dataset tools. `validate` checks the NASA text files (train_FD00x, test_FD00x, "
            "RUL_FD00x): 26 numeric columns, units 1..N contiguous, cycles starting at 1 and going up by 1, "
            "one RUL line per test unit, and SHA256SUMS when present."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    val = sub.add_parser(
        "validate",
        help="validate the C-MAPSS files and print rows/units per file",
        description=(
            "Validate the C-MAPSS files and print rows and units per file. Exit 0 when all are valid, 1 on "
            "a missing or corrupt file (the message names file:line:column), 2 on a usage error."
        ),
    )
    val.add_argument(
        "--dir",
        dest="directory",
        metavar="D",
        help=f"folder holding the files (default: ${cmapss.ENV_VAR})",
    )
    val.add_argument(
        "--subset",
        nargs="+",
        metavar="FD00x",
        default=list(cmapss.SUBSETS),
        help="subsets to validate (default: all four)",
    )
    val.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    val.add_argument(
        "--no-checksums", action="store_true", help=f"do not compare files with {cmapss.CHECKSUMS_FILE}"
    )
    return parser


def _validate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        subsets = [cmapss.check_subset(s) for s in args.subset]
        directory = cmapss.resolve_dir(args.directory)
    except (ValueError, cmapss.CmapssConfigError) as exc:
        print(f"enginehub-datasets: error: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        return EXIT_USAGE
    try:
        summaries = cmapss.validate(directory, subsets, verify_checksums=not args.no_checksums)
    except cmapss.CmapssFormatError as exc:
        print(f"enginehub-datasets: invalid: {exc}", file=sys.stderr)
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": False,
                        "error": str(exc),
                        "file": str(exc.path),
                        "line": exc.line,
                        "column": exc.column,
                        "reason": exc.reason,
                    }
                )
            )
        return EXIT_INVALID
    seconds = round(time.perf_counter() - started, 3)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "dir": str(directory),
                    "subsets": subsets,
                    "files": [s.as_dict() for s in summaries],
                    "seconds": seconds,
                }
            )
        )
    else:
        for s in summaries:
            units = "" if s.units is None else f"  units={s.units}"
            print(f"{s.file:<16} rows={s.rows:<6}{units:<12}  sha256={s.checksum}")
        print(f"OK: {len(summaries)} files in {directory} valid ({seconds} s)")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `enginehub-datasets` console script and `python -m enginehub.datasets`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
