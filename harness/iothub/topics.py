"""Pure grammar of IoT Hub device topics, usernames and property bags (no I/O).

Property bags are ``urlencode(quote_via=quote)`` on the SDK side: keys and values percent-encoded with
``safe=''``. They are parsed by splitting on ``&``, then on the first ``=``, then ``urllib.parse.unquote``
(never ``unquote_plus``: ``+`` stays ``+``). A key without ``=`` has the value None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from enginehub.harness.iothub.errors import TopicError, UnsupportedTopicError

MAX_PROPERTIES = 256

#: Property-bag system keys -> AMQP ``properties`` section field names (EH-compatible endpoint).
SYSTEM_PROPERTY_KEYS = {
    "$.mid": "message-id",
    "$.cid": "correlation-id",
    "$.uid": "user-id",
    "$.ct": "content-type",
    "$.ce": "content-encoding",
    "$.exp": "absolute-expiry-time",
    "$.to": "to",
}
#: Property-bag system keys surfaced as message annotations by the hub.
ANNOTATION_KEYS = {"$.sub": "dt-subject"}
#: Property-bag system keys surfaced as application properties.
APPLICATION_SYSTEM_KEYS = {"$.ctime": "iothub-creation-time-utc"}


def parse_property_bag(bag: str) -> dict[str, str | None]:
    """``%24.mid=a&%24.ct=text%2Fplain&k`` -> ``{"$.mid": "a", "$.ct": "text/plain", "k": None}``."""
    props: dict[str, str | None] = {}
    if not bag:
        return props
    for segment in bag.split("&"):
        if not segment:
            continue
        if len(props) >= MAX_PROPERTIES:
            raise TopicError(f"property bag has more than {MAX_PROPERTIES} properties")
        key, sep, value = segment.partition("=")
        try:
            k = _KEY_CACHE.get(key)
            if k is None:
                k = unquote(key, errors="strict")
                if len(_KEY_CACHE) < 4096:
                    _KEY_CACHE[key] = k
            if not sep:
                v = None
            elif "%" in value:
                v = unquote(value, errors="strict")
            else:
                v = value  # nothing to decode (unquote would return it unchanged)
        except UnicodeDecodeError as exc:
            raise TopicError(f"property bag segment {segment[:80]!r} is not UTF-8: {exc.reason}") from None
        if not k:
            raise TopicError(f"property bag segment {segment[:80]!r} has an empty key")
        props[k] = v
    return props


# decoded keys ("%24.mid" -> "$.mid"): a small bounded cache, keys repeat on every message
_KEY_CACHE: dict[str, str] = {}


def encode_property_bag(props: dict[str, str | None]) -> str:
    """Inverse of :func:`parse_property_bag`, in the SDK's encoding (``quote(..., safe='')``)."""
    parts = []
    for k, v in props.items():
        ek = quote(k, safe="")
        parts.append(ek if v is None else f"{ek}={quote(v, safe='')}")
    return "&".join(parts)


@dataclass(frozen=True, slots=True)
class TelemetryTopic:
    device_id: str
    module_id: str | None
    properties: dict[str, str | None] = field(default_factory=dict)


def is_telemetry_topic(topic: str) -> bool:
    return topic.startswith("devices/") and "/messages/events" in topic


def parse_telemetry_topic(topic: str) -> TelemetryTopic:
    """``devices/{d}[/modules/{m}]/messages/events/[{bag}]``."""
    if not topic.startswith("devices/"):
        raise TopicError(f"not a telemetry topic: {topic[:120]!r}")
    rest = topic[len("devices/") :]
    head, sep, bag = rest.partition("/messages/events")
    if not sep:
        raise TopicError(f"not a telemetry topic: {topic[:120]!r}")
    if bag and not bag.startswith("/"):
        raise TopicError(f"not a telemetry topic: {topic[:120]!r}")
    bag = bag[1:]
    parts = head.split("/")
    if len(parts) == 1 and parts[0]:
        device_id, module_id = parts[0], None
    elif len(parts) == 3 and parts[0] and parts[1] == "modules" and parts[2]:
        device_id, module_id = parts[0], parts[2]
    else:
        raise TopicError(f"bad device/module part in telemetry topic: {topic[:120]!r}")
    return TelemetryTopic(device_id, module_id, parse_property_bag(bag))


def telemetry_topic(device_id: str, properties: dict[str, str | None] | None = None) -> str:
    return f"devices/{device_id}/messages/events/" + encode_property_bag(properties or {})


@dataclass(frozen=True, slots=True)
class SplitProperties:
    """A property bag split into the three places the hub puts them on the EH-compatible endpoint."""

    system: dict[str, str]  # AMQP properties section (message-id, content-type, ...)
    application: dict[str, str | None]
    annotations: dict[str, str]


def split_properties(props: dict[str, str | None]) -> SplitProperties:
    system: dict[str, str] = {}
    app: dict[str, str | None] = {}
    ann: dict[str, str] = {}
    for k, v in props.items():
        if k in SYSTEM_PROPERTY_KEYS:
            if v is not None:
                system[SYSTEM_PROPERTY_KEYS[k]] = v
        elif k in ANNOTATION_KEYS:
            if v is not None:
                ann[ANNOTATION_KEYS[k]] = v
        elif k in APPLICATION_SYSTEM_KEYS:
            app[APPLICATION_SYSTEM_KEYS[k]] = v
        else:
            app[k] = v  # custom properties, and unknown "$." keys kept rather than dropped
    return SplitProperties(system, app, ann)


