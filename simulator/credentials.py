"""Device identities and credentials: key derivation from a group key, connection strings, devices files.

- ``derive_device_key(group_key, device_id)``: base64(HMAC-SHA256(base64decode(group_key), device_id)),
  the DPS group-enrollment derivation that the local IoT Hub emulator (and a DPS-style setup) accepts.
- ``parse_connection_string``: split on ``;`` then the first ``=`` (base64 padding survives), reject
  unknown keys and missing parts with one clear ``CredentialsError`` sentence.
- ``read_devices_file``: one device connection string per line (``#`` comments and blank lines ignored).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)

#: Keys the azure-iot-device SDK accepts in a connection string (plus the service-side policy name).
KNOWN_KEYS = (
    "HostName",
    "DeviceId",
    "ModuleId",
    "SharedAccessKey",
    "SharedAccessKeyName",
    "SharedAccessSignature",
    "GatewayHostName",
    "x509",
)
#: Device ids the simulator makes: safe in MQTT topics (the SDK never URL-encodes them).
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class CredentialsError(ValueError):
    """A connection string, key or devices file that cannot be used; the message is one sentence."""


def device_id_for(index: int, prefix: str = "engine-") -> str:
    """``engine-0001`` for index 0, ``engine-0002`` for 1, ... (4 digits, more when needed)."""
    return f"{prefix}{index + 1:04d}"


def decode_key(key_b64: str, what: str = "key") -> bytes:
    """The bytes of a base64 key, or CredentialsError."""
    try:
        raw = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsError(f"{what} is not valid base64") from None
    if not raw:
        raise CredentialsError(f"{what} is empty")
    return raw


def derive_device_key(group_key_b64: str, device_id: str) -> str:
    """The device's symmetric key derived from a group key (DPS group-enrollment derivation)."""
    raw = decode_key(group_key_b64, "group key")
    mac = hmac.new(raw, device_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def parse_connection_string(text: str, what: str = "connection string") -> dict[str, str]:
    """``Key=Value;...`` as a dict; CredentialsError on empty parts, missing ``=`` or unknown keys."""
    text = text.strip()
    if not text:
        raise CredentialsError(f"{what} is empty")
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            raise CredentialsError(f"{what}: expected Key=Value, got {part[:40]!r}")
        if key not in KNOWN_KEYS:
            raise CredentialsError(f"{what}: unknown key {key!r} (known: {', '.join(KNOWN_KEYS)})")
        if key in out:
            raise CredentialsError(f"{what}: duplicate key {key!r}")
        out[key] = value
    if "HostName" not in out:
        raise CredentialsError(f"{what}: missing HostName")
    return out


@dataclass(frozen=True)
class DeviceCredentials:
    """What one simulated device needs to connect."""

    device_id: str
    hostname: str
    key: str
    gateway_host: str | None = None

    def connection_string(self) -> str:
        cs = f"HostName={self.hostname};DeviceId={self.device_id};SharedAccessKey={self.key}"
        if self.gateway_host:
            cs += f";GatewayHostName={self.gateway_host}"
        return cs


def device_from_connection_string(text: str, what: str = "device connection string") -> DeviceCredentials:
    fields = parse_connection_string(text, what)
    for need in ("DeviceId", "SharedAccessKey"):
        if need not in fields:
            raise CredentialsError(f"{what}: missing {need}")
    if not DEVICE_ID_RE.match(fields["DeviceId"]):
        raise CredentialsError(f"{what}: device id {fields['DeviceId']!r} is not [A-Za-z0-9._-]{{1,128}}")
    decode_key(fields["SharedAccessKey"], f"{what}: SharedAccessKey")
    return DeviceCredentials(
        fields["DeviceId"], fields["HostName"], fields["SharedAccessKey"], fields.get("GatewayHostName")
    )


def read_devices_file(path: str | Path) -> list[DeviceCredentials]:
    """Device connection strings, one a line; CredentialsError naming the line when one is bad."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CredentialsError(f"cannot read devices file {p}: {exc.strerror or exc}") from None
    devices: list[DeviceCredentials] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        dev = device_from_connection_string(line, f"{p}:{n}")
        if dev.device_id in seen:
            raise CredentialsError(f"{p}:{n}: device id {dev.device_id!r} appears twice")
        seen.add(dev.device_id)
        devices.append(dev)
    if not devices:
        raise CredentialsError(f"devices file {p} has no connection strings")
    return devices


def write_devices_file(path: str | Path, devices: list[DeviceCredentials]) -> None:
    Path(path).write_text("".join(d.connection_string() + "\n" for d in devices), encoding="utf-8")


@dataclass(frozen=True)
class HubTarget:
    """Where the fleet connects: the logical hub name, the host dialled, the trust anchor, the group key."""

    hostname: str
    group_key: str | None = None
    gateway_host: str | None = None
    ca_cert_pem: str | None = None

    def devices(self, count: int, prefix: str = "engine-") -> list[DeviceCredentials]:
        if not self.group_key:
            raise CredentialsError("no device keys: give --group-key (or --devices-file)")
        return [
            DeviceCredentials(
                device_id_for(i, prefix),
                self.hostname,
                derive_device_key(self.group_key, device_id_for(i, prefix)),
                self.gateway_host,
            )
            for i in range(count)
        ]


def hub_from_connection_string(
    text: str, *, group_key: str | None = None, gateway_host: str | None = None
) -> HubTarget:
    """The hub named by a service (``SharedAccessKeyName``) or device-less connection string.

    The device keys come from ``group_key``; a device connection string (with ``DeviceId``) is refused
    here: use a devices file for explicit device identities.
    """
    fields = parse_connection_string(text, "--iothub-connection-string")
    if "DeviceId" in fields:
        raise CredentialsError(
            "--iothub-connection-string is a device connection string; put device connection strings "
            "in a --devices-file instead"
        )
    if group_key:
        decode_key(group_key, "--group-key")
    elif "SharedAccessKey" in fields:
        decode_key(fields["SharedAccessKey"], "--iothub-connection-string: SharedAccessKey")
    return HubTarget(fields["HostName"], group_key, gateway_host or fields.get("GatewayHostName"))
