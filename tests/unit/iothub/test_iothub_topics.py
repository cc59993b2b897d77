"""IoT Hub topic grammar and property bags, checked against the SDK's own encoder."""

from __future__ import annotations

import pytest
from azure.iot.device import Message
from azure.iot.device.iothub.pipeline import mqtt_topic_iothub
from hypothesis import given
from hypothesis import strategies as st

from enginehub.harness.iothub import topics
from enginehub.harness.iothub.errors import TopicError, UnsupportedTopicError


def _sdk_topic(msg: Message, device_id: str = "eng-0001") -> str:
    return mqtt_topic_iothub.encode_message_properties_in_topic(
        msg, mqtt_topic_iothub.get_telemetry_topic_for_publish(device_id, None)
    )


def test_wire_example_from_the_protocol_notes():
    t = topics.parse_telemetry_topic(
        "devices/eng-0000/messages/events/%24.mid=eng-0000-0&%24.ct=application%2Fjson&%24.ce=utf-8"
        "&iothub-creation-time-utc=2024-01-01T00%3A00%3A00Z"
    )
    assert t.device_id == "eng-0000"
    assert t.module_id is None
    assert t.properties == {
        "$.mid": "eng-0000-0",
        "$.ct": "application/json",
        "$.ce": "utf-8",
        "iothub-creation-time-utc": "2024-01-01T00:00:00Z",
    }


def test_sdk_encoded_message_properties_parse_back():
    msg = Message(b"{}", message_id="m 1+2", content_encoding="utf-8", content_type="application/json")
    msg.correlation_id = "c/1"
    msg.custom_properties = {"a+b": "x y&z=1", "%24": "$", "emoji": "\u00e9\u2603"}
    t = topics.parse_telemetry_topic(_sdk_topic(msg))
    assert t.properties == {
        "$.mid": "m 1+2",
        "$.cid": "c/1",
        "$.ct": "application/json",
        "$.ce": "utf-8",
        "%24": "$",
        "a+b": "x y&z=1",
        "emoji": "\u00e9\u2603",
    }
    split = topics.split_properties(t.properties)
    assert split.system == {
        "message-id": "m 1+2",
        "correlation-id": "c/1",
        "content-type": "application/json",
        "content-encoding": "utf-8",
    }
    assert split.application == {"%24": "$", "a+b": "x y&z=1", "emoji": "\u00e9\u2603"}


def test_plus_is_never_a_space():
    assert topics.parse_property_bag("k=a+b&x%2By=%20") == {"k": "a+b", "x+y": " "}


def test_key_without_value_and_empty_segments():
    assert topics.parse_property_bag("a&&b=&c=1") == {"a": None, "b": "", "c": "1"}


@given(
    st.dictionaries(st.text(min_size=1, max_size=20), st.one_of(st.none(), st.text(max_size=20)), max_size=8)
)
def test_bag_roundtrip(props):
    assert topics.parse_property_bag(topics.encode_property_bag(props)) == props


def test_bag_errors():
    with pytest.raises(TopicError):
        topics.parse_property_bag("=v")
    with pytest.raises(TopicError):
        topics.parse_property_bag("k=%ff%fe")
    at = "&".join(f"k{i}=v" for i in range(topics.MAX_PROPERTIES))
    assert len(topics.parse_property_bag(at)) == topics.MAX_PROPERTIES
    with pytest.raises(TopicError):
        topics.parse_property_bag(at + "&one=more")


def test_module_and_empty_bag():
    assert topics.parse_telemetry_topic("devices/d/modules/m/messages/events/").module_id == "m"
    t = topics.parse_telemetry_topic("devices/d/messages/events")
    assert (t.device_id, t.properties) == ("d", {})


@pytest.mark.parametrize(
    "bad", ["devices//messages/events/", "devices/a/b/messages/events/", "devices/d/messages/eventsX", "x/d"]
)
def test_bad_telemetry_topics(bad):
    with pytest.raises(TopicError):
        topics.parse_telemetry_topic(bad)


def test_twin_topics_as_the_sdk_builds_them():
    # resource locations as in azure/iot/device/iothub/pipeline/pipeline_stages_iothub.py
    get = mqtt_topic_iothub.get_twin_topic_for_publish("GET", "/", "6b3a")
    assert topics.parse_twin_request(get) == topics.TwinRequest("GET", "6b3a")
    patch = mqtt_topic_iothub.get_twin_topic_for_publish("PATCH", "/properties/reported/", "r2")
    assert topics.parse_twin_request(patch) == topics.TwinRequest("PATCH_REPORTED", "r2")
    with pytest.raises(UnsupportedTopicError):
        topics.parse_twin_request("$iothub/methods/res/200/?$rid=1")
    with pytest.raises(TopicError):
        topics.parse_twin_request("$iothub/twin/GET/?x=1")


def test_twin_response_topics_parse_in_the_sdk():
    t = topics.twin_response_topic(204, "r2", version=7)
    assert mqtt_topic_iothub.is_twin_response_topic(t)
    assert mqtt_topic_iothub.get_twin_request_id_from_topic(t) == "r2"
    assert str(mqtt_topic_iothub.get_twin_status_code_from_topic(t)) == "204"
    assert mqtt_topic_iothub.is_twin_desired_property_patch_topic(topics.twin_desired_topic(3))


def test_username():
    u = topics.parse_username(
        "hub.azure-devices.net/eng-1/?api-version=2020-09-30&DeviceClientType=x%2F1&model-id=dtmi%3Aa%3Bb%3B1"
    )
    assert (u.hostname, u.client_id, u.api_version, u.model_id) == (
        "hub.azure-devices.net",
        "eng-1",
        "2020-09-30",
        "dtmi:a;b;1",
    )
    assert topics.parse_username("hub/dev/m1/?api-version=1").client_id == "dev/m1"
    for bad in ("nohost", "/d/?x", "hub//?a=1"):
        with pytest.raises(TopicError):
            topics.parse_username(bad)


def test_filters():
    assert topics.topic_matches("$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1")
    assert topics.topic_matches("a/+/c", "a/b/c")
    assert not topics.topic_matches("a/+/c", "a/b/d")
    assert topics.allowed_subscription("devices/d/messages/devicebound/#", "d")
    assert not topics.allowed_subscription("devices/other/messages/devicebound/#", "d")
    assert not topics.allowed_subscription("#", "d")