# --- twin ----------------------------------------------------------------------------------------

TWIN_GET_PREFIX = "$iothub/twin/GET/"
TWIN_PATCH_REPORTED_PREFIX = "$iothub/twin/PATCH/properties/reported/"
TWIN_RESPONSE_FILTER = "$iothub/twin/res/#"
TWIN_DESIRED_FILTER = "$iothub/twin/PATCH/properties/desired/#"
METHODS_FILTER = "$iothub/methods/POST/#"


@dataclass(frozen=True, slots=True)
class TwinRequest:
    kind: str  # "GET" or "PATCH_REPORTED"
    rid: str


def _query(topic: str, prefix: str) -> dict[str, str | None]:
    rest = topic[len(prefix) :]
    if not rest.startswith("?"):
        raise TopicError(f"twin topic without '?$rid=': {topic[:120]!r}")
    return parse_property_bag(rest[1:])


def parse_twin_request(topic: str) -> TwinRequest:
    if topic.startswith(TWIN_GET_PREFIX):
        kind, q = "GET", _query(topic, TWIN_GET_PREFIX)
    elif topic.startswith(TWIN_PATCH_REPORTED_PREFIX):
        kind, q = "PATCH_REPORTED", _query(topic, TWIN_PATCH_REPORTED_PREFIX)
    elif topic.startswith("$iothub/"):
        raise UnsupportedTopicError(f"IoT Hub topic not supported by the emulator: {topic[:120]!r}")
    else:
        raise TopicError(f"unknown topic: {topic[:120]!r}")
    rid = q.get("$rid")
    if not rid:
        raise TopicError(f"twin request without $rid: {topic[:120]!r}")
    return TwinRequest(kind, rid)


def twin_response_topic(status: int, rid: str, version: int | None = None) -> str:
    topic = f"$iothub/twin/res/{status}/?$rid={quote(rid, safe='')}"
    if version is not None:
        topic += f"&$version={version}"
    return topic


METHOD_REQUEST_PREFIX = "$iothub/methods/POST/"
METHOD_RESPONSE_PREFIX = "$iothub/methods/res/"


def method_request_topic(method_name: str, rid: str) -> str:
    """``$iothub/methods/POST/{name}/?$rid={rid}`` (hub -> device)."""
    return f"{METHOD_REQUEST_PREFIX}{quote(method_name, safe='')}/?$rid={quote(rid, safe='')}"


def parse_method_response(topic: str) -> tuple[int, str]:
    """``$iothub/methods/res/{status}/?$rid={rid}`` (device -> hub) -> (status, rid)."""
    rest = topic[len(METHOD_RESPONSE_PREFIX) :]
    status_s, sep, query = rest.partition("/?")
    if not sep or not status_s.isdigit() or len(status_s) > 3:
        raise TopicError(
            f"method response topic is not '$iothub/methods/res/{{status}}/?$rid=': {topic[:120]!r}"
        )
    rid = parse_property_bag(query).get("$rid")
    if not rid:
        raise TopicError(f"method response without $rid: {topic[:120]!r}")
    return int(status_s), rid


def twin_desired_topic(version: int) -> str:
    return f"$iothub/twin/PATCH/properties/desired/?$version={version}"


def c2d_topic(device_id: str, properties: dict[str, str | None]) -> str:
    """``devices/{id}/messages/devicebound/{bag}``: the topic a cloud-to-device message is published on
    (system properties ``$.mid``, ``$.to``, ... and application properties, percent-encoded; ``/`` too,
    because the SDK takes the bag as one topic level)."""
    bag = encode_property_bag(properties)
    return f"devices/{device_id}/messages/devicebound/{bag}"


def topic_matches(filt: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest)."""
    fparts = filt.split("/")
    tparts = topic.split("/")
    for i, f in enumerate(fparts):
        if f == "#":
            return True
        if i >= len(tparts):
            return False
        if f != "+" and f != tparts[i]:
            return False
    return len(fparts) == len(tparts)


def allowed_subscription(filt: str, device_id: str) -> bool:
    """Topic filters a device may subscribe to on IoT Hub."""
    return filt in (
        TWIN_RESPONSE_FILTER,
        TWIN_DESIRED_FILTER,
        METHODS_FILTER,
        f"devices/{device_id}/messages/devicebound/#",
    ) or filt.startswith(f"devices/{device_id}/modules/")


# --- CONNECT username ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Username:
    hostname: str
    client_id: str
    query: dict[str, str | None]

    @property
    def model_id(self) -> str | None:
        return self.query.get("model-id")

    @property
    def api_version(self) -> str | None:
        return self.query.get("api-version")


def parse_username(username: str) -> Username:
    """``{hub}/{client_id}/?api-version=...&DeviceClientType=...[&model-id=...]``."""
    host, sep, rest = username.partition("/")
    if not sep or not host:
        raise TopicError(f"username is not '{{hub}}/{{device}}/?...': {username[:120]!r}")
    client_id, sep, query = rest.partition("/?")
    if not sep:
        client_id = rest.rstrip("/")
        query = ""
    if not client_id:
        raise TopicError(f"username without device id: {username[:120]!r}")
    return Username(host, client_id, parse_property_bag(query))
