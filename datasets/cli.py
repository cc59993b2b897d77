"""`enginehub-datasets`: validate the NASA C-MAPSS files, print synthetic rows.

    enginehub-datasets validate [--dir D] [--subset FD00x ...] [--json] [--no-checksums]
    enginehub-datasets synthetic [--units N] [--conditions 1|6] [--seed S] [--format seed|json] [--limit N]
    enginehub-datasets synthetic --out DIR [--name FD00x] [--json]

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
            "C-MAPSS turbofan dataset tools.\n"
            "  validate   check the NASA files (train_FD00x, test_FD00x, RUL_FD00x): 26 numeric columns,\n"
            "             units 1..N contiguous, cycles 1, 2, ... per unit, one RUL line per test unit,\n"
            "             and SHA256SUMS when present\n"
            "  synthetic  a seedable C-MAPSS-shaped fleet, for when the NASA files are not at hand"
        ),
        epilog=(
            "examples:\n"
            "  enginehub-datasets validate --dir ../shared/datasets/cmapss --json\n"
            "  ENGINEHUB_CMAPSS_DIR=/data/cmapss enginehub-datasets validate --subset FD001 FD003\n"
            "  enginehub-datasets synthetic --units 3 --format json --limit 5\n"
            "  enginehub-datasets synthetic --out /tmp/syn --conditions 6   # writes *_FD002.txt + SHA256SUMS"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    syn = sub.add_parser(
        "synthetic",
        help="print synthetic C-MAPSS-shaped rows, or write a synthetic subset in the NASA file format",
        description=(
            "Seedable synthetic fleet (run to failure, 1 or 6 operating conditions, fitted to FD001/FD002). "
            "Without --out, print the train rows, one payload per line (the seed line format or JSON). With "
            "--out DIR, write train_/test_/RUL_<name>.txt and SHA256SUMS there, readable by `validate`."
        ),
    )
    syn.add_argument("--units", type=int, default=100, help="engines (default 100)")
    syn.add_argument("--conditions", type=int, choices=(1, 6), default=1, help="operating conditions (1)")
    syn.add_argument("--seed", type=int, default=0, help="RNG seed (0); the same seed gives the same rows")
    syn.add_argument("--format", choices=("seed", "json"), default="seed", help="payload format (seed)")
    syn.add_argument("--limit", type=int, default=None, metavar="N", help="print at most N rows")
    syn.add_argument("--out", metavar="DIR", help="write a subset (train, test, RUL) into DIR instead")
    syn.add_argument(
        "--name", default=None, metavar="FD00x", help="file names for --out (FD001, or FD002 with 6)"
    )
    syn.add_argument("--json", action="store_true", help="with --out: print one JSON summary line")
    return parser


def _synthetic(args: argparse.Namespace) -> int:
    from enginehub.datasets import codecs, synthetic

    try:
        config = synthetic.SyntheticConfig(units=args.units, conditions=args.conditions, seed=args.seed)
        name = cmapss.check_subset(args.name or ("FD001" if args.conditions == 1 else "FD002"))
        if args.limit is not None and args.limit < 0:
            raise ValueError(f"--limit must be >= 0, got {args.limit}")
    except ValueError as exc:
        print(f"enginehub-datasets: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.out:
        subset = synthetic.generate_subset(args.units, args.conditions, args.seed)
        try:
            paths = cmapss.write_subset(subset, args.out, name)
        except OSError as exc:
            print(f"enginehub-datasets: cannot write {args.out}: {exc}", file=sys.stderr)
            return EXIT_INVALID
        summary = {
            "ok": True,
            "dir": str(args.out),
            "name": name,
            "files": [p.name for p in paths],
            "train_rows": len(subset.train),
            "test_rows": len(subset.test),
            "units": args.units,
            "conditions": args.conditions,
            "seed": args.seed,
        }
        if args.json:
            print(json.dumps(summary))
        else:
            print(f"wrote {', '.join(summary['files'])} ({len(subset.train)} train rows) to {args.out}")
        return EXIT_OK
    encode = codecs.encode_line if args.format == "seed" else codecs.encode_json
    out = sys.stdout
    try:
        for i, row in enumerate(synthetic.iter_fleet(config)):
            if args.limit is not None and i >= args.limit:
                break
            out.write(encode(row) + "\n")
        out.flush()
    except BrokenPipeError:  # e.g. `| head`: stop quietly
        sys.stdout = None  # no second error at interpreter exit
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        subsets = list(dict.fromkeys(cmapss.check_subset(s) for s in args.subset))  # once each, in order
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
            if not s.standard_precision:
                print(f"  note: decimals per column {list(s.decimals or ())} differ from the NASA files'")
        print(f"OK: {len(summaries)} files in {directory} valid ({seconds} s)")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `enginehub-datasets` console script and `python -m enginehub.datasets`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args)
    if args.command == "synthetic":
        return _synthetic(args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
