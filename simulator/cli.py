"""``simulate``: replay C-MAPSS engines as N azure-iot-device clients sending R messages/s in total.

With no hub connection string it self-hosts (local IoT Hub + Event Hubs emulators and an ingest
consumer into an embedded SQLite file). Contract: docs/architecture.md; exit codes: ``app.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from enginehub.simulator import app
from enginehub.simulator.faults import FaultConfig
from enginehub.simulator.messages import PAYLOADS

LOG = logging.getLogger(__name__)

ENV_CS = "ENGINEHUB_IOTHUB_CONNECTION_STRING"
ENV_GROUP_KEY = "ENGINEHUB_DEVICE_GROUP_KEY"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        print(f"simulate: error: {message}", file=sys.stderr)
        raise SystemExit(app.EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="simulate",
        description="Replay NASA C-MAPSS turbofan engines as N azure-iot-device clients sending R msg/s in "
        "total. Without --iothub-connection-string it self-hosts the local stack and an ingest consumer "
        "into SQLite.",
        epilog="exit codes: 0 every message acked (also after Ctrl-C, which drains first); 2 bad input; "
        "3 hub unreachable; 4 credentials refused; 5 messages not acknowledged after every retry; "
        "6 self-hosted stack or consumer failed; 7 self-hosted database missing acked messages; "
        "1 unexpected. "
        "Example: simulate --units 100 --rate 500 --duration 60",
    )
    p.add_argument("--units", type=_positive_int, default=10, help="devices (engines) in the fleet (10)")
    p.add_argument(
        "--rate", type=_positive_float, default=None, help="messages/s in total (default: 1 per unit)"
    )
    p.add_argument("--duration", type=_positive_float, help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--dataset", help="FD001..FD004, a C-MAPSS file PATH, or synthetic (default: FD001 when "
                   "$ENGINEHUB_CMAPSS_DIR is set, else synthetic)")  # fmt: skip
    p.add_argument("--cmapss-dir", help="the C-MAPSS directory (default $ENGINEHUB_CMAPSS_DIR)")
    p.add_argument("--payload", choices=PAYLOADS, default="seed", help="seed line (default) or json")
    p.add_argument("--seed", type=int, default=0, help="RNG seed: jitter, faults, synthetic data (0)")
    p.add_argument(
        "--run-id", help="prefix of the message ids (default: random); ids are {run}-{unit}-{cycle}"
    )
    p.add_argument("--json", action="store_true", help="print one JSON summary line last on stdout")
    hub = p.add_argument_group("target hub (default: self-host the local stack)")
    hub.add_argument("--iothub-connection-string", default=os.environ.get(ENV_CS) or None,
                     help=f"HostName=…;SharedAccessKeyName=…;SharedAccessKey=… (or ${ENV_CS})")  # fmt: skip
    hub.add_argument("--group-key", default=os.environ.get(ENV_GROUP_KEY) or None,
                     help=f"base64 group key the device keys derive from (or ${ENV_GROUP_KEY})")  # fmt: skip
    hub.add_argument("--devices-file", help="device connection strings, one a line (instead of a group key)")
    hub.add_argument("--gateway-host", help="host the devices dial (the emulator's 127.0.0.x)")
    hub.add_argument("--ca-cert", help="PEM file to trust (the emulator's CA)")
    run = p.add_argument_group("run")
    run.add_argument(
        "--workers", type=_positive_int, default=1, help="processes to spread the devices over (1)"
    )
    run.add_argument(
        "--stop-at-end",
        action="store_true",
        help="a device stops after its engine's last cycle (default: replace)",
    )
    run.add_argument(
        "--send-timeout", type=_positive_float, default=10.0, help="seconds per send attempt (10)"
    )
    run.add_argument("--jitter", type=_fraction, default=0.2, help="per-send jitter, fraction of the period")
    run.add_argument(
        "--data-dir", help="self-host: where the stack, logs and events.db go (default: a temp dir)"
    )
    run.add_argument(
        "--ingest-wait",
        type=_positive_float,
        default=60.0,
        help="self-host: seconds to wait for the database (60)",
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress on stderr")
    run.add_argument(
        "--commands",
        action="store_true",
        help="engines obey the cloud: direct methods setRate {rate}, pause, resume, maintenance (fresh "
        "engine), getState; desired sendIntervalS / paused; state in reported properties; each command "
        "logged on stderr (off by default: it costs a twin subscription per device)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging (SDK included)")
    faults = p.add_argument_group("faults (all off by default)")
    faults.add_argument(
        "--duplicate-rate", type=_fraction, default=0.0, help="re-send acked messages (same id)"
    )
    faults.add_argument("--malformed-rate", type=_fraction, default=0.0, help="send unparseable bodies")
    faults.add_argument(
        "--disconnect-every", type=_count, default=0, help="each device reconnects every N messages"
    )
    return p


def options_from_args(args: argparse.Namespace) -> app.Options:
    if args.devices_file and args.iothub_connection_string:
        raise app.UsageError("give --devices-file or --iothub-connection-string, not both")
    if args.iothub_connection_string and not args.group_key:
        raise app.UsageError(
            "--iothub-connection-string needs --group-key (the base64 key the device keys derive from) "
            "or use --devices-file"
        )
    for name in ("gateway_host", "ca_cert", "group_key"):
        if getattr(args, name) and not (args.iothub_connection_string or args.devices_file):
            if name == "group_key" and os.environ.get(ENV_GROUP_KEY) == args.group_key:
                continue
            raise app.UsageError(
                f"--{name.replace('_', '-')} needs --iothub-connection-string or --devices-file"
            )
    return app.Options(
        units=args.units,
        rate=args.rate if args.rate is not None else float(args.units),
        duration=args.duration,
        dataset=args.dataset,
        cmapss_dir=args.cmapss_dir,
        payload=args.payload,
        seed=args.seed,
        run_id=args.run_id,
        json=args.json,
        iothub_connection_string=args.iothub_connection_string,
        gateway_host=args.gateway_host,
        ca_cert=args.ca_cert,
        group_key=args.group_key,
        devices_file=args.devices_file,
        workers=args.workers,
        faults=FaultConfig(args.duplicate_rate, args.malformed_rate, args.disconnect_every),
        stop_at_end=args.stop_at_end,
        send_timeout=args.send_timeout,
        jitter=args.jitter,
        data_dir=args.data_dir,
        progress=not args.no_progress,
        ingest_wait=args.ingest_wait,
        verbose=args.verbose,
        commands=args.commands,
    )


def print_summary(outcome: app.Outcome, out) -> None:  # type: ignore[no-untyped-def]
    s = outcome.summary
    print(
        f"simulate: {s['sent']} sent, {s['acked']} acked, {s['failed']} failed in {s['duration_s']:.1f} s "
        f"-> {s['rate_achieved']:.1f} msg/s (target {s['rate_target']:g}, {s['units']} devices, "
        f"dataset {s.get('dataset', '?')}, run {s['run_id']})",
        file=out,
    )
    if s.get("retries") or s.get("reconnects") or s.get("skipped"):
        print(
            f"  retries {s.get('retries', 0)}, timeouts {s.get('timeouts', 0)}, reconnects "
            f"{s.get('reconnects', 0)}, skipped slots {s.get('skipped', 0)}",
            file=out,
        )
    if "db" in s:
        print(f"  ingested {s.get('ingested')} rows into {s['db']} (table enginehub_events)", file=out)
        print(f"  try: sqlite3 {s['db']} '{s['query']}'", file=out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="simulate: %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    logging.getLogger("enginehub.simulator.commands").setLevel(logging.INFO)  # what it was told to do
    try:
        opts = options_from_args(args)
    except app.UsageError as exc:
        print(f"simulate: error: {exc}", file=sys.stderr)
        return app.EXIT_USAGE
    if args.verbose:
        logging.getLogger("enginehub").setLevel(logging.DEBUG)
    need = app.workers_needed(opts.units, opts.workers)
    if need > opts.workers:
        print(
            f"simulate: note: {opts.units} devices need at least {need} worker processes (at most "
            f"{app.MAX_DEVICES_PER_PROCESS} azure-iot-device clients per process: paho's select() limit); "
            f"using --workers {need}",
            file=sys.stderr,
        )
        opts.workers = need
    for w in app.capacity_warnings(opts.rate, opts.workers, os.cpu_count()):
        print(f"simulate: warning: {w}", file=sys.stderr)
    try:
        outcome = asyncio.run(app.run(opts))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        print("simulate: interrupted before the fleet started", file=sys.stderr)
        return app.EXIT_OK
    except Exception as exc:  # one clear line, never a traceback
        LOG.debug("unexpected error", exc_info=True)
        print(f"simulate: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return app.EXIT_INTERNAL
    print_summary(outcome, sys.stderr if opts.json else sys.stdout)
    if outcome.error:
        print(f"simulate: error: {outcome.error}", file=sys.stderr)
    if opts.json:
        print(json.dumps(outcome.summary, sort_keys=True), flush=True)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
