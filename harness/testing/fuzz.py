"""Fuzz targets for the decoders that take bytes from the network or from users (issue 19, part 1).

Each target is a pure function of one generated input; it may only raise the decoder's declared errors
(anything else is a finding). ``run(target, cases)`` drives one with hypothesis for ``cases`` examples and
returns the count and the time; ``benchmarks/fuzz.py`` (``make fuzz``) runs every target for 100,000 cases,
and ``tests/unit/test_fuzz_targets.py`` runs a short profile in CI.

Why hypothesis and not atheris: the decoders are pure Python, where atheris's coverage guidance needs its
instrumented import hooks and a libFuzzer build per Python; hypothesis is already a test dependency, gives
structured inputs (valid-looking frames, tokens, TOML) that reach far deeper than random bytes, shrinks a
finding to a minimal example, and runs on every CI machine. Plain bytes are fuzzed too.
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from enginehub.datasets import codecs as payload_codecs
from enginehub.harness.amqp import connection as amqp_connection
from enginehub.harness.amqp.codec import Symbol, decode_value, skip_value
from enginehub.harness.amqp.errors import CODEC_ERRORS as AMQP_ERRORS
from enginehub.harness.amqp.framing import (
    AMQP_HEADER,
    SASL_HEADER,
    FrameParser,
    FramingError,
    decode_performative,
    encode_frame,
)
from enginehub.harness.amqp.message import decode_message, scan_sections
from enginehub.harness.amqp.performatives import (
    Accepted,
    Attach,
    Begin,
    Close,
    Detach,
    Disposition,
    End,
    Flow,
    Open,
    SASLInit,
    Source,
    Transfer,
)
from enginehub.harness.amqp.performatives import Target as AmqpTarget
from enginehub.harness.eventhubs import auth as eh_auth
from enginehub.harness.eventhubs.config import ConfigError, parse_config
from enginehub.harness.iothub import auth as iot_auth
from enginehub.harness.iothub import codec as mqtt
from enginehub.harness.iothub.errors import CODEC_ERRORS as MQTT_ERRORS
from enginehub.harness.iothub.errors import TopicError
from enginehub.harness.iothub.topics import parse_property_bag, parse_telemetry_topic
from enginehub.ingest.payloads import PayloadFormatError, parse_payload
from enginehub.ingest.rules import RuleConfigError, parse_rules


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]


def _amqp_bytes(data: bytes) -> None:
    for fn in (decode_value, decode_performative, scan_sections, decode_message):
        try:
            fn(data)
        except AMQP_ERRORS:
            pass
    try:
        skip_value(data, 0)
    except AMQP_ERRORS:
        pass


def _amqp_frames(data: bytes) -> None:
    parser = FrameParser(512)
    parser.feed(data)
    try:
        for frame in parser.frames():
            if frame.body:
                try:
                    decode_performative(frame.body)
                except AMQP_ERRORS:
                    pass
    except FramingError:
        pass


def _mqtt_bytes(data: bytes) -> None:
    try:
        res = mqtt.decode(data, max_packet_size=1024)
    except MQTT_ERRORS:
        return
    if res is not None:
        pkt, used = res
        assert 2 <= used <= len(data)


def _mqtt_bodies(args: tuple[int, bytes]) -> None:
    first, body = args
    try:
        mqtt.decode_body(first, body)
    except MQTT_ERRORS:
        pass


def _mqtt_topic(topic: str) -> None:
    try:
        parse_telemetry_topic(topic)
    except TopicError:
        pass
    try:
        parse_property_bag(topic)
    except TopicError:
        pass


def _sas(token: str) -> None:
    try:
        eh_auth.parse_sas_token(token)
    except eh_auth.AuthError:
        pass
    try:
        iot_auth.parse_sas_token(token)
    except iot_auth.AuthError:
        pass


def _config(doc: Any) -> None:
    try:
        parse_config(doc)
    except ConfigError:
        pass


def _config_text(text: str) -> None:
    try:
        doc = json.loads(text)
    except ValueError:
        return
    _config(doc)


def _rules(text: str) -> None:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    try:
        parse_rules(doc)
    except RuleConfigError:
        pass


def _rules_doc(doc: Any) -> None:
    try:
        parse_rules(doc)
    except RuleConfigError:
        pass


def _payloads(args: tuple[str, bytes]) -> None:
    fmt, data = args
    try:
        payload_codecs.decode(data)
    except payload_codecs.PayloadError:
        pass
    text = data.decode("utf-8", "replace")
    try:
        parse_payload(fmt, text)
    except PayloadFormatError:
        pass


def _f(perf: Any, channel: int = 1, payload: bytes = b"", frame_type: int = 0) -> bytes:
    return encode_frame(channel, perf.encode_amqp() + payload, frame_type)


_AMQP_HANDSHAKE = (
    SASL_HEADER
    + _f(SASLInit(Symbol("ANONYMOUS"), b"", "localhost"), 0, frame_type=1)
    + AMQP_HEADER
    + _f(Open("c", "localhost", 1 << 20, 65535, None, None, None, None, None, None), 0)
)


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: Any) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("fuzz", 0) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Handler(amqp_connection.ConnectionHandler):
    def on_message(self, link: Any, delivery: Any) -> Any:
        return Accepted()


class _Internal(Exception):
    pass


class _ErrorTrap:
    """Turns the connection's catch-all 'internal error' log into a finding."""

    level = 40

    def handle(self, record: Any) -> None:
        if record.levelno >= 40:
            raise _Internal(
                f"{record.getMessage()}: {record.exc_info[1]!r}" if record.exc_info else record.getMessage()
            )


