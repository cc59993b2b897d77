"""``ingest``: one consumer node, Event Hubs -> rules -> sink, checkpointed only after the write.

Run several with the same consumer group and checkpoint store to balance partitions across them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from enginehub.ingest.eventloop import DEFAULT_LOOP, EVENT_LOOPS, loop_factory, run
from enginehub.ingest.metrics import Metrics, MetricsServer
from enginehub.ingest.model import DEFAULT_TABLE, SinkError
from enginehub.ingest.rules import RuleConfigError, load_rules
from enginehub.ingest.sinks.base import open_sink

LOG = logging.getLogger(__name__)

EPILOG = """\
checkpoint store (pick one):
  --checkpoint-store CS --checkpoint-container C   Azure Blob / Azurite (the SDK's BlobCheckpointStore)
  --checkpoint-dir DIR                             local file store, shared by processes on one machine
  neither, with a sqlite sink                      file store in <db file>.checkpoints/
  neither, with a crate sink                       no checkpoints: every start re-reads from
                                                   --starting-position (rows are idempotent by key)

delivery: a batch is checkpointed only after the sink confirmed every row (or dead-lettered it); while the
sink is down the consumer retries with backoff and stops pulling; rows are keyed by message id, else
(partition, sequence number), so redelivery never duplicates a row.

SIGTERM/SIGINT (to the node or to its whole process group): finish the batches in flight, write,
checkpoint, release ownership, exit 0.
exit codes: 0 ok, 1 runtime failure, 2 bad arguments/config, 3 stopped with an unconfirmed batch
(not checkpointed, so nothing lost).

examples:
  ingest --eventhub-connection-string "$EH_CS" --eventhub eh1 --sink sqlite:///enginehub.db
  ingest --eventhub-connection-string "$EH_CS" --eventhub eh1 --sink crate://localhost:4200?schema=doc \\
         --checkpoint-store "$STORAGE_CS" --checkpoint-container checkpoints --metrics-port 9464
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ingest",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--eventhub-connection-string",
        default=os.environ.get("EVENTHUB_CONNECTION_STRING"),
        help="Event Hubs connection string (namespace-level, or with EntityPath); "
        "default $EVENTHUB_CONNECTION_STRING",
    )
    p.add_argument(
        "--sink",
        default="sqlite:///enginehub.db",
        help="sqlite:///path.db | crate://host:4200[?schema=doc][&bulk_size=N] (bulk_size: at most N rows "
        "per CrateDB bulk request; default: one request per table per write)",
    )
    p.add_argument("--eventhub", help="event hub name (not needed when the connection string has EntityPath)")
    p.add_argument("--consumer-group", default="$Default", help="consumer group (default %(default)s)")
    p.add_argument("--checkpoint-store", help="blob storage connection string (Azure or Azurite)")
    p.add_argument("--checkpoint-container", help="blob container for ownership and checkpoints (must exist)")
    p.add_argument("--checkpoint-dir", help="directory of the local file checkpoint store")
    p.add_argument(
        "--table", default=DEFAULT_TABLE, help="target table of the default rule (default %(default)s)"
    )
    p.add_argument(
        "--rules", help="TOML rules file (see enginehub.ingest.rules); default: every event -> --table"
    )
    p.add_argument(
        "--load-balancing-interval",
        type=float,
        default=1.5,
        help="seconds between ownership claims/renewals (SDK default 30; default %(default)s)",
    )
    p.add_argument(
        "--ownership-expiry",
        type=float,
        default=5.0,
        help="seconds after its last renewal that a silent owner's partitions may be taken "
        "(SDK default 180; default %(default)s: a crashed node is replaced within ~7 s)",
    )
    p.add_argument("--owner-id", help="this node's owner id in the checkpoint store (default: a random uuid)")
    p.add_argument(
        "--batch-size", type=int, default=500, help="max events per partition batch (default %(default)s)"
    )
    p.add_argument(
        "--batch-wait",
        type=float,
        default=0.5,
        help="max seconds to wait to fill a batch (default %(default)s)",
    )
    p.add_argument(
        "--prefetch", type=int, default=1000, help="events buffered per partition (default %(default)s)"
    )
    p.add_argument(
        "--lag-interval",
        type=float,
        default=0.0,
        help="> 0: read each owned partition's newest sequence number (the lag metric) every that many "
        "seconds from its properties, instead of the SDK's per-event runtime metric (~4-8 us of CPU per "
        "event); default %(default)s = the runtime metric",
    )
    p.add_argument(
        "--starting-position",
        default="earliest",
        help="where a partition without checkpoint starts: earliest | latest | a sequence number",
    )
    p.add_argument(
        "--checkpoint-interval",
        type=float,
        default=1.0,
        help="min seconds between checkpoints of one partition; always after the write, the newest "
        "confirmed batch wins, and the last one is written on close (0 = every batch; default %(default)s)",
    )
    p.add_argument(
        "--sink-worker",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="apply the rules and write in a child process, so that receiving (the SDK) does not share "
        "a core and a GIL with them (default: on; off for memory:// sinks)",
    )
    p.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=DEFAULT_LOOP,
        help="event loop of the node and its sink worker: uvloop (the SDK spends ~10-15 %% less CPU per "
        "event on it; +9-10 %% events/s end to end), auto (uvloop when installed), asyncio "
        "(default %(default)s)",
    )
    p.add_argument(
        "--silence-warning",
        type=float,
        default=15.0,
        help="warn when an owned partition hears nothing from Event Hubs for this many seconds, not even the "
        "empty batch the SDK delivers every --batch-wait while idle (namespace unreachable; 0 = off; at "
        "least 3 x --batch-wait; default %(default)s)",
    )
    p.add_argument(
        "--reconnect-cap",
        type=float,
        default=2.0,
        help="cap of the capped exponential backoff while Event Hubs refuses connections (0 = the SDK's own "
        "retry, which spins a CPU in azure-eventhub 5.15; default %(default)s)",
    )
    p.add_argument(
        "--lazy-events",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="build the SDK's wrapper of each received event (AmqpAnnotatedMessage) only when something "
        "reads it: the same values, ~17 %% less CPU in the receiving process; --no-lazy-events builds it "
        "for every event, as the SDK does (default: on)",
    )
    p.add_argument("--drain-timeout", type=float, default=30.0, help="max seconds to finish batches on stop")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus text on this port (0 = any free port)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="metrics bind address (default %(default)s)")
    p.add_argument("--log-interval", type=float, default=10.0, help="seconds between progress log lines")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default %(default)s)")
    return p


