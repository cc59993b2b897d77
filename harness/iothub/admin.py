"""Small local admin HTTP API of the IoT Hub emulator (aiohttp, loopback only). JSON in, JSON out.

    GET    /health                      {"status": "ok"}
    GET    /info                        hostname, gateway host, CA path, group key, owner connection string
    GET    /devices                     list of devices (with keys and connection strings)
    PUT    /devices/{id}                create: {"primaryKey"?, "secondaryKey"?, "status"?} -> 201
    GET    /devices/{id}                one device
    PATCH  /devices/{id}                {"status": "enabled"|"disabled", "statusReason"?}; disable disconnects
    DELETE /devices/{id}                204; disconnects the device
    GET    /devices/{id}/twin           the twin document
    PATCH  /devices/{id}/twin/desired   desired-properties patch, pushed to the device -> {"version": n}
    POST   /devices/{id}/methods/{name} direct method: {"payload"?, "responseTimeoutInSeconds"?,
                                        "connectTimeoutInSeconds"?} -> {"status", "payload"}; 404 when
                                        the device is not online, 504 when it does not answer in time
    POST   /devices/{id}/messages       queue a cloud-to-device message: {"body": str, "properties"?: {k: v},
                                        "messageId"?, "correlationId"?, "contentType"?, "contentEncoding"?,
                                        "ttlSeconds"?} -> 201 {"messageId", "queued", "sentToDevice"}
    GET    /devices/{id}/messages       the device's C2D queue (peek: nothing is delivered or removed)
    GET    /faults                      fault switches
    PATCH  /faults                      update fault switches (see state.Faults); unknown names -> 400
    DELETE /faults                      reset all faults
    POST   /disconnect-all              drop every device connection (restart storm) -> {"disconnected": n}
    GET    /metrics                     hub and per-device counters

Errors are ``{"error": "..."}`` with 400 (bad input), 404 (no such device, device not online), 403 (C2D queue
full), 409 (exists) or 504 (method timeout).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from aiohttp import web

from enginehub.harness.iothub.errors import AuthError, RegistryError
from enginehub.harness.iothub.server import IotHubEmulator
from enginehub.harness.iothub.service import method_timeouts
from enginehub.harness.iothub.state import C2DMessage

LOG = logging.getLogger(__name__)

#: the fields of POST /devices/{id}/messages (in the order the unknown-field error lists them)
C2D_FIELDS = (
    "body",
    "contentEncoding",
    "contentType",
    "correlationId",
    "messageId",
    "properties",
    "ttlSeconds",
)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


async def _body(
    request: web.Request, *, required: bool = False, known: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The request's JSON object ({} when empty and not ``required``); 400 for a field not in ``known``."""
    raw = await request.read()
    if not raw:
        if required:
            raise RegistryError("a JSON object body is required")
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RegistryError("body must be a JSON object")
    unknown = set() if known is None else set(data) - set(known)
    if unknown:
        raise RegistryError(f"unknown field(s) {sorted(unknown)}; known: {', '.join(known or ())}")
    return data


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as exc:
        return _error(exc.status, str(exc))
    except AuthError as exc:
        return _error(400, str(exc))


