"""IoT Hub emulator state: device registry, twins, cloud-to-device queues, fault switches and metrics
(in memory, no I/O).

The registry may be saved to / loaded from a JSON file by :class:`HubState` (``save``/``load``) so that
``harness iothub --data-dir`` keeps devices across restarts; connections never hold state.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from enginehub.harness.iothub import auth
from enginehub.harness.iothub.errors import (
    AuthError,
    DeviceExists,
    DeviceNotFound,
    NotAuthorized,
    QueueDepthExceeded,
    RegistryError,
)

LOG = logging.getLogger(__name__)

#: IoT Hub device id grammar (iot-hub-devguide-identity-registry): <= 128 chars of these.
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9\-.+%_#*?!(),=@$']{1,128}$")
#: Telemetry max size by the hub's formula (body + system property values + app property names/values).
MAX_MESSAGE_BYTES = 256 * 1024
AUTH_METHOD_SAS = '{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}'


#: Shared access policies of a hub and their rights (as on Azure's built-in policies).
POLICY_RIGHTS: dict[str, frozenset[str]] = {
    "iothubowner": frozenset({"RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"}),
    "service": frozenset({"ServiceConnect"}),
    "device": frozenset({"DeviceConnect"}),
    "registryRead": frozenset({"RegistryRead"}),
    "registryReadWrite": frozenset({"RegistryRead", "RegistryWrite"}),
}


def _generation_id() -> str:
    # hub-generated; the real one looks like 637388855582764406 (.NET ticks)
    return str(int(time.time() * 10_000_000) + 621_355_968_000_000_000 + uuid.uuid4().int % 1000)


def new_etag() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Twin:
    desired: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 1
    reported: dict[str, Any] = field(default_factory=dict)
    reported_version: int = 1
    tags: dict[str, Any] = field(default_factory=dict)
    etag: str = field(default_factory=new_etag)

    @property
    def version(self) -> int:
        """The twin's overall version (the service API's ``version``): grows with every change."""
        return self.desired_version + self.reported_version - 1

    def document(self) -> dict[str, Any]:
        return {
            "desired": {**self.desired, "$version": self.desired_version},
            "reported": {**self.reported, "$version": self.reported_version},
        }

    def patch_reported(self, patch: dict[str, Any]) -> int:
        _merge(self.reported, patch)
        self.reported_version += 1
        self.etag = new_etag()
        return self.reported_version

    def patch_desired(self, patch: dict[str, Any]) -> int:
        _merge(self.desired, patch)
        self.desired_version += 1
        self.etag = new_etag()
        return self.desired_version

    def patch_tags(self, patch: dict[str, Any]) -> None:
        _merge(self.tags, patch)
        self.etag = new_etag()


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge-patch as twins use it: None deletes, nested dicts merge."""
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = v


@dataclass
class Device:
    device_id: str
    primary_key: str | None = None
    secondary_key: str | None = None
    status: str = "enabled"
    status_reason: str | None = None
    generation_id: str = field(default_factory=_generation_id)
    etag: str = field(default_factory=new_etag)
    status_updated_time: float | None = None
    connection_state_updated_time: float | None = None
    source: str = "registry"  # or "group" (created on first connect with a group-derived key)
    connection_state: str = "Disconnected"
    last_activity_time: float | None = None
    twin: Twin = field(default_factory=Twin)

    def to_dict(self, *, keys: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "deviceId": self.device_id,
            "generationId": self.generation_id,
            "etag": self.etag,
            "status": self.status,
            "statusReason": self.status_reason,
            "connectionState": self.connection_state,
            "lastActivityTime": self.last_activity_time,
            "source": self.source,
        }
        if keys:
            d["authentication"] = {
                "type": "sas",
                "symmetricKey": {"primaryKey": self.primary_key, "secondaryKey": self.secondary_key},
            }
        return d


