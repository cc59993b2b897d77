"""``harness up``: the whole local stack on loopback — Event Hubs emulator, IoT Hub emulator (telemetry routed
into its built-in hub) and Azurite (when Node and the npm package are present).

Prints exactly ONE JSON line on stdout once everything accepts connections (keys in
docs/architecture.md), then runs until SIGINT/SIGTERM and shuts down cleanly with exit 0.
Exit 1 when something cannot start (port in use, Azurite failing), 2 on bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

DEFAULT_HUB_NAME = "enginehub-local"
CHECKPOINT_CONTAINER = "checkpoints"

EPILOG = """\
JSON keys: eventhubs_connection_string, eventhub_name, iothub_eventhub_connection_string, iothub_hostname,
iothub_gateway_host, iothub_connection_string, device_group_key, ca_cert, storage_connection_string and
checkpoint_container (only when Azurite runs); extras: iothub_service_connection_string, iothub_admin_url,
iothub_port, eventhubs_port, data_dir, iothub_c2d_endpoint (when <host>:5671 could be bound).

The service SDK (azure-iot-hub) reaches the hub with iothub_service_connection_string
(HostName=<gateway host>:<service port>) and REQUESTS_CA_BUNDLE=<ca_cert>; its send_c2d_message (uamqp,
always <host>:5671) trusts the hub with SSL_CERT_FILE=<a bundle holding ca_cert>.