class AdminServer:
    """The admin API of one :class:`IotHubEmulator`; ``start()`` binds ``host:port`` (0 = free port)."""

    def __init__(self, hub: IotHubEmulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        app = web.Application(middlewares=[_errors])
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/info", self.info)
        r.add_get("/devices", self.list_devices)
        r.add_put("/devices/{id}", self.create_device)
        r.add_get("/devices/{id}", self.get_device)
        r.add_patch("/devices/{id}", self.update_device)
        r.add_delete("/devices/{id}", self.delete_device)
        r.add_get("/devices/{id}/twin", self.get_twin)
        r.add_patch("/devices/{id}/twin/desired", self.patch_desired)
        r.add_post("/devices/{id}/methods/{name}", self.invoke_method)
        r.add_post("/devices/{id}/messages", self.send_c2d)
        r.add_get("/devices/{id}/messages", self.peek_c2d)
        r.add_get("/faults", self.get_faults)
        r.add_patch("/faults", self.patch_faults)
        r.add_delete("/faults", self.reset_faults)
        r.add_post("/disconnect-all", self.disconnect_all)
        r.add_get("/metrics", self.metrics)
        self.app = app

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> AdminServer:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:  # type: ignore[union-attr]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        LOG.info("IoT Hub admin API on %s", self.url)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers --------------------------------------------------------------------------------

    def _device_json(self, device_id: str) -> dict[str, Any]:
        dev = self.hub.registry.get(device_id)
        d = dev.to_dict()
        key = dev.primary_key or self.hub.registry.derived_key(device_id)
        d["connectionString"] = (
            f"HostName={self.hub.hostname};DeviceId={device_id};SharedAccessKey={key}"
            f";GatewayHostName={self.hub.gateway_host}"
        )
        return d

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "state": self.hub.state.value})

    async def info(self, request: web.Request) -> web.Response:
        hub = self.hub
        return _json(
            {
                "iothub_hostname": hub.hostname,
                "iothub_gateway_host": hub.gateway_host,
                "port": hub.port,
                "ca_cert": str(hub.ca_cert_path),
                "device_group_key": hub.registry.group_key,
                "iothub_connection_string": hub.connection_string,
                "iothub_service_connection_string": hub.service_connection_string
                if hub.service is not None
                else None,
            }
        )

    async def list_devices(self, request: web.Request) -> web.Response:
        return _json([self._device_json(d) for d in sorted(self.hub.registry.devices)])

    async def create_device(self, request: web.Request) -> web.Response:
        body = await _body(request, known=("primaryKey", "secondaryKey", "status"))
        dev = self.hub.registry.create(
            request.match_info["id"],
            body.get("primaryKey"),
            body.get("secondaryKey"),
            body.get("status", "enabled"),
        )
        return _json(self._device_json(dev.device_id), 201)

    async def get_device(self, request: web.Request) -> web.Response:
        return _json(self._device_json(request.match_info["id"]))

    async def update_device(self, request: web.Request) -> web.Response:
        body = await _body(request, required=True)
        if "status" not in body:
            raise RegistryError("PATCH /devices/{id} needs {'status': 'enabled'|'disabled'}")
        device_id = request.match_info["id"]
        self.hub.registry.set_status(device_id, body["status"], body.get("statusReason"))
        if body["status"] == "disabled":
            self.hub.disconnect(device_id)
        return _json(self._device_json(device_id))

    async def delete_device(self, request: web.Request) -> web.Response:
        device_id = request.match_info["id"]
        self.hub.delete_device(device_id)
        return web.Response(status=204)

    async def get_twin(self, request: web.Request) -> web.Response:
        return _json(self.hub.registry.get(request.match_info["id"]).twin.document())

    async def patch_desired(self, request: web.Request) -> web.Response:
        body = await _body(request, required=True)
        version = self.hub.push_desired(request.match_info["id"], body)
        return _json({"version": version})

    async def invoke_method(self, request: web.Request) -> web.Response:
        body = await _body(request, known=("payload", "responseTimeoutInSeconds", "connectTimeoutInSeconds"))
        timeout, connect_timeout = method_timeouts(body)
        status, payload = await self.hub.invoke_method(
            request.match_info["id"],
            request.match_info["name"],
            body.get("payload"),
            timeout,
            connect_timeout,
        )
        return _json({"status": status, "payload": payload})

    async def send_c2d(self, request: web.Request) -> web.Response:
        body = await _body(request, required=True, known=C2D_FIELDS)
        text = body.get("body")
        if not isinstance(text, str):
            raise RegistryError("'body' (a string) is required")
        app = body.get("properties") or {}
        if not isinstance(app, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in app.items()
        ):
            raise RegistryError("'properties' must map strings to strings")
        ttl = body.get("ttlSeconds", self.hub.c2d.default_ttl_s)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 48 * 3600:
            raise RegistryError(f"ttlSeconds must be in (0, 172800] (the hub's 48 h), not {ttl!r}")
        device_id = request.match_info["id"]
        props = {"$.mid": str(body.get("messageId") or uuid.uuid4())}
        for key, name in (("correlationId", "$.cid"), ("contentType", "$.ct"), ("contentEncoding", "$.ce")):
            if body.get(key) is not None:
                props[name] = str(body[key])
        props["$.to"] = f"/devices/{device_id}/messages/devicebound"
        now = self.hub.clock()
        msg = C2DMessage(device_id, text.encode("utf-8"), props, dict(app), now, now + float(ttl))
        self.hub.send_c2d(msg)
        return _json(
            {
                "messageId": props["$.mid"],
                "queued": self.hub.c2d.depth(device_id),
                "sentToDevice": msg.in_flight or msg not in self.hub.c2d.peek(device_id),
            },
            201,
        )

    async def peek_c2d(self, request: web.Request) -> web.Response:
        device_id = request.match_info["id"]
        self.hub.registry.get(device_id)
        return _json(
            [
                {
                    "messageId": m.properties.get("$.mid"),
                    "body": m.body.decode("utf-8", "replace"),
                    "systemProperties": {k: v for k, v in m.properties.items() if k != "$.to"},
                    "properties": m.application_properties,
                    "enqueuedTime": m.enqueued_time,
                    "expiryTime": m.expiry_time,
                    "deliveryCount": m.delivery_count,
                    "inFlight": m.in_flight,
                }
                for m in self.hub.c2d.peek(device_id)
            ]
        )

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json(self.hub.faults.to_dict())

    async def patch_faults(self, request: web.Request) -> web.Response:
        body = await _body(request, required=True)
        self.hub.faults.update(body)
        LOG.info("faults updated: %s", body)
        return _json(self.hub.faults.to_dict())

    async def reset_faults(self, request: web.Request) -> web.Response:
        self.hub.faults.reset()
        return _json(self.hub.faults.to_dict())

    async def disconnect_all(self, request: web.Request) -> web.Response:
        return _json({"disconnected": self.hub.disconnect_all()})

    async def metrics(self, request: web.Request) -> web.Response:
        return _json(self.hub.metrics.to_dict())
