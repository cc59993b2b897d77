"""Run every fuzz target (enginehub.harness.testing.fuzz) for --cases inputs each; print cases/s per target
and any finding (the shrunk input hypothesis reports). Exit 1 when any target found something.

    .venv/bin/python benchmarks/fuzz.py [--cases 100000] [--only amqp-types,...] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback

from enginehub.harness.testing.fuzz import TARGETS, run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000, help="inputs per target (default %(default)s)")
    ap.add_argument("--only", help="comma-separated target names")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    logging.disable(logging.WARNING)  # the decoders warn about what they ignore; findings are exceptions
    names = set(a.only.split(",")) if a.only else None
    findings = 0
    for target in TARGETS:
        if names and target.name not in names:
            continue
        finding = None
        try:
            cases, seconds = run(target, a.cases)
        except Exception as exc:  # a finding: report it and go on with the next target
            finding = "".join(traceback.format_exception_only(exc)).strip()
            traceback.print_exc()
            cases, seconds = 0, 0.0
            findings += 1
        rate = cases / seconds if seconds else 0.0
        if a.json:
            print(json.dumps({"target": target.name, "cases": cases, "seconds": round(seconds, 2),
                              "cases_per_s": round(rate), "finding": finding}))  # fmt: skip
        else:
            print(f"{target.name:18} {cases:>8} cases  {seconds:7.1f} s  {rate:>8.0f} cases/s  "
                  f"{'FINDING: ' + finding if finding else 'no finding'}", flush=True)  # fmt: skip
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
