"""The IoT Hub service API (REST over HTTPS) that ``azure-iot-hub``'s ``IoTHubRegistryManager`` calls.

The SDK builds its base URL as ``https://<HostName>`` from the owner connection string, so the emulator
publishes ``HostName=<gateway host>:<service port>`` (``IotHubEmulator.service_connection_string``,
``iothub_service_connection_string`` in ``harness up --json``). TLS uses the hub's server certificate (IP
SANs for the gateway host); the SDK trusts it through ``REQUESTS_CA_BUNDLE=<ca_cert>`` (requests honours it).

Routes (api-version ignored; the SDK sends 2021-04-12):

    GET    /devices[?top=N]             RegistryRead    list of device identities
    GET    /devices/{id}                RegistryRead    one device (404 DeviceNotFound)
    PUT    /devices/{id}                RegistryWrite   create (no If-Match; 409 DeviceAlreadyExists) or
                                                        update keys / status (If-Match "*" or the etag;
                                                        412 PreconditionFailed on mismatch)
    DELETE /devices/{id}                RegistryWrite   204; If-Match as above; the device is disconnected
    GET    /twins/{id}                  RegistryRead or ServiceConnect
    PATCH  /twins/{id}                  ServiceConnect  merge tags and desired properties (If-Match); a
                                                        desired change is pushed to the connected device
    PUT    /twins/{id}                  ServiceConnect  replace tags and desired properties (If-Match)
    POST   /twins/{id}/methods          ServiceConnect  direct method: 200 {status, payload}; 404
                                                        DeviceNotOnline; 504 GatewayTimeout

Auth: ``Authorization: SharedAccessSignature sr=<HostName>&sig=…&se=…&skn=<policy>`` signed with the
policy's key (policies and rights in ``state.POLICY_RIGHTS``). A missing header, a device-scoped token (no
``skn``), an unknown policy, a bad signature, an expired token or a policy without the right is 401
``IotHubUnauthorizedAccess``. Errors carry the hub's body ``{"Message": "ErrorCode:<code>;<text>",
"ExceptionMessage": …}`` and header ``iothub-errorcode``.

LIMITATIONS: no modules, configurations, jobs, query, bulk registry, statistics, digital twins (every
other path is 501 ``NotSupportedByEmulator``); no X.509 identities.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from enginehub.harness.iothub import auth
from enginehub.harness.iothub.errors import (
    AuthError,
    DeviceExists,
    DeviceNotFound,
    PreconditionFailed,
    RegistryError,
    ServiceError,
)
from enginehub.harness.iothub.state import POLICY_RIGHTS, Device

if TYPE_CHECKING:
    from enginehub.harness.iothub.server import IotHubEmulator

LOG = logging.getLogger(__name__)

#: responseTimeoutInSeconds bounds (default 30); the real hub's minimum is 5 s, the emulator takes 1 s so
#: that a timeout test is quick
METHOD_TIMEOUT_MIN_S, METHOD_TIMEOUT_MAX_S, METHOD_TIMEOUT_DEFAULT_S = 1, 300, 30

_CODES = {DeviceNotFound: ("DeviceNotFound", 404001), DeviceExists: ("DeviceAlreadyExists", 409001)}


def method_timeouts(body: dict[str, Any]) -> tuple[float, float]:
    """(responseTimeoutInSeconds, connectTimeoutInSeconds) of a method request, defaulted and bounded."""
    timeout = body.get("responseTimeoutInSeconds") or METHOD_TIMEOUT_DEFAULT_S
    connect_timeout = body.get("connectTimeoutInSeconds") or 0
    for label, value, low in (
        ("responseTimeoutInSeconds", timeout, METHOD_TIMEOUT_MIN_S),
        ("connectTimeoutInSeconds", connect_timeout, 0),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= METHOD_TIMEOUT_MAX_S
        ):
            raise ServiceError(f"{label} must be {low}..{METHOD_TIMEOUT_MAX_S}, not {value!r}")
    return float(timeout), float(connect_timeout)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat().replace("+00:00", "Z")


def _json(data: Any, status: int = 200, etag: str | None = None) -> web.Response:
    headers = {"ETag": f'"{etag}"'} if etag else None
    return web.Response(
        text=json.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _error_response(status: int, code: str, numeric: int, message: str) -> web.Response:
    body = {
        "Message": f"ErrorCode:{code};{message}",
        "ExceptionMessage": f"ErrorCode:{numeric};enginehub emulator",
    }
    return web.Response(
        text=json.dumps(body),
        status=status,
        content_type="application/json",
        headers={"iothub-errorcode": code},
    )


def _unquote_etag(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def check_etag(if_match: str | None, current: str) -> None:
    """``If-Match`` absent or ``*`` passes; anything else must equal the current etag (else 412)."""
    tag = _unquote_etag(if_match)
    if tag is None or tag == "*" or tag == current:
        return
    raise PreconditionFailed(f"If-Match {tag!r} does not match the current etag {current!r}")


def device_json(dev: Device, c2d_count: int = 0) -> dict[str, Any]:
    return {
        "deviceId": dev.device_id,
        "generationId": dev.generation_id,
        "etag": dev.etag,
        "connectionState": dev.connection_state,
        "status": dev.status,
        "statusReason": dev.status_reason,
        "connectionStateUpdatedTime": _iso(dev.connection_state_updated_time),
        "statusUpdatedTime": _iso(dev.status_updated_time),
        "lastActivityTime": _iso(dev.last_activity_time),
        "cloudToDeviceMessageCount": c2d_count,
        "authentication": {
            "type": "sas",
            "symmetricKey": {"primaryKey": dev.primary_key, "secondaryKey": dev.secondary_key},
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
        },
        "capabilities": {"iotEdge": False},
    }


def twin_json(dev: Device, c2d_count: int = 0) -> dict[str, Any]:
    twin = dev.twin
    return {
        "deviceId": dev.device_id,
        "etag": twin.etag,
        "deviceEtag": dev.etag,
        "status": dev.status,
        "statusReason": dev.status_reason,
        "connectionState": dev.connection_state,
        "lastActivityTime": _iso(dev.last_activity_time),
        "cloudToDeviceMessageCount": c2d_count,
        "authenticationType": "sas",
        "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
        "version": twin.version,
        "tags": twin.tags,
        "properties": {
            "desired": {**twin.desired, "$version": twin.desired_version},
            "reported": {**twin.reported, "$version": twin.reported_version},
        },
        "capabilities": {"iotEdge": False},
    }


class ServiceServer:
    """The HTTPS service API of one :class:`IotHubEmulator`, bound to ``host:port`` (0 = a free port)."""

    def __init__(self, hub: IotHubEmulator, host: str, port: int = 0) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        app = web.Application(middlewares=[self._middleware], client_max_size=1024 * 1024)
        r = app.router
        r.add_get("/devices", self.list_devices)
        r.add_get("/devices/{id}", self.get_device)
        r.add_put("/devices/{id}", self.put_device)
        r.add_delete("/devices/{id}", self.delete_device)
        r.add_get("/twins/{id}", self.get_twin)
        r.add_patch("/twins/{id}", self.patch_twin)
        r.add_put("/twins/{id}", self.replace_twin)
        r.add_post("/twins/{id}/methods", self.invoke_method)
        r.add_route("*", "/{tail:.*}", self.not_supported)
        self.app = app

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> ServiceServer:
        assert self.hub.certs is not None
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.hub.certs.server_context())
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:  # type: ignore[union-attr]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        LOG.info("IoT Hub service API on %s", self.url)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _device(self, dev: Device) -> dict[str, Any]:
        return device_json(dev, self.hub.c2d.depth(dev.device_id))

    # --- plumbing --------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.hub.metrics.service_requests += 1
        try:
            return await handler(request)
        except AuthError as exc:
            self.hub.metrics.service_auth_failures += 1
            LOG.info("service API %s %s refused: %s", request.method, request.path, exc)
            return _error_response(401, "IotHubUnauthorizedAccess", 401002, str(exc))
        except ServiceError as exc:
            return _error_response(exc.status, exc.error_code, exc.numeric_code, str(exc))
        except RegistryError as exc:
            code, numeric = _CODES.get(type(exc), ("ArgumentInvalid", 400004))
            return _error_response(exc.status, code, numeric, str(exc))

    def _authorize(self, request: web.Request, *needed: str) -> None:
        hub = self.hub
        auth.check_service_token(
            request.headers.get("Authorization"),
            hub.service_hostnames(),
            hub.registry.policies,
            POLICY_RIGHTS,
            needed,
            hub.clock(),
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise ServiceError(f"body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ServiceError("body must be a JSON object")
        return data

    # --- devices ---------------------------------------------------------------------------------

    async def list_devices(self, request: web.Request) -> web.Response:
        self._authorize(request, "RegistryRead")
        top = request.query.get("top")
        devices = [self._device(self.hub.registry.devices[d]) for d in sorted(self.hub.registry.devices)]
        if top:
            try:
                n = int(top)
            except ValueError:
                raise ServiceError(f"top must be an integer, not {top!r}") from None
            if not 1 <= n <= 1000:
                raise ServiceError(f"top must be 1..1000, not {n}")
            devices = devices[:n]
        return _json(devices)

    async def get_device(self, request: web.Request) -> web.Response:
        self._authorize(request, "RegistryRead")
        dev = self.hub.registry.get(request.match_info["id"])
        return _json(self._device(dev), etag=dev.etag)

    async def put_device(self, request: web.Request) -> web.Response:
        self._authorize(request, "RegistryWrite")
        device_id = request.match_info["id"]
        body = await self._body(request)
        if body.get("deviceId", device_id) != device_id:
            raise ServiceError(f"body deviceId {body.get('deviceId')!r} != {device_id!r} in the path")
        authn = body.get("authentication") or {}
        if authn.get("type", "sas") != "sas":
            raise ServiceError(f"authentication type {authn.get('type')!r}: the emulator supports sas only")
        keys = authn.get("symmetricKey") or {}
        primary, secondary = keys.get("primaryKey") or None, keys.get("secondaryKey") or None
        status = body.get("status") or "enabled"
        registry = self.hub.registry
        if_match = request.headers.get("If-Match")
        existing = registry.devices.get(device_id)
        if if_match is None:
            dev = registry.create(device_id, primary, secondary, status)
            if body.get("statusReason"):
                dev.status_reason = body["statusReason"]
            LOG.info("service API: device %s created", device_id)
            return _json(self._device(dev), etag=dev.etag)
        if existing is None:
            raise DeviceNotFound(f"device {device_id!r} not found")
        check_etag(if_match, existing.etag)
        registry.update_keys(device_id, primary, secondary)
        dev = registry.set_status(device_id, status, body.get("statusReason"))
        if status == "disabled":
            self.hub.disconnect(device_id)
        LOG.info("service API: device %s updated (status %s)", device_id, status)
        return _json(self._device(dev), etag=dev.etag)

    async def delete_device(self, request: web.Request) -> web.Response:
        self._authorize(request, "RegistryWrite")
        device_id = request.match_info["id"]
        dev = self.hub.registry.get(device_id)
        check_etag(request.headers.get("If-Match"), dev.etag)
        self.hub.delete_device(device_id)
        LOG.info("service API: device %s deleted", device_id)
        return web.Response(status=204)

    # --- twins -----------------------------------------------------------------------------------

    async def get_twin(self, request: web.Request) -> web.Response:
        self._authorize(request, "RegistryRead", "ServiceConnect")
        dev = self.hub.registry.get(request.match_info["id"])
        return _json(twin_json(dev, self.hub.c2d.depth(dev.device_id)), etag=dev.twin.etag)

    def _twin_parts(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        tags = body.get("tags")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise ServiceError("properties must be a JSON object")
        desired = props.get("desired")
        for name, value in (("tags", tags), ("properties.desired", desired)):
            if value is not None and not isinstance(value, dict):
                raise ServiceError(f"{name} must be a JSON object")
        if desired is not None:
            desired = {k: v for k, v in desired.items() if not k.startswith("$")}
        return tags, desired

    async def patch_twin(self, request: web.Request) -> web.Response:
        self._authorize(request, "ServiceConnect")
        device_id = request.match_info["id"]
        dev = self.hub.registry.get(device_id)
        check_etag(request.headers.get("If-Match"), dev.twin.etag)
        tags, desired = self._twin_parts(await self._body(request))
        if tags:
            dev.twin.patch_tags(tags)
        if desired:
            self.hub.push_desired(device_id, desired)
        self.hub.registry._changed()
        return _json(twin_json(dev, self.hub.c2d.depth(dev.device_id)), etag=dev.twin.etag)

    async def replace_twin(self, request: web.Request) -> web.Response:
        self._authorize(request, "ServiceConnect")
        device_id = request.match_info["id"]
        dev = self.hub.registry.get(device_id)
        check_etag(request.headers.get("If-Match"), dev.twin.etag)
        tags, desired = self._twin_parts(await self._body(request))
        dev.twin.tags = {}
        dev.twin.patch_tags(tags or {})
        new = desired or {}
        patch: dict[str, Any] = {k: None for k in dev.twin.desired if k not in new}
        patch.update(new)
        if patch:
            self.hub.push_desired(device_id, patch)
        self.hub.registry._changed()
        return _json(twin_json(dev, self.hub.c2d.depth(dev.device_id)), etag=dev.twin.etag)

    # --- direct methods --------------------------------------------------------------------------

    async def invoke_method(self, request: web.Request) -> web.Response:
        self._authorize(request, "ServiceConnect")
        device_id = request.match_info["id"]
        body = await self._body(request)
        name = body.get("methodName")
        if not isinstance(name, str) or not name:
            raise ServiceError("methodName is required")
        timeout, connect_timeout = method_timeouts(body)
        status, payload = await self.hub.invoke_method(
            device_id, name, body.get("payload"), timeout, connect_timeout
        )
        return _json({"status": status, "payload": payload})

    async def not_supported(self, request: web.Request) -> web.Response:
        self._authorize(request, "RegistryRead", "ServiceConnect")
        return _error_response(
            501,
            "NotSupportedByEmulator",
            501000,
            f"{request.method} {request.path} is not supported by the enginehub IoT Hub emulator",
        )
