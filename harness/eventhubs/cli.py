"""``harness eventhubs``: run the Event Hubs emulator alone.

Prints exactly one JSON line on stdout once it accepts connections, then serves until SIGINT/SIGTERM
(clean shutdown, exit 0). Exit 2 on a bad option or config file, 1 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

LOG = logging.getLogger(__name__)

EPILOG = """\
The JSON line has: eventhubs_connection_string (namespace level, UseDevelopmentEmulator=true),
eventhub_name (the first hub), eventhub_names, eventhub_connection_strings ({hub: connection string with
EntityPath}), namespace, host, port, health_url, data_dir.

Examples:
  harness eventhubs --port 0 --hub telemetry --partitions 8
  harness eventhubs --config Config.json --data-dir ./eh-data --policy RootManageSharedAccessKey=secret
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eventhubs",
        help="run the Event Hubs emulator (AMQP 1.0) alone",
        description="Docker-free Azure Event Hubs emulator: an AMQP 1.0 server that the official "
        "azure-eventhub SDKs use unmodified (connection string with UseDevelopmentEmulator=true).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback)")
    parser.add_argument(
        "--port", type=int, default=5672, help="AMQP port; 0 picks a free port (default 5672, like the SDK's)"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=5300,
        help="port of GET /health (Microsoft's emulator uses 5300); 0 picks a free port, -1 disables it",
    )
    parser.add_argument(
        "--config",
        metavar="Config.json",
        help="Microsoft's Event Hubs emulator Config.json, used unchanged (namespace, hubs, partition "
        "counts, consumer groups) plus our optional 'Enginehub' section; --hub/--partitions are ignored",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="persist partition logs here (survive restarts and kill -9); default: in memory only",
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partitions per hub without --config (default 4)"
    )
    parser.add_argument(
        "--hub",
        action="append",
        metavar="NAME",
        help="event hub to create (repeat for several; default eh1) without --config",
    )
    parser.add_argument(
        "--consumer-group",
        action="append",
        metavar="NAME",
        default=[],
        help="extra consumer group on every hub (repeatable; $Default always exists)",
    )
    parser.add_argument(
        "--policy",
        action="append",
        metavar="NAME=KEY",
        default=[],
        help="shared access policy and key (repeatable); default RootManageSharedAccessKey with a random key",
    )
    parser.add_argument(
        "--max-message-size", type=int, help="max event/batch size in bytes (default 1048576, like Standard)"
    )
    parser.add_argument(
        "--retention-seconds", type=float, help="drop events older than this (default: keep everything)"
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level on stderr (default WARNING)")
    parser.set_defaults(func=run)
    return parser


def build_config(args: argparse.Namespace) -> Any:
    from enginehub.harness.eventhubs.config import EmulatorConfig, load_config

    overrides: dict[str, Any] = {}
    if args.policy:
        policies = {}
        for item in args.policy:
            name, sep, key = item.partition("=")
            if not sep or not name or not key:
                raise ValueError(f"--policy expects NAME=KEY, got {item!r}")
            policies[name] = key
        overrides["policies"] = policies
    if args.max_message_size is not None:
        overrides["max_message_size"] = args.max_message_size
    if args.retention_seconds is not None:
        overrides["retention_seconds"] = args.retention_seconds
    if args.config:
        return load_config(args.config, **overrides)
    return EmulatorConfig.simple(
        hubs=args.hub or ["eh1"],
        partitions=args.partitions,
        consumer_groups=args.consumer_group,
        **overrides,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    from enginehub.harness.eventhubs.config import ConfigError

    try:
        config = build_config(args)
    except (ConfigError, ValueError) as exc:
        print(f"harness eventhubs: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(config, args))
    except KeyboardInterrupt:
        return 0


async def _serve(config: Any, args: argparse.Namespace) -> int:
    from enginehub.harness.eventhubs.server import EventHubsEmulator

    http_port = None if args.http_port is not None and args.http_port < 0 else args.http_port
    emulator = EventHubsEmulator(
        config, data_dir=args.data_dir, host=args.host, port=args.port, http_port=http_port
    )
    try:
        await emulator.start()
    except OSError as exc:
        print(
            f"harness eventhubs: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # a storage error (data dir locked, unreadable) is reported, not a traceback
        print(f"harness eventhubs: cannot start: {exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    line = {
        "eventhubs_connection_string": emulator.connection_string,
        "eventhub_name": emulator.hubs[0],
        "eventhub_names": emulator.hubs,
        "eventhub_connection_strings": {h: emulator.connection_string_for(h) for h in emulator.hubs},
        "namespace": config.namespace,
        "host": emulator.host,
        "port": emulator.port,
        "health_url": f"http://{emulator.host}:{emulator.http_port}/health" if emulator.http_port else None,
        "data_dir": str(args.data_dir) if args.data_dir else None,
    }
    print(json.dumps(line), flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()
    return 0
