"""Shared Access Signature tokens: generation and real validation (policy, signature, expiry, scope).

A token is ``SharedAccessSignature sr=<quote_plus(aud)>&sig=<quote_plus(b64)>&se=<expiry>&skn=<policy>``
(field order free). The signature is base64(HMAC-SHA256(key, quote_plus(audience) + "\\n" + se)) with
the policy key's UTF-8 bytes used AS IS (not base64-decoded), exactly as the SDKs do
(``azure/eventhub/_pyamqp/utils.py::generate_sas_token``).

Scope: a token whose ``sr`` is ``sb://host/eh1`` covers ``sb://host/eh1``, ``sb://host/eh1/Partitions/0``
and ``sb://host/eh1/ConsumerGroups/cg`` (path segments compared case-insensitively), not
``sb://host/eh10``. A namespace-level ``sr`` (``sb://host/`` or ``sb://host``) covers every entity.
Scheme and host compare case-insensitively; the schemes ``sb``, ``amqp``, ``amqps`` are equivalent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from urllib.parse import quote_plus, unquote_plus, urlencode, urlsplit

LOG = logging.getLogger(__name__)

SAS_PREFIX = "SharedAccessSignature "
MAX_TOKEN_LENGTH = 16 * 1024
_EQUIVALENT_SCHEMES = {"sb": "sb", "amqp": "sb", "amqps": "sb", "http": "http", "https": "http"}
_ESCAPE_RE = re.compile(r"%[0-9A-Fa-f]{2}")


class AuthError(Exception):
    """A token is not accepted; ``description`` says why (it goes to the client in the 401)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def generate_sas_token(audience: str, policy: str, key: str, expiry: int | float | None = None) -> str:
    """A SAS token for ``audience`` signed with ``key`` (used as-is), valid until ``expiry`` (epoch s)."""
    if expiry is None:
        expiry = time.time() + 3600
    se = str(int(expiry))
    sr = quote_plus(audience)
    sig = _sign(key, sr, se)
    return SAS_PREFIX + urlencode({"sr": audience, "sig": sig, "se": se, "skn": policy})


def _sign(key: str, encoded_sr: str, se: str) -> str:
    digest = hmac.new(key.encode("utf-8"), (f"{encoded_sr}\n{se}").encode(), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


def parse_sas_token(token: str) -> dict[str, str]:
    """Split a token into its raw (still URL-encoded) fields; AuthError("Malformed…") when it is not one."""
    if not isinstance(token, str):
        raise AuthError(f"MalformedToken: the token must be a string, not {type(token).__name__}.")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AuthError(f"MalformedToken: the token is longer than {MAX_TOKEN_LENGTH} characters.")
    text = token.strip() + " "
    if text[: len(SAS_PREFIX)].lower() != SAS_PREFIX.lower():
        raise AuthError("MalformedToken: the token does not start with 'SharedAccessSignature '.")
    fields: dict[str, str] = {}
    for part in text[len(SAS_PREFIX) :].strip().split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise AuthError(f"MalformedToken: field {name[:40]!r} has no value.")
        name = name.strip()
        if name in fields:
            raise AuthError(f"MalformedToken: field {name!r} appears twice.")
        fields[name] = value
    missing = [f for f in ("sr", "sig", "se", "skn") if not fields.get(f)]
    if missing:
        raise AuthError(f"MalformedToken: missing field(s) {', '.join(missing)}.")
    return fields


def validate_sas_token(token: str, audience: str, policies: dict[str, str], now: float) -> str:
    """Check ``token`` for ``audience``; return the policy name, or raise AuthError with the reason.

    Checks, in order: shape, policy name, signature (constant-time), expiry (``se > now``), scope.
    """
    fields = parse_sas_token(token)
    policy = unquote_plus(fields["skn"])
    key = policies.get(policy)
    if key is None:
        raise AuthError(f"UnknownPolicy: no shared access policy named {policy!r} exists on this namespace.")
    se = fields["se"]
    if not se.isdigit():
        raise AuthError(f"MalformedToken: se={se[:40]!r} is not an integer expiry time.")
    got = unquote_plus(fields["sig"]).encode("ascii", "replace")
    sr_raw = fields["sr"]
    matched = False
    for candidate in _sr_candidates(sr_raw):
        if hmac.compare_digest(_sign(key, candidate, se).encode("ascii"), got):
            matched = True
    if not matched:
        raise AuthError(f"InvalidSignature: The token has an invalid signature (policy {policy!r}).")
    if int(se) <= now:
        raise AuthError(
            f"ExpiredToken: The token expired at {_iso(int(se))} (epoch {se}); now is {int(now)}."
        )
    sr = unquote_plus(sr_raw)
    if not audience_covers(sr, audience):
        raise AuthError(f"InvalidAudience: The token's audience {sr!r} does not cover {audience!r}.")
    return policy


def _sr_candidates(sr_raw: str) -> list[str]:
    """The encodings a client may have signed: as sent, re-encoded by quote_plus, lower-case escapes."""
    out = [sr_raw]
    for variant in (quote_plus(unquote_plus(sr_raw)), _ESCAPE_RE.sub(lambda m: m.group(0).lower(), sr_raw)):
        if variant not in out:
            out.append(variant)
    return out


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _split(uri: str) -> tuple[str, str, list[str]]:
    text = uri.strip()
    if "://" not in text:
        text = "sb://" + text
    parts = urlsplit(text)
    scheme = _EQUIVALENT_SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    segments = [s.lower() for s in parts.path.split("/") if s]
    return scheme, parts.netloc.lower(), segments


def audience_covers(token_audience: str, requested: str) -> bool:
    """True when a token for ``token_audience`` authorises ``requested`` (see the module docstring)."""
    t_scheme, t_host, t_path = _split(token_audience)
    r_scheme, r_host, r_path = _split(requested)
    if t_scheme != r_scheme or t_host != r_host:
        return False
    return r_path[: len(t_path)] == t_path