def _starting_position(text: str) -> str | int:
    if text == "earliest":
        return "-1"
    if text == "latest":
        return "@latest"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--starting-position {text!r}: use earliest, latest or a sequence number") from None


def _checkpoint_store(args: argparse.Namespace, sink_url: str) -> Any:
    if args.checkpoint_store or args.checkpoint_container:
        if not (args.checkpoint_store and args.checkpoint_container):
            raise ValueError("--checkpoint-store and --checkpoint-container go together")
        if args.checkpoint_dir:
            raise ValueError("use either --checkpoint-store/--checkpoint-container or --checkpoint-dir")
        from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

        return BlobCheckpointStore.from_connection_string(args.checkpoint_store, args.checkpoint_container)
    from enginehub.ingest.checkpoint_file import FileCheckpointStore

    if args.checkpoint_dir:
        return FileCheckpointStore(args.checkpoint_dir)
    sink = open_sink(sink_url)
    path = getattr(sink, "path", None)
    if isinstance(path, Path):
        return FileCheckpointStore(path.with_name(path.name + ".checkpoints"))
    LOG.warning("no checkpoint store: no load balancing, every start re-reads from --starting-position")
    return None


async def _amain(args: argparse.Namespace) -> int:
    from azure.eventhub.aio import EventHubConsumerClient

    from enginehub.ingest.consumer import ConsumerOptions, IngestConsumer

    options = ConsumerOptions(
        consumer_group=args.consumer_group,
        batch_size=args.batch_size,
        batch_wait=args.batch_wait,
        prefetch=args.prefetch,
        load_balancing_interval=args.load_balancing_interval,
        ownership_expiry=args.ownership_expiry,
        owner_id=args.owner_id,
        starting_position=_starting_position(args.starting_position),
        drain_timeout=args.drain_timeout,
        checkpoint_interval=args.checkpoint_interval,
        silence_warning=args.silence_warning,
        lag_interval=args.lag_interval,
        reconnect_cap=args.reconnect_cap,
        lazy_events=args.lazy_events,
        sink_threads=1,  # one group-commit writer at a time
    )
    rules = load_rules(args.rules, default_table=args.table)
    sink = open_sink(args.sink)
    store = _checkpoint_store(args, args.sink)
    factory = functools.partial(
        EventHubConsumerClient.from_connection_string,
        args.eventhub_connection_string,
        args.consumer_group,
        eventhub_name=args.eventhub,
    )
    metrics = Metrics()
    worker = None
    if args.sink_worker and not args.sink.startswith("memory:"):
        from enginehub.ingest.worker import WorkerSpec

        worker = WorkerSpec(
            sink_factory=functools.partial(open_sink, args.sink),
            rules_factory=functools.partial(load_rules, args.rules, default_table=args.table),
            retry_initial=options.retry_initial,
            retry_max=options.retry_max,
            max_row_attempts=options.max_row_attempts,
            event_loop=args.event_loop,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
    consumer = IngestConsumer(factory, store, sink, rules, options, metrics, worker=worker)
    loop = asyncio.get_running_loop()
    LOG.info("event loop %s", "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.request_stop)
    server = None
    if args.metrics_port is not None:
        server = MetricsServer(metrics, args.metrics_host, args.metrics_port)
        port = await server.start()
        print(f"metrics on http://{args.metrics_host}:{port}/metrics", file=sys.stderr, flush=True)

    async def progress() -> None:
        while True:
            await asyncio.sleep(args.log_interval)
            metrics.update_rate()
            LOG.info("ingest: %s", metrics.log_line())

    ticker = asyncio.create_task(progress())
    try:
        return await consumer.run()
    finally:
        ticker.cancel()
        if server is not None:
            await server.stop()
        if store is not None and hasattr(store, "close"):
            await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    if not args.eventhub_connection_string:
        parser.error("--eventhub-connection-string is required (or set EVENTHUB_CONNECTION_STRING)")
    if "EntityPath=" not in args.eventhub_connection_string and not args.eventhub:
        parser.error("--eventhub is required when the connection string has no EntityPath")
    try:
        from enginehub.ingest.consumer import ConsumerOptions

        ConsumerOptions(
            batch_size=args.batch_size,
            batch_wait=args.batch_wait,
            prefetch=args.prefetch,
            load_balancing_interval=args.load_balancing_interval,
            ownership_expiry=args.ownership_expiry,
            checkpoint_interval=args.checkpoint_interval,
            silence_warning=args.silence_warning,
            lag_interval=args.lag_interval,
        ).validate()
        _starting_position(args.starting_position)
        load_rules(args.rules, default_table=args.table)
        open_sink(args.sink)
        _checkpoint_store(args, args.sink)
        loop_factory(args.event_loop)
    except (ValueError, RuleConfigError, SinkError) as exc:
        parser.error(str(exc))
    try:
        from enginehub.ingest.consumer import tune_gc

        tune_gc()
        return run(_amain(args), args.event_loop)
    except (SinkError, RuleConfigError, ValueError) as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 1
