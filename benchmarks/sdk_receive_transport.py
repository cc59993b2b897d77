"""The bare SDK's receive cost per event: pyamqp (the SDK's default, pure Python) against uAMQP
(``uamqp_transport=True``, the C AMQP stack), and receive options (batch size, prefetch, event loop, the
lag option), each against pyamqp with the same options in the same round.

    .venv/bin/python benchmarks/sdk_receive_transport.py [--events 200000] [--rounds 2]
        [--transports pyamqp,uamqp] [--batch-sizes 500] [--prefetch 2000] [--event-loops asyncio]
        [--track-lag on|off|off,on] [--json]

One emulator process (plain AMQP for pyamqp, AMQPS for uAMQP, which always speaks TLS: its listener and a
throwaway CA are made here) holds a backlog of ``--events`` load-run bodies over 4 partitions, written
once by the raw producer. Each variant is a fresh process running ``loadtests/baseline.py``'s
``receive_and_discard`` (what the throughput runner's SDK baseline runs: aio ``receive_batch`` on all
partitions, the nodes' GC setting) that reads the whole backlog from the start in its own consumer group
and reports CPU µs per event (process time between its first and last batch) and events/s. The variants
of one round run one after the other, rounds repeat the sequence, so machine noise hits all alike;
``ratio`` is a variant's CPU per event over pyamqp's with the same batch size, prefetch, loop and lag
option in the same round (> 1 = costs more); the option sets themselves compare on the CPU per event of
the pyamqp rows of one round. Prints one line per variant and round, then one JSON line.

Needs the ``uamqp`` package for the uamqp variants (``pip install 'enginehub[uamqp]'``); without it they
are skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)
HUB = "eh1"
PARTITIONS = 4


def _emulator(groups: list[str], certdir: str, out: Any, stop: Any) -> None:
    from enginehub.harness.eventhubs.config import EmulatorConfig
    from enginehub.harness.eventhubs.server import EventHubsEmulator
    from enginehub.harness.iothub.certs import mint

    async def main() -> None:
        cfg = EmulatorConfig.simple(hubs=[HUB], partitions=PARTITIONS, consumer_groups=groups)
        tls = mint().write(Path(certdir))
        async with EventHubsEmulator(cfg, port=0, http_port=None, tls=tls) as emu:
            out.put((emu.connection_string, emu.host, emu.tls_port, str(tls.ca_path)))
            while not stop.is_set():
                await asyncio.sleep(0.2)

    asyncio.run(main())


def _receive(cs: str, group: str, variant: dict[str, Any], tls: tuple[str, int, str], out: Any) -> None:
    from enginehub.harness.eventhubs.server import sdk_tls_kwargs
    from enginehub.ingest.consumer import tune_gc
    from enginehub.ingest.eventloop import run
    from enginehub.loadtests.baseline import receive_and_discard

    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("uamqp").setLevel(logging.WARNING)
    tune_gc()
    kwargs: dict[str, Any] = {}
    if variant["transport"] == "uamqp":
        kwargs = {"uamqp_transport": True, **sdk_tls_kwargs(*tls)}
    result = run(
        receive_and_discard(
            cs,
            HUB,
            group,
            [str(p) for p in range(PARTITIONS)],
            variant["events"],
            variant["timeout"],
            variant["batch"],
            variant["prefetch"],
            variant["track_lag"],
            client_kwargs=kwargs,
        ),
        variant["loop"],
    )
    out.put(result)


def _uamqp_available() -> bool:
    try:
        import uamqp  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="backlog size (all partitions together)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--transports", default="pyamqp,uamqp")
    ap.add_argument("--batch-sizes", default="500", help="comma-separated max_batch_size values")
    ap.add_argument("--prefetch", default="2000", help="comma-separated prefetch values")
    ap.add_argument("--event-loops", default="asyncio", help="comma-separated: asyncio, uvloop")
    ap.add_argument(
        "--track-lag",
        default="on",
        help="comma-separated on/off: track_last_enqueued_event_properties (what the ingest nodes receive "
        "with unless ingest --lag-interval; default %(default)s)",
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a variant may take")
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    transports = [t for t in args.transports.split(",") if t]
    if "uamqp" in transports and not _uamqp_available():
        LOG.warning("uamqp not installed: the uamqp variants are skipped (pip install 'enginehub[uamqp]')")
        transports = [t for t in transports if t != "uamqp"]
    if "pyamqp" not in transports:
        transports.insert(0, "pyamqp")  # the reference of every ratio
    options = list(
        itertools.product(
            [int(b) for b in args.batch_sizes.split(",")],
            [int(p) for p in args.prefetch.split(",")],
            args.event_loops.split(","),
            [x.strip() == "on" for x in args.track_lag.split(",")],
        )
    )
    variants = [
        {
            "transport": t,
            "batch": b,
            "prefetch": p,
            "loop": lp,
            "track_lag": lag,
            "events": args.events,
            "timeout": args.timeout,
        }
        for (b, p, lp, lag) in options
        for t in transports
    ]
    groups = [f"r{r}v{i}" for r in range(args.rounds) for i in range(len(variants))]
    ctx = multiprocessing.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sdk-transport-") as tmp:
        emu = ctx.Process(target=_emulator, args=(groups, tmp, out, stop), daemon=True)
        emu.start()
        try:
            cs, host, tls_port, ca = out.get(timeout=60)
            from enginehub.loadtests.baseline import prefill

            sent = prefill(cs, HUB, PARTITIONS, args.events // PARTITIONS, "bench")
            LOG.info("backlog: %d events in %d partitions", sent, PARTITIONS)
            for r in range(args.rounds):
                for i, v in enumerate(variants):
                    v = dict(v, events=sent)
                    res_q = ctx.Queue()
                    proc = ctx.Process(
                        target=_receive, args=(cs, f"r{r}v{i}", v, (host, tls_port, ca), res_q)
                    )
                    proc.start()
                    res = res_q.get(timeout=args.timeout + 60)
                    proc.join(30)
                    fields = ("transport", "batch", "prefetch", "loop", "track_lag")
                    row = {"round": r, **{k: v[k] for k in fields}, **res}
                    results.append(row)
        finally:
            stop.set()
            emu.join(10)
            if emu.is_alive():
                emu.terminate()

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return (row["round"], row["batch"], row["prefetch"], row["loop"], row["track_lag"])

    ref = {key(r): r for r in results if r["transport"] == "pyamqp"}
    for row in results:
        base = ref.get(key(row))
        cpu, base_cpu = row.get("cpu_us_per_event"), base and base.get("cpu_us_per_event")
        row["ratio"] = round(cpu / base_cpu, 3) if cpu and base_cpu else None
        incomplete = "" if row["events"] >= sent else f"  (only {row['events']} of {sent} events)"
        print(
            f"round {row['round']}  {row['transport']:<6}  batch {row['batch']:>5}  prefetch "
            f"{row['prefetch']:>5}  {row['loop']:<7}  lag {'on ' if row['track_lag'] else 'off'}  "
            f"{row['events_per_s']:>9,.0f} events/s  "
            f"{row['cpu_us_per_event']} CPU-us/event  ratio {row['ratio']}{incomplete}"
        )
    summary: dict[str, Any] = {}
    for row in results:
        lag = "lag" if row["track_lag"] else "nolag"
        name = f"{row['transport']}-b{row['batch']}-p{row['prefetch']}-{row['loop']}-{lag}"
        summary.setdefault(name, {"cpu_us_per_event": [], "ratio": []})
        summary[name]["cpu_us_per_event"].append(row["cpu_us_per_event"])
        summary[name]["ratio"].append(row["ratio"])
    for name, s in summary.items():
        ratios = [x for x in s["ratio"] if x is not None]
        cpus = [x for x in s["cpu_us_per_event"] if x is not None]
        if ratios and cpus:
            print(
                f"{name}: median {statistics.median(cpus):.1f} CPU-us/event, ratio to pyamqp (same options, "
                f"same round) {statistics.median(ratios):.3f}"
            )
    print(json.dumps({"events": sent, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
