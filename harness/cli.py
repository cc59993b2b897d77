"""The ``harness`` command: run the local emulators.

Each service contributes its subcommand through a module with ``register(subparsers)``; a service
that is not importable (a missing optional dependency) is reported in ``--help`` instead of hiding.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand module, what it provides) in help order.
SUBCOMMAND_MODULES = (
    "enginehub.harness.eventhubs.cli",
    "enginehub.harness.iothub.cli",
    "enginehub.harness.up",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Docker-free local emulators of Azure Event Hubs (AMQP 1.0) and IoT Hub (MQTT device "
        "endpoint) that the official Azure SDKs use unmodified.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that service has not landed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
