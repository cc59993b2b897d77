"""The IoT Hub service endpoint over AMQPS: cloud-to-device sends from ``azure-iot-hub``.

``IoTHubRegistryManager.send_c2d_message`` goes through uamqp: it dials ``<HostName host>:5671`` (the port
is fixed by uamqp; the ``:port`` of ``HostName`` is ignored), TLS trusting certifi's bundle and OpenSSL's
default paths (so ``SSL_CERT_FILE`` = a bundle holding the emulator's CA), SASL MSSBCBS, then a ``$cbs``
put-token (``type=servicebus.windows.net:sastoken``, ``name=https://<HostName>``, the token a policy SAS
over ``<HostName>``), then a sender link to ``amqps://<HostName>/messages/devicebound``. Each message has
``properties.to = /devices/{id}/messages/devicebound``; the hub settles it accepted once it is queued.

Outcomes (the SDK raises ``Exception("C2D message send failure")`` on any rejection):

- put-token with a device token, an unknown policy, a bad signature, an expired token or a policy
  without ServiceConnect: status 401 (uamqp raises ``AuthenticationException``);
- a link to ``/messages/devicebound`` before a valid put-token: refused, ``amqp:unauthorized-access``;
- unknown device: rejected ``amqp:not-found``; full queue (50): rejected
  ``amqp:resource-limit-exceeded`` (``DeviceMaximumQueueDepthExceeded``); no or bad ``to``: rejected
  ``amqp:invalid-field``; a message over 64 KB: the link is detached ``message-size-exceeded``.

LIMITATIONS: no feedback (``/messages/servicebound/feedback``, which the registry manager never opens),
no file-upload notifications, no AMQP over WebSockets (443), queues kept in memory only.
"""

from __future__ import annotations

import collections
import datetime
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from enginehub.harness.amqp.codec import Symbol
from enginehub.harness.amqp.connection import AMQPConnection, ConnectionHandler, Delivery, Link
from enginehub.harness.amqp.errors import CodecError, Condition, LinkError
from enginehub.harness.amqp.message import Message, decode_message
from enginehub.harness.amqp.performatives import Accepted, Error, Rejected
from enginehub.harness.eventhubs import cbs
from enginehub.harness.iothub import auth
from enginehub.harness.iothub.errors import AuthError, DeviceNotFound, QueueDepthExceeded
from enginehub.harness.iothub.state import POLICY_RIGHTS, C2DMessage

if TYPE_CHECKING:
    from enginehub.harness.iothub.server import IotHubEmulator

LOG = logging.getLogger(__name__)

AMQPS_PORT = 5671  # fixed by uamqp (azure-iot-hub passes no port)
CONTAINER_ID = "enginehub-iothub"
#: uamqp offers MSSBCBS (the Microsoft "claims-based security" SASL mechanism: no credentials in SASL,
#: the token follows on $cbs); other AMQP clients use ANONYMOUS
SASL_MECHANISMS = ("MSSBCBS", "ANONYMOUS")
C2D_MAX_MESSAGE_BYTES = 64 * 1024  # the hub's cloud-to-device size limit
_ACCEPTED = Accepted()
_PROPERTY_KEYS = (
    ("message_id", "$.mid"),
    ("correlation_id", "$.cid"),
    ("content_type", "$.ct"),
    ("content_encoding", "$.ce"),
    ("user_id", "$.uid"),
)


def _reject(condition: Condition, description: str) -> Rejected:
    return Rejected(Error(Symbol(condition.value), description, None))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def device_of(to: Any) -> str:
    """The device id in ``/devices/{id}/messages/devicebound``; ValueError otherwise."""
    parts = _text(to).strip("/").split("/") if to is not None else []
    if (
        len(parts) != 4
        or parts[0] != "devices"
        or [p.lower() for p in parts[2:]] != ["messages", "devicebound"]
    ):
        raise ValueError(f"'to' must be /devices/{{id}}/messages/devicebound, not {to!r}")
    return unquote(parts[1])