@dataclass
class Faults:
    """Fault switches, read by the server on every CONNECT / PUBLISH. Counters are one-shot."""

    puback_delay_s: float = 0.0
    drop_pubacks: int = 0  # drop the next N PUBACKs (message appended, no PUBACK)
    close_after_publishes: int | None = None  # after N more telemetry appends, close instead of PUBACK
    refuse_connect: int | None = None  # CONNACK code (3 = retried, 5 = fatal) for new CONNECTs
    refuse_connect_count: int | None = None  # how many CONNECTs to refuse (None: until cleared)
    throttle_per_s: float | None = None  # hub-wide D2C rate (S1 unit: 100/s); excess waits for its PUBACK
    enforce_token_expiry: bool = True  # close connections at their SAS token's se

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(values) - names
        if unknown:
            raise RegistryError(
                f"unknown fault setting(s): {', '.join(sorted(unknown))}; known: {sorted(names)}"
            )
        for k, v in values.items():
            if k == "refuse_connect" and v not in (None, 1, 2, 3, 4, 5):
                raise RegistryError(f"refuse_connect must be a CONNACK code 1..5 or null, not {v!r}")
            if k in ("puback_delay_s",) and (not isinstance(v, int | float) or v < 0):
                raise RegistryError(f"{k} must be a number >= 0, not {v!r}")
            if k in ("drop_pubacks",) and (not isinstance(v, int) or v < 0):
                raise RegistryError(f"{k} must be an integer >= 0, not {v!r}")
            if (
                k in ("close_after_publishes", "refuse_connect_count")
                and v is not None
                and (not isinstance(v, int) or v < 1)
            ):
                raise RegistryError(f"{k} must be an integer >= 1 or null, not {v!r}")
            if k == "throttle_per_s" and v is not None and (not isinstance(v, int | float) or v <= 0):
                raise RegistryError(f"throttle_per_s must be > 0 or null, not {v!r}")
            if k == "enforce_token_expiry" and not isinstance(v, bool):
                raise RegistryError(f"enforce_token_expiry must be true or false, not {v!r}")
        for k, v in values.items():  # all valid: apply together
            setattr(self, k, v)

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)


@dataclass
class DeviceMetrics:
    messages: int = 0
    bytes: int = 0
    dup: int = 0
    connects: int = 0
    auth_failures: int = 0
    takeovers: int = 0
    puback_latency_s_total: float = 0.0

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)


@dataclass
class HubMetrics:
    messages: int = 0
    bytes: int = 0
    dup: int = 0
    connects: int = 0
    refused_connects: int = 0
    auth_failures: int = 0
    takeovers: int = 0
    protocol_errors: int = 0
    throttled: int = 0
    dropped_pubacks: int = 0
    fault_closes: int = 0
    expired_closes: int = 0
    keepalive_closes: int = 0
    connections: int = 0
    twin_requests: int = 0
    method_calls: int = 0
    method_timeouts: int = 0
    service_requests: int = 0
    service_auth_failures: int = 0
    c2d_accepted: int = 0
    c2d_rejected: int = 0
    c2d_delivered: int = 0
    c2d_expired: int = 0
    c2d_dead_lettered: int = 0
    devices: dict[str, DeviceMetrics] = field(default_factory=dict)

    def device(self, device_id: str) -> DeviceMetrics:
        m = self.devices.get(device_id)
        if m is None:
            m = self.devices[device_id] = DeviceMetrics()
        return m

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "devices"}
        d["devices"] = {k: {**asdict(v), "reconnects": v.reconnects} for k, v in self.devices.items()}
        return d


