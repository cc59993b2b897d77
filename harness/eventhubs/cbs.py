"""``$cbs`` put-token and the per-connection authorisation it grants; request/response message helpers.

A put-token request carries ``application-properties`` ``operation="put-token"``, ``name`` = audience,
``type`` = ``servicebus.windows.net:sastoken`` (``jwt`` is refused: it cannot be validated offline) and
the token as an amqp-value string body. The reply correlates by the request's message-id (same AMQP type)
and carries an int ``status-code`` (202 accepted, 401 refused) and the description under both
``status-description`` and ``statusDescription``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from enginehub.harness.amqp.codec import Int
from enginehub.harness.amqp.message import AMQP_VALUE, Message, encode_message, encode_section
from enginehub.harness.amqp.performatives import Properties
from enginehub.harness.eventhubs.auth import AuthError, validate_sas_token

LOG = logging.getLogger(__name__)

SAS_TOKEN_TYPE = "servicebus.windows.net:sastoken"


def path_segments(address: str) -> list[str]:
    """Lower-cased path segments of an address (scheme and host dropped): ``amqps://h/eh1/Partitions/0``."""
    text = address.strip()
    path = urlsplit(text).path if "://" in text else text
    return [s.lower() for s in path.split("/") if s]


class Authorization:
    """The audiences a connection holds a valid token for (path prefixes, case-insensitive)."""

    def __init__(self) -> None:
        self._paths: list[list[str]] = []

    def grant(self, audience: str) -> None:
        segs = path_segments(audience)
        if segs not in self._paths:
            self._paths.append(segs)

    def covers(self, address: str) -> bool:
        segs = path_segments(address)
        return any(segs[: len(p)] == p for p in self._paths)


def response(request_id: Any, status: int, description: str, body: Any = None) -> bytes:
    """Encode a $cbs/$management reply correlated to ``request_id``."""
    msg = Message(
        properties=Properties(correlation_id=request_id),
        application_properties={
            "status-code": Int(status),
            "status-description": description,
            "statusDescription": description,
        },
    )
    out = encode_message(msg)
    if body is not None:
        out += encode_section(AMQP_VALUE, body)
    return out


def put_token(
    request: Message,
    authorization: Authorization,
    policies: dict[str, str],
    clock: Callable[[], float] = time.time,
) -> tuple[int, str]:
    """Validate a put-token request; on success grant its audience. Returns (status, description)."""
    props = request.application_properties or {}
    operation = props.get("operation")
    if operation != "put-token":
        return 400, f"Unsupported $cbs operation {operation!r}; only put-token is supported."
    audience = props.get("name")
    token_type = props.get("type")
    token = request.value
    if not isinstance(audience, str) or not audience:
        return 400, "put-token needs the audience in application property 'name'."
    if token_type != SAS_TOKEN_TYPE:
        return 401, f"Token type {token_type!r} is not supported by the emulator; use a SAS token."
    if isinstance(token, bytes):
        token = token.decode("utf-8", "replace")
    if not isinstance(token, str):
        return 401, "MalformedToken: the token must be an amqp-value string."
    try:
        policy = validate_sas_token(token, audience, policies, clock())
    except AuthError as exc:
        LOG.info("put-token refused for %s: %s", audience, exc.description)
        return 401, exc.description
    authorization.grant(audience)
    LOG.debug("put-token accepted for %s (policy %s)", audience, policy)
    return 202, "Accepted"
