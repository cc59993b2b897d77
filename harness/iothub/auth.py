"""IoT Hub SAS tokens, device keys and the DPS group-enrollment key derivation (pure, no I/O).

A device token is ``SharedAccessSignature sr={quote(uri, safe='')}&sig={quote(b64(hmac))}&se={epoch}``
with ``uri = {hub}/devices/{id}``; the signature is HMAC-SHA256 over ``{sr as sent}\\n{se}``. Validation
uses the ``sr`` string exactly as received (the Python SDK signs an upper-case ``%2F``); the hub host is
compared case-insensitively and the device id exactly. Policy tokens carry ``skn=<policy>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from enginehub.harness.iothub.errors import AuthError

PREFIX = "SharedAccessSignature "
MAX_TOKEN = 4096


@dataclass(frozen=True, slots=True)
class SasToken:
    sr: str  # as sent (URL-encoded)
    resource: str  # decoded
    sig: str  # decoded base64
    se: int
    skn: str | None = None

    @property
    def hostname(self) -> str:
        return self.resource.partition("/")[0]

    @property
    def path(self) -> str:
        return self.resource.partition("/")[2]


def generate_key(nbytes: int = 32) -> str:
    return base64.b64encode(os.urandom(nbytes)).decode("ascii")


def _key_bytes(key_b64: str) -> bytes:
    try:
        return base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuthError(f"key is not valid base64: {exc}") from None


def sign(key_b64: str, message: str) -> str:
    """base64(HMAC-SHA256(base64decode(key), message))."""
    mac = hmac.new(_key_bytes(key_b64), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def derive_device_key(group_key_b64: str, device_id: str) -> str:
    """DPS group enrollment: a device's key is base64(HMAC-SHA256(base64decode(group_key), device_id))."""
    return sign(group_key_b64, device_id)


def generate_sas_token(
    resource_uri: str,
    key_b64: str,
    expiry: float | None = None,
    *,
    ttl: float = 3600,
    policy: str | None = None,
) -> str:
    se = int(expiry if expiry is not None else time.time() + ttl)
    sr = quote(resource_uri, safe="")
    sig = quote(sign(key_b64, f"{sr}\n{se}"), safe="")
    token = f"{PREFIX}sr={sr}&sig={sig}&se={se}"
    if policy:
        token += f"&skn={policy}"
    return token


def parse_sas_token(token: str) -> SasToken:
    if len(token) > MAX_TOKEN:
        raise AuthError(f"SAS token longer than {MAX_TOKEN} characters")
    if not token.startswith(PREFIX):
        raise AuthError("password is not a 'SharedAccessSignature ...' token")
    fields: dict[str, str] = {}
    for part in token[len(PREFIX) :].split("&"):
        key, sep, value = part.partition("=")
        if not sep:
            raise AuthError(f"SAS token field {key[:40]!r} without '='")
        fields[key] = value
    missing = [k for k in ("sr", "sig", "se") if not fields.get(k)]
    if missing:
        raise AuthError(f"SAS token lacks {', '.join(missing)}")
    try:
        se = int(fields["se"])
    except ValueError:
        raise AuthError(f"SAS token expiry se={fields['se'][:20]!r} is not an integer") from None
    sr = fields["sr"]
    return SasToken(sr=sr, resource=unquote(sr), sig=unquote(fields["sig"]), se=se, skn=fields.get("skn"))


def check_signature(token: SasToken, keys: Iterable[str | None]) -> bool:
    """True if ``token`` is signed by one of ``keys`` (primary, secondary, ...)."""
    message = f"{token.sr}\n{token.se}"
    return any(key and hmac.compare_digest(sign(key, message), token.sig) for key in keys)


def check_audience(token: SasToken, hostname: str, device_id: str) -> None:
    host, _, path = token.resource.partition("/")
    if host.lower() != hostname.lower():
        raise AuthError(f"SAS audience host {host[:80]!r} is not this hub ({hostname})")
    if token.skn is None:
        if path != f"devices/{device_id}":
            raise AuthError(f"SAS resource {token.resource[:120]!r} is not devices/{device_id}")
    elif path not in ("", f"devices/{device_id}"):
        raise AuthError(f"policy SAS resource {token.resource[:120]!r} does not cover devices/{device_id}")


def check_expiry(token: SasToken, now: float) -> None:
    if token.se <= now:
        raise AuthError(f"SAS token expired (se={token.se}, now={int(now)})")


def device_connection_string(hostname: str, device_id: str, key: str, gateway_host: str | None = None) -> str:
    cs = f"HostName={hostname};DeviceId={device_id};SharedAccessKey={key}"
    if gateway_host:
        cs += f";GatewayHostName={gateway_host}"
    return cs


def parse_connection_string(cs: str) -> dict[str, str]:
    """Split on ``;`` then on the first ``=`` (base64 padding survives)."""
    out: dict[str, str] = {}
    for part in cs.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"connection string segment {key!r} has no '='")
        out[key] = value
    return out


def check_service_token(
    header: str | None,
    hostnames: Iterable[str],
    policies: dict[str, str],
    rights: dict[str, frozenset[str]],
    needed: Iterable[str],
    now: float,
) -> SasToken:
    """Validate a service-API ``Authorization`` header: a hub-policy SAS token (``skn``) over one of the
    hub's names (``hostnames``, compared case-insensitively), signed with that policy's key, not expired,
    and whose policy holds one of the ``needed`` rights. Raises :class:`AuthError` with the reason.

    A device-scoped token (no ``skn``, ``sr=<hub>/devices/<id>``) is refused: the service API takes
    policy tokens only.
    """
    if not header:
        raise AuthError("no Authorization header (a SharedAccessSignature with skn=<policy>)")
    token = parse_sas_token(header)
    if token.skn is None:
        raise AuthError(f"device-scoped token for {token.resource[:120]!r} on the service API")
    host, _, path = token.resource.partition("/")
    if host.lower() not in {h.lower() for h in hostnames} or path.strip("/"):
        raise AuthError(f"SAS audience {token.resource[:120]!r} is not this hub")
    key = policies.get(token.skn)
    if key is None or not check_signature(token, [key]):
        raise AuthError(f"policy {token.skn[:60]!r}: unknown policy or bad signature")
    check_expiry(token, now)
    needed = tuple(needed)
    if not any(r in rights.get(token.skn, frozenset()) for r in needed):
        raise AuthError(f"policy {token.skn!r} lacks {' or '.join(needed)}")
    return token