class TokenBucket:
    """Hub-wide rate limit with an injected clock: ``reserve()`` returns how long to wait (s)."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.clock = clock
        self.tokens = self.burst
        self.last = clock()

    def reserve(self) -> float:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Registry:
    """Device identities of one hub, plus the group key (DPS group enrollment) and hub policies."""

    def __init__(self, hostname: str, group_key: str | None = None, owner_key: str | None = None) -> None:
        self.hostname = hostname
        self.group_key = group_key or auth.generate_key()
        self.policies = {name: auth.generate_key() for name in POLICY_RIGHTS}
        if owner_key:
            self.policies["iothubowner"] = owner_key
        self.devices: dict[str, Device] = {}
        self.on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def create(
        self,
        device_id: str,
        primary_key: str | None = None,
        secondary_key: str | None = None,
        status: str = "enabled",
    ) -> Device:
        if not DEVICE_ID_RE.match(device_id or ""):
            raise RegistryError(f"invalid device id {device_id!r}: 1..128 of A-Z a-z 0-9 -.+%_#*?!(),=@$'")
        if "/" in device_id or "+" in device_id or "#" in device_id:
            LOG.warning(
                "device id %r contains MQTT topic characters; the SDK cannot publish for it", device_id
            )
        if device_id in self.devices and self.devices[device_id].source == "registry":
            raise DeviceExists(f"device {device_id!r} already exists")
        if status not in ("enabled", "disabled"):
            raise RegistryError(f"status must be 'enabled' or 'disabled', not {status!r}")
        for k in (primary_key, secondary_key):
            if k is not None:
                auth.sign(k, "")  # raises AuthError (400) on bad base64
        dev = Device(
            device_id,
            primary_key or auth.generate_key(),
            secondary_key or auth.generate_key(),
            status=status,
        )
        self.devices[device_id] = dev
        self._changed()
        return dev

    def get(self, device_id: str) -> Device:
        try:
            return self.devices[device_id]
        except KeyError:
            raise DeviceNotFound(f"device {device_id!r} not found") from None

    def delete(self, device_id: str) -> None:
        self.get(device_id)
        del self.devices[device_id]
        self._changed()

    def set_status(self, device_id: str, status: str, reason: str | None = None) -> Device:
        if status not in ("enabled", "disabled"):
            raise RegistryError(f"status must be 'enabled' or 'disabled', not {status!r}")
        dev = self.get(device_id)
        if dev.status != status:
            dev.status_updated_time = time.time()
        dev.status = status
        dev.status_reason = reason
        dev.etag = new_etag()
        self._changed()
        return dev

    def update_keys(self, device_id: str, primary_key: str | None, secondary_key: str | None) -> Device:
        """Replace the device's symmetric keys (None keeps a key); bad base64 raises AuthError (400)."""
        dev = self.get(device_id)
        for k in (primary_key, secondary_key):
            if k is not None:
                auth.sign(k, "")
        if primary_key is not None:
            dev.primary_key = primary_key
        if secondary_key is not None:
            dev.secondary_key = secondary_key
        dev.etag = new_etag()
        self._changed()
        return dev

    def derived_key(self, device_id: str) -> str:
        return auth.derive_device_key(self.group_key, device_id)

    def authenticate(self, device_id: str, password: str, now: float) -> tuple[Device, auth.SasToken]:
        """Validate a CONNECT password; raise :class:`NotAuthorized` (CONNACK 5) with the reason."""
        token = auth.parse_sas_token(password)
        auth.check_audience(token, self.hostname, device_id)
        auth.check_expiry(token, now)
        dev = self.devices.get(device_id)
        if token.skn is not None:
            key = self.policies.get(token.skn)
            if key is None or not auth.check_signature(token, [key]):
                raise AuthError(f"policy token {token.skn!r}: bad signature or unknown policy")
            if "DeviceConnect" not in POLICY_RIGHTS.get(token.skn, frozenset()):
                raise AuthError(f"policy {token.skn!r} lacks DeviceConnect")
        elif dev is not None and auth.check_signature(token, [dev.primary_key, dev.secondary_key]):
            pass
        elif auth.check_signature(token, [self.derived_key(device_id)]):
            if dev is None:
                dev = Device(device_id, source="group")
                self.devices[device_id] = dev
                self._changed()
        else:
            raise AuthError(f"device {device_id!r}: SAS signature matches no key (registry or group-derived)")
        if dev is None:
            raise NotAuthorized(f"device {device_id!r} is not registered")
        if dev.status != "enabled":
            raise NotAuthorized(f"device {device_id!r} is disabled")
        return dev, token

    # --- persistence ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "group_key": self.group_key,
            "policies": self.policies,
            "devices": [
                {
                    "device_id": d.device_id,
                    "primary_key": d.primary_key,
                    "secondary_key": d.secondary_key,
                    "status": d.status,
                    "status_reason": d.status_reason,
                    "generation_id": d.generation_id,
                    "source": d.source,
                    "twin": asdict(d.twin),
                }
                for d in self.devices.values()
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Registry:
        reg = cls(data["hostname"], data["group_key"])
        reg.policies.update(data.get("policies", {}))
        for d in data.get("devices", []):
            twin = Twin(**d.pop("twin", {}))
            dev = Device(**d)
            dev.twin = twin
            reg.devices[dev.device_id] = dev
        return reg

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(path)

    @classmethod
    def load_or_create(cls, path: Path, hostname: str) -> Registry:
        if path.is_file():
            try:
                reg = cls.from_json(json.loads(path.read_text()))
            except (ValueError, TypeError, KeyError) as exc:
                raise RegistryError(
                    f"{path}: not a registry file ({exc}); move it away to start fresh"
                ) from None
            if reg.hostname != hostname:
                LOG.warning("registry %s was saved for %s; using it for %s", path, reg.hostname, hostname)
                reg.hostname = hostname
            return reg
        reg = cls(hostname)
        reg.save(path)
        return reg


# --- cloud-to-device queues -----------------------------------------------------------------------

#: the hub's limits (iot-hub-devguide-messages-c2d): queue depth per device, default TTL, max deliveries
C2D_MAX_QUEUE_DEPTH = 50
C2D_DEFAULT_TTL_S = 3600.0
C2D_MAX_DELIVERY_COUNT = 10


@dataclass(slots=True, eq=False)
class C2DMessage:
    """One queued cloud-to-device message. ``properties`` are the system properties in their MQTT
    property-bag names (``$.mid``, ``$.cid``, ``$.ct``, ``$.ce``, ``$.exp``, ``$.to``, ``$.uid``)."""

    device_id: str
    body: bytes
    properties: dict[str, str]
    application_properties: dict[str, str | None]
    enqueued_time: float
    expiry_time: float
    delivery_count: int = 0
    in_flight: bool = False


class C2DQueues:
    """Per-device FIFO queues with the hub's lifecycle: Enqueued -> (delivered, in flight) -> Completed;
    a delivery lost with its connection is abandoned (back to Enqueued, redelivered in order); a message
    past its expiry or delivered ``max_delivery_count`` times is dead-lettered (dropped and counted)."""

    def __init__(
        self,
        metrics: Callable[[], HubMetrics],
        *,
        max_depth: int = C2D_MAX_QUEUE_DEPTH,
        default_ttl_s: float = C2D_DEFAULT_TTL_S,
        max_delivery_count: int = C2D_MAX_DELIVERY_COUNT,
    ) -> None:
        self._metrics = metrics
        self.max_depth = max_depth
        self.default_ttl_s = default_ttl_s
        self.max_delivery_count = max_delivery_count
        self._queues: dict[str, deque[C2DMessage]] = {}

    def depth(self, device_id: str) -> int:
        q = self._queues.get(device_id)
        return len(q) if q else 0

    def enqueue(self, msg: C2DMessage) -> None:
        """Append ``msg``; :class:`QueueDepthExceeded` when the device already holds ``max_depth``."""
        q = self._queues.setdefault(msg.device_id, deque())
        if len(q) >= self.max_depth:
            self._metrics().c2d_rejected += 1
            raise QueueDepthExceeded(
                f"device {msg.device_id!r} already has {len(q)} cloud-to-device messages queued "
                f"(the limit is {self.max_depth})"
            )
        q.append(msg)
        self._metrics().c2d_accepted += 1

    def take(self, device_id: str, now: float) -> list[C2DMessage]:
        """The messages to deliver now, oldest first (marked in flight, delivery count + 1); expired
        and over-delivered messages are dead-lettered on the way."""
        q = self._queues.get(device_id)
        if not q:
            return []
        out = []
        m = self._metrics()
        for msg in list(q):
            if msg.in_flight:
                continue
            if msg.expiry_time <= now:
                q.remove(msg)
                m.c2d_expired += 1
                LOG.info("C2D message %s for %s expired undelivered", msg.properties.get("$.mid"), device_id)
                continue
            if msg.delivery_count >= self.max_delivery_count:
                q.remove(msg)
                m.c2d_dead_lettered += 1
                LOG.info(
                    "C2D message %s for %s dead-lettered after %d deliveries",
                    msg.properties.get("$.mid"),
                    device_id,
                    msg.delivery_count,
                )
                continue
            msg.in_flight = True
            msg.delivery_count += 1
            out.append(msg)
        return out

    def peek(self, device_id: str) -> list[C2DMessage]:
        """The device's queue, oldest first, without side effects."""
        return list(self._queues.get(device_id, ()))

    def complete(self, msg: C2DMessage) -> None:
        q = self._queues.get(msg.device_id)
        if q is not None and msg in q:
            q.remove(msg)
            self._metrics().c2d_delivered += 1

    def abandon(self, msg: C2DMessage) -> None:
        msg.in_flight = False

    def purge(self, device_id: str) -> int:
        """Drop a device's queue (the device was deleted); returns how many messages were dropped."""
        q = self._queues.pop(device_id, None)
        return len(q) if q else 0