_u = st.integers(0, 2**32 - 1)
_small = st.integers(0, 4)
_maybe_u = st.none() | _u | _small
_amqp_frame = st.one_of(
    st.builds(lambda c, ch: _f(Begin(None, 0, 65536, 65536, 100, None, None, None), ch), st.none(), _small),
    st.builds(
        lambda h, role, ch: _f(
            Attach("l", h, role, 0, 1, Source("x"), AmqpTarget("t"), None, None, 0, 0, None, None, None), ch
        ),
        _small,
        st.booleans(),
        _small,
    ),
    st.builds(
        lambda a, b, c, d, h, dc, cr, ch: _f(Flow(a, b, c, d, h, dc, cr, None, None, None, None), ch),
        _maybe_u,
        _u,
        _u,
        _u,
        st.none() | _small,
        _maybe_u,
        _maybe_u,
        _small,
    ),  # fmt: skip
    st.builds(
        lambda h, did, more, ch, body: _f(
            Transfer(h, did, b"t", 0, False, more, None, None, None, None, None), ch, body
        ),
        _small,
        _maybe_u,
        st.booleans(),
        _small,
        st.binary(max_size=40),
    ),  # fmt: skip
    st.builds(
        lambda r, a, b, ch: _f(Disposition(r, a, b, True, Accepted(), None), ch),
        st.booleans(),
        _u,
        _maybe_u,
        _small,
    ),  # fmt: skip
    st.builds(lambda h, c, ch: _f(Detach(h, c, None), ch), _small, st.booleans(), _small),
    st.builds(lambda ch: _f(End(None), ch), _small),
    st.builds(lambda ch: _f(Close(None), ch), _small),
    st.binary(max_size=30),  # garbage between frames
)


_loop: asyncio.AbstractEventLoop | None = None


def _amqp_connection(frames: list[bytes]) -> None:
    """The connection state machine fed a handshake then an arbitrary sequence of frames: it may close the
    connection with a condition, never raise, and never reach its catch-all internal-error path."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    _loop.run_until_complete(_amqp_connection_async(frames))


async def _amqp_connection_async(frames: list[bytes]) -> None:
    conn = amqp_connection.AMQPConnection(_Handler())
    transport = _Transport()
    trap = _ErrorTrap()
    amqp_connection.LOG.addHandler(trap)  # type: ignore[arg-type]
    try:
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(_AMQP_HANDSHAKE)
        for data in frames:
            conn.data_received(data)
        conn.connection_lost(None)
    finally:
        amqp_connection.LOG.removeHandler(trap)  # type: ignore[arg-type]


class _MqttTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("fuzz", 0) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_DEVICE = "fuzz-dev"
_mqtt_topic_s = st.one_of(
    st.just(f"devices/{_DEVICE}/messages/events/"),
    st.builds(lambda bag: f"devices/{_DEVICE}/messages/events/{bag}", st.text(max_size=30)),
    st.sampled_from(
        [
            f"devices/{_DEVICE}/messages/devicebound/#",
            "$iothub/twin/res/#",
            "$iothub/methods/POST/#",
            "$iothub/twin/GET/?$rid=1",
            "$iothub/twin/PATCH/properties/reported/?$rid=2",
            "devices/other/messages/events/",
        ]
    ),  # fmt: skip
    st.text(max_size=30),
)
_mqtt_packet = st.one_of(
    st.builds(
        lambda t, p, q, pid: mqtt.encode(mqtt.Publish(t, p, q, pid if q else None)),
        _mqtt_topic_s,
        st.binary(max_size=40),
        st.integers(0, 1),
        st.integers(1, 0xFFFF),
    ),  # fmt: skip
    st.builds(
        lambda pid, t, q: mqtt.encode(mqtt.Subscribe(pid, ((t, q),))),
        st.integers(1, 0xFFFF),
        _mqtt_topic_s,
        st.integers(0, 2),
    ),  # fmt: skip
    st.builds(lambda pid: mqtt.encode(mqtt.Puback(pid)), st.integers(1, 0xFFFF)),
    st.just(mqtt.encode(mqtt.Pingreq())),
    st.just(mqtt.encode(mqtt.Disconnect())),
    st.builds(lambda c: mqtt.encode(mqtt.Connect(c)), st.text(max_size=10)),  # a second CONNECT
    st.binary(max_size=30),
)


def _mqtt_session(args: tuple[bool, list[bytes]]) -> None:
    """The IoT Hub's MQTT session fed a CONNECT (good or bad password) then arbitrary packets: it may answer
    with a CONNACK code or close the connection, never raise, never reach its catch-all error path."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    _loop.run_until_complete(_mqtt_session_async(*args))


