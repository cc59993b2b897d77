"""``harness iothub``: run the IoT Hub emulator (with its built-in Event Hubs endpoint), or manage a running
one through its admin API (devices, twins, direct methods, cloud-to-device messages, faults).

    harness iothub [--json] [--host 127.0.0.2] ...           serve; prints one JSON line, runs until SIGTERM
    harness iothub device create|list|show|enable|disable|delete ID   --admin URL
    harness iothub twin show|desired ID [JSON]                        --admin URL
    harness iothub method ID NAME [--payload JSON] [--timeout S]      --admin URL
    harness iothub c2d send ID BODY [--property K=V ...]              --admin URL
    harness iothub c2d queue ID                                       --admin URL
    harness iothub fault show|set|reset [--puback-delay S ...]        --admin URL
    harness iothub disconnect-all                                     --admin URL

``--admin`` defaults to $ENGINEHUB_IOTHUB_ADMIN (the ``iothub_admin_url`` printed when serving). Results
are JSON on stdout (indented; ``--json``: one line); errors go to stderr with exit 1 (the hub refused or
is unreachable) or 2 (bad arguments). ``method`` exits 0 when the device answered, whatever its status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from enginehub.harness.up import EPILOG as STACK_EPILOG
from enginehub.harness.up import _run, add_stack_arguments

SUPPORTED = """\
Supported: MQTT 3.1.1 over TLS 1.2 on port 8883 (azure-iot-device), SAS auth with registry keys (primary or
secondary), group-derived keys and iothubowner/device policy tokens; telemetry (QoS 0/1, property bags,
256 KB limit, PUBACK after the append); twin GET, reported PATCH, desired pushes; one connection per device;
keepalive 1.5x; token expiry; faults (PUBACK delay/drop, close after N, refuse CONNECT, throttle,
disconnect all); the service REST API for azure-iot-hub (iothub_service_connection_string,
REQUESTS_CA_BUNDLE=<ca_cert>): devices, twins, direct methods; cloud-to-device messages from
send_c2d_message over AMQPS on <host>:5671 (SSL_CERT_FILE=<bundle with ca_cert>), delivered on
devices/{id}/messages/devicebound/# (queue of 50 per device, TTL 1 h, at-least-once).
Not supported: modules, X.509 auth, MQTT over WebSockets, C2D feedback, DPS, routing to custom endpoints.
"""


def _admin_url(args: argparse.Namespace) -> str:
    url = args.admin or os.environ.get("ENGINEHUB_IOTHUB_ADMIN")
    if not url:
        raise SystemExit(
            "harness iothub: pass --admin URL (iothub_admin_url printed by 'harness up/iothub') "
            "or set ENGINEHUB_IOTHUB_ADMIN"
        )
    return url.rstrip("/")


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None, *, timeout: float = 10) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        _admin_url(args) + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
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


def _print(args: argparse.Namespace, data: Any) -> int:
    if data is not None:
        print(json.dumps(data) if getattr(args, "json", False) else json.dumps(data, indent=1))
    return 0


def _json_arg(text: str | None, what: str) -> tuple[bool, Any]:
    """(ok, value) of a JSON command-line argument; prints the error when it does not parse."""
    if text is None:
        return True, None
    try:
        return True, json.loads(text)
    except ValueError as exc:
        print(f"harness iothub {what}: not JSON ({exc}); quote it, e.g. '{{\"rate\": 2}}'", file=sys.stderr)
        return False, None


def cmd_serve(args: argparse.Namespace) -> int:
    return _run(args, azurite=False)


def cmd_device(args: argparse.Namespace) -> int:
    op, dev = args.op, args.device_id
    if op != "list" and not dev:
        print(f"harness iothub device {op}: a device id is required", file=sys.stderr)
        return 2
    if op == "list":
        return _print(args, _call(args, "GET", "/devices"))
    if op == "create":
        body = {
            k: v for k, v in (("primaryKey", args.primary_key), ("secondaryKey", args.secondary_key)) if v
        }
        return _print(args, _call(args, "PUT", f"/devices/{dev}", body))
    if op == "show":
        return _print(args, _call(args, "GET", f"/devices/{dev}"))
    if op in ("enable", "disable"):
        return _print(args, _call(args, "PATCH", f"/devices/{dev}", {"status": op + "d"}))
    _call(args, "DELETE", f"/devices/{dev}")
    return 0


def cmd_twin(args: argparse.Namespace) -> int:
    if args.op == "show":
        return _print(args, _call(args, "GET", f"/devices/{args.device_id}/twin"))
    try:
        patch = json.loads(args.patch or "")
    except ValueError as exc:
        print(f"harness iothub twin desired: PATCH must be a JSON object: {exc}", file=sys.stderr)
        return 2
    return _print(args, _call(args, "PATCH", f"/devices/{args.device_id}/twin/desired", patch))


def cmd_method(args: argparse.Namespace) -> int:
    ok, payload = _json_arg(args.payload, "method --payload")
    if not ok:
        return 2
    body: dict[str, Any] = {"payload": payload, "responseTimeoutInSeconds": args.timeout}
    if args.connect_timeout:
        body["connectTimeoutInSeconds"] = args.connect_timeout
    path = f"/devices/{quote(args.device_id, safe='')}/methods/{quote(args.method_name, safe='')}"
    wait = args.timeout + args.connect_timeout + 10  # the hub answers 504 first
    return _print(args, _call(args, "POST", path, body, timeout=wait))


def cmd_c2d(args: argparse.Namespace) -> int:
    path = f"/devices/{quote(args.device_id, safe='')}/messages"
    if args.op == "queue":
        return _print(args, _call(args, "GET", path))
    if args.body is None:
        print("harness iothub c2d send: BODY is required (the message text)", file=sys.stderr)
        return 2
    props: dict[str, str] = {}
    for item in args.property or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"harness iothub c2d send: --property {item!r} is not KEY=VALUE", file=sys.stderr)
            return 2
        props[key] = value
    body: dict[str, Any] = {"body": args.body, "properties": props}
    for key, value in (
        ("messageId", args.message_id),
        ("correlationId", args.correlation_id),
        ("contentType", args.content_type),
        ("contentEncoding", args.content_encoding),
        ("ttlSeconds", args.ttl),
    ):
        if value is not None:
            body[key] = value
    return _print(args, _call(args, "POST", path, body))


def cmd_fault(args: argparse.Namespace) -> int:
    if args.op == "show":
        return _print(args, _call(args, "GET", "/faults"))
    if args.op == "reset":
        return _print(args, _call(args, "DELETE", "/faults"))
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
    return _print(args, _call(args, "PATCH", "/faults", values))


def cmd_disconnect_all(args: argparse.Namespace) -> int:
    return _print(args, _call(args, "POST", "/disconnect-all"))


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
        p.add_argument("--json", action="store_true", help="print the result as one JSON line")

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

    method = actions.add_parser(
        "method",
        help="invoke a direct method on a connected device and print its answer",
        description="Invoke a direct method, as the service SDK's invoke_device_method does: the hub "
        "publishes the request on $iothub/methods/POST/NAME/ and waits for the device's response. Prints "
        '{"status": <the device\'s status>, "payload": <its JSON answer>}. Exit 1 with the hub\'s error '
        "when the device is unknown, not connected / not subscribed to methods (404) or does not answer "
        "within --timeout (504).",
        epilog="example: harness iothub method engine-0001 setRate --payload '{\"rate\": 2}'",
    )
    method.add_argument("device_id", metavar="ID")
    method.add_argument("method_name", metavar="NAME", help="method name, e.g. setRate, pause, maintenance")
    method.add_argument("--payload", metavar="JSON", help="request payload as JSON (default null)")
    method.add_argument(
        "--timeout", type=float, default=30, metavar="S", help="response timeout, 1..300 s (default 30)"
    )
    method.add_argument(
        "--connect-timeout",
        type=float,
        default=0,
        metavar="S",
        help="wait up to S s for the device to come online first (default 0: fail at once)",
    )
    admin_opt(method)
    method.set_defaults(func=cmd_method)

    c2d = actions.add_parser(
        "c2d",
        help="send a cloud-to-device message, or show a device's C2D queue",
        description="send: queue a cloud-to-device message for the device (as send_c2d_message does); a "
        "connected device subscribed to devices/ID/messages/devicebound/# gets it at once, an offline one "
        "when it connects (at least once; the queue holds 50, messages expire after --ttl). Prints "
        '{"messageId", "queued": <queue depth>, "sentToDevice": <published at once>}. queue: list the '
        "messages waiting (nothing is delivered or removed).",
        epilog="example: harness iothub c2d send engine-0001 'reboot' --property reason=test",
    )
    c2d.add_argument("op", choices=["send", "queue"])
    c2d.add_argument("device_id", metavar="ID")
    c2d.add_argument("body", nargs="?", metavar="BODY", help="message text (send)")
    c2d.add_argument(
        "--property", action="append", metavar="KEY=VALUE", help="application property (repeatable)"
    )
    c2d.add_argument("--message-id", help="message id (default: a new UUID)")
    c2d.add_argument("--correlation-id")
    c2d.add_argument("--content-type", help="e.g. application/json")
    c2d.add_argument("--content-encoding", help="e.g. utf-8")
    c2d.add_argument(
        "--ttl", type=float, metavar="S", help="time to live in seconds (default 3600, max 48 h)"
    )
    admin_opt(c2d)
    c2d.set_defaults(func=cmd_c2d)

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
