"""The bridge's direct telemetry encoder writes exactly the bytes of the general ``encode_event`` path."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from enginehub.harness.bridge import _encode_general, encode_telemetry
from enginehub.harness.eventhubs.message import decode_event
from enginehub.harness.iothub.server import Telemetry
from enginehub.harness.iothub.state import AUTH_METHOD_SAS

_text = st.text(max_size=300)
_props = st.dictionaries(
    st.sampled_from(
        [
            "message-id",
            "correlation-id",
            "content-type",
            "content-encoding",
            "to",
            "user-id",
            "absolute-expiry-time",
        ]
    ),
    st.one_of(
        st.text(alphabet=st.characters(max_codepoint=127), max_size=300),
        _text,
        st.sampled_from(["2030-01-02T03:04:05Z", "not-a-time"]),
    ),
)
_app = st.dictionaries(_text, st.one_of(st.none(), _text), max_size=40)


@st.composite
def _telemetry(draw: st.DrawFn) -> Telemetry:
    device_id = draw(st.text(min_size=1, max_size=40))
    ann: dict[str, object] = {
        "iothub-connection-device-id": device_id,
        "iothub-connection-auth-method": AUTH_METHOD_SAS,
        "iothub-connection-auth-generation-id": draw(st.text(max_size=30)),
        "iothub-enqueuedtime": draw(st.integers(0, 2**45)),
        "iothub-message-source": "Telemetry",
    }
    if draw(st.booleans()):
        ann["dt-dataschema"] = draw(_text)
    if draw(st.booleans()):
        ann["dt-subject"] = draw(_text)
    return Telemetry(
        device_id,
        draw(st.binary(max_size=600)),
        draw(_props),
        draw(_app),
        ann,
        ann["iothub-enqueuedtime"],  # type: ignore[arg-type]
    )


def _outcome(fn, telemetry: Telemetry) -> object:  # type: ignore[no-untyped-def]
    try:
        return fn(telemetry)
    except Exception as exc:  # the same failure either way (e.g. a non-ASCII content-type)
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(_telemetry())
def test_direct_encoding_equals_general_path(telemetry: Telemetry) -> None:
    assert _outcome(encode_telemetry, telemetry) == _outcome(_encode_general, telemetry)


def test_usual_telemetry_decodes_as_built() -> None:
    t = Telemetry(
        "dev-1",
        b"1 2 3",
        {"message-id": "m-1", "content-type": "text/plain", "correlation-id": "c"},
        {"k": "v", "flag": None},
        {
            "iothub-connection-device-id": "dev-1",
            "iothub-connection-auth-method": "sas",
            "iothub-enqueuedtime": 1_700_000_000_123,
            "iothub-message-source": "Telemetry",
        },
        1_700_000_000_123,
    )
    payload = encode_telemetry(t)
    assert payload == _encode_general(t)
    msg = decode_event(payload)
    assert msg.properties.message_id == "m-1"
    assert msg.properties.content_type == "text/plain"
    assert msg.application_properties == {"k": "v", "flag": None}
    assert msg.message_annotations["iothub-connection-device-id"] == "dev-1"
