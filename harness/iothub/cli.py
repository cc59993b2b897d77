"""``harness iothub``: run the IoT Hub emulator (with its built-in Event Hubs endpoint), or manage a running
one through its admin API (devices, twins, faults).

    harness iothub [--json] [--host 127.0.0.2] ...           serve; prints one JSON line, runs until SIGTERM
    harness iothub device create|list|show|enable|disable|delete ID   --admin URL
    harness iothub twin show|desired ID [JSON]                        --admin URL
    harness iothub fault show|set|reset [--puback-delay S ...]        --admin URL
    harness iothub disconnect-all                                     --admin URL

``--admin`` defaults to $ENGINEHUB_IOTHUB_ADMIN (the ``iothub_admin_url`` printed when serving).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from enginehub.harness.up import EPILOG as STACK_EPILOG
from enginehub.harness.up import _run, add_stack_arguments

SUPPORTED = """\
Supported: MQTT 3.1.1 over TLS 1.2 on port 8883 (azure-iot-device), SAS auth with registry keys (primary or
secondary), group-derived keys and iothubowner/device policy tokens; telemetry (QoS 0/1, property bags,
256 KB limit, PUBACK after the append); twin GET, reported PATCH, desired pushes; one connection per device;
keepalive 1.5x; token expiry; faults (PUBACK delay/drop, close after N, refuse CONNECT, throttle,
disconnect all); the service REST API for azure-iot-hub (iothub_service_connection_string,
REQUESTS_CA_BUNDLE=<ca_cert>): devices, twins, direct methods.
Not supported: modules, X.509 auth, MQTT over WebSockets, cloud-to-device messages, DPS, routing to custom
endpoints.
"""


def _admin_url(args: argparse.Namespace) -> str:
    url = args.admin or os.environ.get("ENGINEHUB_IOTHUB_ADMIN")
    if not url:
        raise SystemExit(
            "harness iothub: pass --admin URL (iothub_admin_url printed by 'harness up/iothub') "
            "or set ENGINEHUB_IOTHUB_ADMIN"
        )
    return url.rstrip("/")


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        _admin_url(args) + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]
        except (ValueError, KeyError, TypeError):
            pass
        print(f"harness iothub: {method} {path}: HTTP {exc.code}: {detail}", file=sys.stderr)
        raise SystemExit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        print(f"harness iothub: cannot reach the admin API at {_admin_url(args)}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    return json.loads(raw) if raw else None


def _print(data: Any) -> int:
    if data is not None:
        print(json.dumps(data, indent=1))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return _run(args, azurite=False)


def cmd_device(args: argparse.Namespace) -> int:
    op, dev = args.op, args.device_id
    if op != "list" and not dev:
        print(f"harness iothub device {op}: a device id is required", file=sys.stderr)
        return 2
    if op == "list":
        return _print(_call(args, "GET", "/devices"))
    if op == "create":
        body = {
            k: v for k, v in (("primaryKey", args.primary_key), ("secondaryKey", args.secondary_key)) if v
        }
        return _print(_call(args, "PUT", f"/devices/{dev}", body))
    if op == "show":
        return _print(_call(args, "GET", f"/devices/{dev}"))
    if op in ("enable", "disable"):
        return _print(_call(args, "PATCH", f"/devices/{dev}", {"status": op + "d"}))
    _call(args, "DELETE", f"/devices/{dev}")
    return 0


def cmd_twin(args: argparse.Namespace) -> int:
    if args.op == "show":
        return _print(_call(args, "GET", f"/devices/{args.device_id}/twin"))
    try:
        patch = json.loads(args.patch or "")
    except ValueError as exc:
        print(f"harness iothub twin desired: PATCH must be a JSON object: {exc}", file=sys.stderr)
        return 2
    return _print(_call(args, "PATCH", f"/devices/{args.device_id}/twin/desired", patch))


def cmd_fault(args: argparse.Namespace) -> int:
    if args.op == "show":
        return _print(_call(args, "GET", "/faults"))
    if args.op == "reset":
        return _print(_call(args, "DELETE", "/faults"))
    values: dict[str, Any] = {}
    if args.puback_delay is not None:
        values["puback_delay_s"] = args.puback_delay
    if args.drop_pubacks is not None:
        values["drop_pubacks"] = args.drop_pubacks
    if args.close_after is not None:
        values["close_after_publishes"] = args.close_after or None
    if args.refuse_connect is not None:
        values["refuse_connect"] = args.refuse_connect or None
    if args.refuse_count is not None:
        values["refuse_connect_count"] = args.refuse_count or None
    if args.throttle is not None:
        values["throttle_per_s"] = args.throttle or None
    if args.enforce_expiry is not None:
        values["enforce_token_expiry"] = args.enforce_expiry == "on"
    if not values:
        print("harness iothub fault set: give at least one option (see --help)", file=sys.stderr)
        return 2
    return _print(_call(args, "PATCH", "/faults", values))


def cmd_disconnect_all(args: argparse.Namespace) -> int:
    return _print(_call(args, "POST", "/disconnect-all"))


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "iothub",
        help="run the IoT Hub emulator (MQTT device endpoint) alone, or manage a running one",
        description="Local Azure IoT Hub: the MQTT 3.1.1/TLS device endpoint azure-iot-device connects to, "
        "with telemetry routed into an in-process Event Hubs emulator (its built-in endpoint). Without an "
        "action it serves.",
        epilog=STACK_EPILOG + "\n" + SUPPORTED,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_stack_arguments(parser)
    parser.set_defaults(func=cmd_serve)
    actions = parser.add_subparsers(dest="iothub_action", metavar="ACTION")

    def admin_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--admin", metavar="URL", help="admin API URL (default $ENGINEHUB_IOTHUB_ADMIN)")

    dev = actions.add_parser("device", help="create/list/show/enable/disable/delete devices")
    dev.add_argument("op", choices=["create", "list", "show", "enable", "disable", "delete"])
    dev.add_argument("device_id", nargs="?")
    dev.add_argument("--primary-key", help="base64 key (default: generated)")
    dev.add_argument("--secondary-key", help="base64 key (default: generated)")
    admin_opt(dev)
    dev.set_defaults(func=cmd_device)

    twin = actions.add_parser("twin", help="show a twin or push a desired-properties patch")
    twin.add_argument("op", choices=["show", "desired"])
    twin.add_argument("device_id")
    twin.add_argument("patch", nargs="?", help="JSON object (desired)")
    admin_opt(twin)
    twin.set_defaults(func=cmd_twin)

    fault = actions.add_parser("fault", help="show/set/reset fault injection")
    fault.add_argument("op", choices=["show", "set", "reset"])
    fault.add_argument("--puback-delay", type=float, metavar="S", help="delay every PUBACK by S seconds")
    fault.add_argument("--drop-pubacks", type=int, metavar="N", help="drop the next N PUBACKs")
    fault.add_argument(
        "--close-after",
        type=int,
        metavar="N",
        help="after N more appends close the connection instead of the PUBACK (DUP re-send); 0 off",
    )
    fault.add_argument(
        "--refuse-connect",
        type=int,
        choices=[0, 1, 2, 3, 4, 5],
        metavar="CODE",
        help="refuse CONNECTs with this CONNACK code (3 = retried, 5 = fatal); 0 off",
    )
    fault.add_argument(
        "--refuse-count", type=int, metavar="N", help="refuse only N CONNECTs; 0 = until reset"
    )
    fault.add_argument(
        "--throttle",
        type=float,
        metavar="PER_S",
        help="hub-wide telemetry rate (S1 unit: 100); excess waits for its PUBACK; 0 off",
    )
    fault.add_argument("--enforce-expiry", choices=["on", "off"], help="close connections at token expiry")
    admin_opt(fault)
    fault.set_defaults(func=cmd_fault)

    dis = actions.add_parser("disconnect-all", help="drop every device connection at once (restart storm)")
    admin_opt(dis)
    dis.set_defaults(func=cmd_disconnect_all)
    return parser