def c2d_message(msg: Message, now: float, default_ttl_s: float) -> C2DMessage:
    """The queued form of a decoded AMQP cloud-to-device message (ValueError when ``to`` is wrong)."""
    p = msg.properties
    device_id = device_of(getattr(p, "to", None))
    props: dict[str, str] = {}
    for name, key in _PROPERTY_KEYS:
        value = getattr(p, name, None)
        if value is not None:
            props[key] = _text(value)
    props["$.to"] = f"/devices/{device_id}/messages/devicebound"
    expiry = now + default_ttl_s
    exp = getattr(p, "absolute_expiry_time", None)
    if isinstance(exp, datetime.datetime):
        exp = int(exp.timestamp() * 1000)
    if isinstance(exp, int) and exp > 0:
        expiry = exp / 1000
        when = datetime.datetime.fromtimestamp(expiry, datetime.UTC)
        props["$.exp"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if msg.data:
        body = b"".join(msg.data)
    elif msg.has_value and msg.value is not None:
        body = msg.value if isinstance(msg.value, bytes) else _text(msg.value).encode("utf-8")
    else:
        body = b""
    app = {_text(k): (None if v is None else _text(v)) for k, v in (msg.application_properties or {}).items()}
    return C2DMessage(device_id, body, props, app, now, expiry)


class ServiceAmqpHandler(ConnectionHandler):
    """One service connection: ``$cbs`` put-token, then ``/messages/devicebound`` sender links."""

    def __init__(self, hub: IotHubEmulator) -> None:
        self.hub = hub
        self.conn: AMQPConnection | None = None
        self.policy: str | None = None  # the policy of the accepted put-token
        self._reply_links: dict[int, Link] = {}  # id(session) -> our $cbs sender link
        self._reply_queue: dict[int, collections.deque[bytes]] = {}

    def connection_made(self, conn: AMQPConnection) -> None:
        self.conn = conn
        self.hub._amqp_conns.add(conn)

    def on_close(self) -> None:
        if self.conn is not None:
            self.hub._amqp_conns.discard(self.conn)

    def on_attach(self, link: Link) -> None:
        terminus = link.source if link.is_sender else link.target
        address = getattr(terminus, "address", None)
        if not isinstance(address, str) or not address:
            raise LinkError(Condition.NOT_FOUND, "The link has no source/target address.")
        segments = cbs.path_segments(address)
        if segments == ["$cbs"]:
            link.app = "$cbs"
            if link.is_sender:
                self._reply_links[id(link.session)] = link
                self._reply_queue[id(link)] = collections.deque()
            else:
                link.max_message_size = 1 << 16
            return
        if segments == ["messages", "devicebound"] and not link.is_sender:
            if self.policy is None:
                raise LinkError(
                    Condition.UNAUTHORIZED_ACCESS,
                    f"Unauthorized access to '{address}': send a $cbs put-token with a ServiceConnect "
                    "policy token first.",
                )
            link.app = "devicebound"
            link.max_message_size = C2D_MAX_MESSAGE_BYTES
            return
        if segments[:2] == ["messages", "servicebound"]:
            raise LinkError(
                Condition.NOT_IMPLEMENTED,
                f"'{address}' (feedback / file notifications) is not supported by the enginehub emulator.",
            )
        raise LinkError(Condition.NOT_FOUND, f"The messaging entity '{address}' could not be found.")

    def on_detach(self, link: Link, error: Error | None) -> None:
        if link.app == "$cbs" and link.is_sender:
            if self._reply_links.get(id(link.session)) is link:
                del self._reply_links[id(link.session)]
            self._reply_queue.pop(id(link), None)

    def on_credit(self, link: Link) -> None:
        queue = self._reply_queue.get(id(link))
        if queue is None:
            return
        while queue and link.can_send:
            link.send(queue.popleft())
        if not queue:
            link.finish_drain()

    def on_message(self, link: Link, delivery: Delivery) -> Any:
        try:
            msg = decode_message(delivery.payload)
        except CodecError as exc:
            return _reject(Condition.DECODE_ERROR, f"Invalid message: {exc}")
        if link.app == "$cbs":
            self._put_token(link, msg)
            return _ACCEPTED
        if link.app == "devicebound":
            return self._send(msg)
        return _reject(Condition.NOT_ALLOWED, "This link does not accept messages.")

    def _put_token(self, link: Link, msg: Message) -> None:
        props = msg.application_properties or {}
        request_id = msg.properties.message_id if msg.properties is not None else None
        token = msg.value.decode("utf-8", "replace") if isinstance(msg.value, bytes) else msg.value
        status, description = 202, "Accepted"
        if props.get("operation") != "put-token":
            status, description = 400, f"Unsupported $cbs operation {props.get('operation')!r}."
        elif props.get("type") != cbs.SAS_TOKEN_TYPE:
            status, description = 401, f"Token type {props.get('type')!r} is not supported; use a SAS token."
        elif not isinstance(token, str):
            status, description = 401, "MalformedToken: the token must be an amqp-value string."
        else:
            hub = self.hub
            try:
                sas = auth.check_service_token(
                    token,
                    hub.service_hostnames(),
                    hub.registry.policies,
                    POLICY_RIGHTS,
                    ("ServiceConnect",),
                    hub.clock(),
                )
                self.policy = sas.skn
            except AuthError as exc:
                hub.metrics.service_auth_failures += 1
                LOG.info("C2D put-token refused: %s", exc)
                status, description = 401, f"IotHubUnauthorizedAccess: {exc}"
        self._reply(link, cbs.response(request_id, status, description))

    def _reply(self, link: Link, reply: bytes) -> None:
        out = self._reply_links.get(id(link.session))
        if out is None:
            LOG.info("$cbs request without a reply link on the same session; reply dropped")
            return
        queue = self._reply_queue[id(out)]
        if queue or not out.can_send:
            queue.append(reply)
        else:
            out.send(reply)

    def _send(self, msg: Message) -> Any:
        hub = self.hub
        try:
            c2d = c2d_message(msg, hub.clock(), hub.c2d.default_ttl_s)
        except ValueError as exc:
            hub.metrics.c2d_rejected += 1
            return _reject(Condition.INVALID_FIELD, str(exc))
        try:
            hub.send_c2d(c2d)
        except DeviceNotFound as exc:
            hub.metrics.c2d_rejected += 1
            return _reject(Condition.NOT_FOUND, f"DeviceNotFound: {exc}")
        except QueueDepthExceeded as exc:
            return _reject(Condition.RESOURCE_LIMIT_EXCEEDED, f"{exc.error_code}: {exc}")
        return _ACCEPTED