Devices connect with HostName=<iothub_hostname>;DeviceId=<id>;SharedAccessKey=<key>;
GatewayHostName=<iothub_gateway_host> and server_verification_cert=<contents of ca_cert>; any device id
with key base64(HMAC-SHA256(base64decode(device_group_key), device_id)) is accepted.
"""


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the one JSON line (else key: value lines)")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="persistence (partition logs, registry, certs); default a temporary directory removed at exit",
    )
    parser.add_argument(
        "--partitions", type=int, default=4, help="partitions of the built-in hub (default 4)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address of the whole stack (IoT Hub MQTT on 8883, fixed by the SDK, its service API, "
        "Event Hubs, the admin API, Azurite); use 127.0.0.x to run several stacks side by side "
        "(default 127.0.0.1)",
    )
    parser.add_argument(
        "--hub-name",
        default=DEFAULT_HUB_NAME,
        help=f"IoT Hub name: host name <name>.azure-devices.net and the built-in Event Hubs "
        f"hub's name (default {DEFAULT_HUB_NAME})",
    )
    parser.add_argument("--iothub-port", type=int, default=8883, help=argparse.SUPPRESS)
    parser.add_argument(
        "--eventhubs-port",
        type=int,
        default=5672,
        help="AMQP port of the Event Hubs emulator; 0 picks a free port (default 5672)",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=0,
        help="IoT Hub admin HTTP API port on --host; 0 picks a free port (default)",
    )
    parser.add_argument("--log-level", default="WARNING", help="log level on stderr (default WARNING)")


def _validate(args: argparse.Namespace) -> str | None:
    if not 1 <= args.partitions <= 128:
        return f"--partitions must be 1..128, not {args.partitions}"
    import ipaddress

    try:
        ipaddress.ip_address(args.host)
    except ValueError:
        return f"--host must be an IP address (127.0.0.x), not {args.host!r}"
    return None


@dataclass(frozen=True)
class Endpoint:
    """One listening socket of the stack: what it is, where it binds (port 0 = a free port) and the option
    that moves it (None: only --host does)."""

    what: str
    host: str
    port: int
    flag: str | None = None


def plan_endpoints(args: argparse.Namespace) -> dict[str, Endpoint]:
    """Every socket ``harness up`` binds, all on ``--host``: a second stack on another 127.0.0.x never
    collides with the first, whatever the ports."""
    host = args.host
    return {
        "eventhubs": Endpoint("Event Hubs AMQP", host, args.eventhubs_port, "--eventhubs-port"),
        "iothub": Endpoint("IoT Hub MQTT/TLS (devices dial 8883, fixed by the SDK)", host, args.iothub_port),
        "iothub_service": Endpoint("IoT Hub service API (HTTPS)", host, 0),
        "admin": Endpoint("IoT Hub admin API", host, args.admin_port, "--admin-port"),
        "azurite": Endpoint("Azurite blob", host, 0),
    }


def bind_error_message(endpoint: Endpoint, exc: OSError) -> str:
    """The error line for a socket that cannot be bound: the address, the service and the way out."""
    where = f"{endpoint.host}:{endpoint.port}" if endpoint.port else f"a free port on {endpoint.host}"
    if exc.errno == errno.EADDRINUSE:
        way_out = "run this stack on another --host 127.0.0.x"
        if endpoint.flag is not None:
            way_out = f"pass {endpoint.flag} 0 (a free port) or another port, or {way_out}"
        return f"{where} is already in use ({endpoint.what}): {way_out}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot bind {where} ({endpoint.what}): {endpoint.host} is not an address of this machine"
    return f"cannot bind {where} ({endpoint.what}): {exc.strerror or exc}"


async def run_stack(args: argparse.Namespace, *, azurite: bool) -> int:
    from enginehub.harness.bridge import LocalIotHub
    from enginehub.harness.iothub.admin import AdminServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    tmp = None
    if args.data_dir:
        data_dir = Path(args.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="enginehub-up-")
        data_dir = Path(tmp.name)
    plan = plan_endpoints(args)
    stack = LocalIotHub(
        hub_name=args.hub_name,
        partitions=args.partitions,
        host=plan["iothub"].host,
        iothub_port=plan["iothub"].port,
        eventhubs_host=plan["eventhubs"].host,
        eventhubs_port=plan["eventhubs"].port,
        data_dir=str(data_dir),
    )
    admin = AdminServer(stack.iothub, host=plan["admin"].host, port=plan["admin"].port)
    az = None
    started = []
    try:
        try:
            await stack.start()
            started.append(stack)
            await admin.start()
            started.append(admin)
        except OSError as exc:
            failed = plan["admin"] if started else plan[stack.failed_component or "iothub"]
            message = bind_error_message(failed, exc)
            print(f"harness: cannot start the local stack: {message}", file=sys.stderr)  # noqa: T201
            return 1
        info: dict[str, Any] = {
            "eventhubs_connection_string": stack.eventhubs.connection_string,
            "eventhub_name": stack.eventhub_name,
            "iothub_eventhub_connection_string": stack.iothub_eventhub_connection_string,
            "iothub_hostname": stack.iothub.hostname,
            "iothub_gateway_host": stack.iothub.gateway_host,
            "iothub_connection_string": stack.iothub.connection_string,
            "iothub_service_connection_string": stack.iothub.service_connection_string,
            "device_group_key": stack.iothub.registry.group_key,
            "ca_cert": str(stack.iothub.ca_cert_path),
        }
        if azurite:
            from enginehub.harness.providers.azurite import (
                AzuriteServer,
                AzuriteUnavailable,
                find_azurite_blob,
            )

            if find_azurite_blob() is None:
                print(  # noqa: T201
                    "harness: Azurite not found (npm package azurite / Node); running without blob storage",
                    file=sys.stderr,
                )
            else:
                az = AzuriteServer(
                    host=plan["azurite"].host,
                    port=plan["azurite"].port,
                    location=data_dir / "azurite" if args.data_dir else None,
                )
                try:
                    await asyncio.to_thread(az.start)
                    await asyncio.to_thread(az.create_container, CHECKPOINT_CONTAINER)
                except (AzuriteUnavailable, OSError) as exc:
                    print(f"harness: Azurite failed to start: {exc}", file=sys.stderr)  # noqa: T201
                    return 1
                info["storage_connection_string"] = az.connection_string
                info["checkpoint_container"] = CHECKPOINT_CONTAINER
        info.update(
            {
                "iothub_admin_url": admin.url,
                "iothub_port": stack.iothub.port,
                "eventhubs_port": stack.eventhubs.port,
                "data_dir": str(data_dir),
            }
        )
        if stack.iothub.amqp_port is not None:  # cloud-to-device: uamqp always dials <host>:5671
            info["iothub_c2d_endpoint"] = f"amqps://{stack.iothub.host}:{stack.iothub.amqp_port}"
        if args.json:
            sys.stdout.write(json.dumps(info) + "\n")
        else:
            for k, v in info.items():
                sys.stdout.write(f"{k}: {v}\n")
        sys.stdout.flush()
        await stop.wait()
        LOG.info("signal received: shutting down")
        return 0
    finally:
        # signal handlers stay installed until everything is down: a second SIGTERM (e.g. one sent to the
        # whole process group) must not kill us half-way and orphan Azurite
        if az is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(az.stop)
        for thing in reversed(started):
            await thing.stop()
        if tmp is not None:
            tmp.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _run(args: argparse.Namespace, *, azurite: bool) -> int:
    error = _validate(args)
    if error:
        print(f"harness: {error}", file=sys.stderr)  # noqa: T201
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("azure", "paho"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    return asyncio.run(run_stack(args, azurite=azurite))


def main_up(args: argparse.Namespace) -> int:
    return _run(args, azurite=not args.no_azurite)


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "up",
        help="run the local stack: Event Hubs + IoT Hub emulators (+ Azurite)",
        description="Start the Event Hubs emulator, the IoT Hub emulator (telemetry routed into its built-in "
        "hub) and Azurite (when Node is present) on loopback; print one JSON line once all accept "
        "connections; run until SIGINT/SIGTERM.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stack_arguments(parser)
    parser.add_argument("--no-azurite", action="store_true", help="do not start Azurite")
    parser.set_defaults(func=main_up)
    return parser