async def _mqtt_session_async(good_password: bool, packets: list[bytes]) -> tuple[Any, _MqttTransport]:
    from enginehub.harness.iothub import server as iot_server

    hub = iot_server.IotHubEmulator(iot_server.MemoryRouter())
    hub.state = iot_server.LifecycleState.RUNNING
    device = hub.registry.create(_DEVICE)
    token = iot_auth.generate_sas_token(f"{hub.hostname}/devices/{_DEVICE}", device.primary_key, ttl=3600)
    password = token if good_password else token[:-3] + "xyz"
    connect = mqtt.Connect(
        _DEVICE, username=f"{hub.hostname}/{_DEVICE}/?api-version=2019-10-01", password=password.encode()
    )
    conn = iot_server._Connection(hub)
    transport = _MqttTransport()
    trap = _ErrorTrap()
    iot_server.LOG.addHandler(trap)  # type: ignore[arg-type]
    try:
        conn.connection_made(transport)
        conn.data_received(mqtt.encode(connect))
        for data in packets:
            conn.data_received(data)
            await asyncio.sleep(0)
        conn.connection_lost(None)
        for _ in range(3):
            await asyncio.sleep(0)
    finally:
        iot_server.LOG.removeHandler(trap)  # type: ignore[arg-type]
        for timer in conn._timers:
            timer.cancel()
    return hub, transport


_json_leaf = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=12)
_json = st.recursive(
    _json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=20,
)
_config_keys = st.sampled_from(
    ["UserConfig", "NamespaceConfig", "Entities", "Name", "PartitionCount", "ConsumerGroups", "Type",
     "Namespace", "LoggingConfig", "enginehub", "Description"]
)  # fmt: skip
_config_doc = st.recursive(
    _json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(_config_keys | st.text(max_size=6), kids, max_size=5)
    ),
    max_leaves=25,
)
_rule_keys = st.sampled_from(
    ["rule", "unmatched", "name", "table", "when", "match", "columns", "format", "action"]
)
_rules_doc_s = st.dictionaries(
    st.sampled_from(["rule", "unmatched"]) | st.text(max_size=5),
    st.lists(
        st.dictionaries(_rule_keys, _json_leaf | st.lists(_json_leaf, max_size=3), max_size=5), max_size=3
    )
    | _json_leaf,
    max_size=3,
)
_sas_text = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda fields: "SharedAccessSignature " + "&".join(fields),
        st.lists(
            st.builds(
                lambda k, v: f"{k}={v}",
                st.sampled_from(["sr", "sig", "se", "skn", "x"]),
                st.text(max_size=30),
            ),
            max_size=6,
        ),
    ),
)
_seedish = st.lists(
    st.one_of(st.integers(-5, 400).map(str), st.floats().map(repr), st.text(" .-e0123456789", max_size=8)),
    max_size=30,
).map(lambda xs: " ".join(xs).encode())

TARGETS: list[Target] = [
    Target("amqp-types", st.binary(max_size=300), _amqp_bytes),
    Target("amqp-frames", st.binary(max_size=400), _amqp_frames),
    Target("amqp-connection", st.lists(_amqp_frame, max_size=12), _amqp_connection),
    Target("mqtt-packets", st.binary(max_size=400), _mqtt_bytes),
    Target("mqtt-bodies", st.tuples(st.integers(0, 255), st.binary(max_size=200)), _mqtt_bodies),
    Target("mqtt-session", st.tuples(st.booleans(), st.lists(_mqtt_packet, max_size=10)), _mqtt_session),
    Target("mqtt-topics", st.text(max_size=200), _mqtt_topic),
    Target("sas-tokens", _sas_text, _sas),
    Target("config-json", _config_doc, _config),
    Target("config-json-text", st.text(max_size=200), _config_text),
    Target("rules-toml-text", st.text(max_size=200), _rules),
    Target("rules-toml-doc", _rules_doc_s, _rules_doc),
    Target(
        "payloads",
        st.tuples(st.sampled_from(["seed", "json", "auto", "raw"]), st.binary(max_size=300) | _seedish),
        _payloads,
    ),
]


def run(target: Target, cases: int, seed: int | None = None) -> tuple[int, float]:
    """Run ``target`` for ``cases`` generated inputs; returns (inputs tried, seconds). A finding raises the
    shrunk failing input's exception (hypothesis prints it)."""
    count = [0]

    def body(value: Any) -> None:
        count[0] += 1
        target.check(value)

    test = settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.target, Phase.shrink],
    )(given(target.strategy)(body))
    t0 = time.perf_counter()
    test()
    return count[0], time.perf_counter() - t0
