"""Pure checks of the service API's token rules, etags and the direct-method topics (no I/O)."""

from __future__ import annotations

import pytest

from enginehub.harness.iothub import auth, topics
from enginehub.harness.iothub.errors import AuthError, PreconditionFailed, TopicError
from enginehub.harness.iothub.service import check_etag
from enginehub.harness.iothub.state import POLICY_RIGHTS, Registry

NOW = 1_800_000_000.0
HOSTS = ["hub.azure-devices.net", "127.0.0.5:40001", "127.0.0.5"]


@pytest.fixture
def reg() -> Registry:
    return Registry("hub.azure-devices.net")


def _check(reg: Registry, token: str | None, *needed: str) -> auth.SasToken:
    return auth.check_service_token(token, HOSTS, reg.policies, POLICY_RIGHTS, needed, NOW)


def test_owner_token_over_any_hub_name_passes(reg: Registry) -> None:
    for host in HOSTS:
        token = auth.generate_sas_token(host, reg.policies["iothubowner"], NOW + 60, policy="iothubowner")
        assert _check(reg, token, "RegistryWrite").skn == "iothubowner"
    # the AMQP client of azure-iot-hub signs the host unquoted: accepted as well
    sr = "127.0.0.5:40001"
    sig = auth.sign(reg.policies["service"], f"{sr}\n{int(NOW + 60)}")
    token = f"SharedAccessSignature sr={sr}&sig={sig}&se={int(NOW + 60)}&skn=service"
    assert _check(reg, token, "ServiceConnect").resource == sr


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda r: None, "no Authorization"),
        (
            lambda r: auth.generate_sas_token(
                "hub.azure-devices.net/devices/d1", auth.generate_key(), NOW + 60
            ),
            "device-scoped",
        ),
        (
            lambda r: auth.generate_sas_token(
                "other.azure-devices.net", r.policies["iothubowner"], NOW + 60, policy="iothubowner"
            ),
            "not this hub",
        ),
        (
            lambda r: auth.generate_sas_token(
                "hub.azure-devices.net", auth.generate_key(), NOW + 60, policy="iothubowner"
            ),
            "bad signature",
        ),
        (
            lambda r: auth.generate_sas_token(
                "hub.azure-devices.net", r.policies["iothubowner"], NOW + 60, policy="nosuch"
            ),
            "unknown policy",
        ),
        (
            lambda r: auth.generate_sas_token(
                "hub.azure-devices.net", r.policies["iothubowner"], NOW - 1, policy="iothubowner"
            ),
            "expired",
        ),
        (
            lambda r: auth.generate_sas_token(
                "hub.azure-devices.net", r.policies["device"], NOW + 60, policy="device"
            ),
            "lacks",
        ),
    ],
)
def test_refused_tokens_say_why(reg: Registry, make, reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        _check(reg, make(reg), "RegistryRead", "ServiceConnect")


def test_policy_rights(reg: Registry) -> None:
    read = auth.generate_sas_token(HOSTS[0], reg.policies["registryRead"], NOW + 60, policy="registryRead")
    assert _check(reg, read, "RegistryRead")
    with pytest.raises(AuthError, match="lacks RegistryWrite"):
        _check(reg, read, "RegistryWrite")


def test_service_policy_cannot_connect_a_device(reg: Registry) -> None:
    reg.create("d1")
    token = auth.generate_sas_token(
        f"{HOSTS[0]}/devices/d1", reg.policies["service"], NOW + 60, policy="service"
    )
    with pytest.raises(AuthError, match="DeviceConnect"):
        reg.authenticate("d1", token, NOW)


@pytest.mark.parametrize("if_match", [None, "*", '"*"', '"abc"', "abc", 'W/"abc"'])
def test_etag_matches(if_match: str | None) -> None:
    check_etag(if_match, "abc")


@pytest.mark.parametrize("if_match", ['"abd"', "", '"'])
def test_etag_mismatch_is_412(if_match: str) -> None:
    with pytest.raises(PreconditionFailed):
        check_etag(if_match, "abc")


def test_method_topics_roundtrip_the_sdk_format() -> None:
    assert topics.method_request_topic("set Rate", "1f") == "$iothub/methods/POST/set%20Rate/?$rid=1f"
    assert topics.parse_method_response("$iothub/methods/res/200/?$rid=1f") == (200, "1f")
    assert topics.parse_method_response("$iothub/methods/res/404/?$rid=a%2Fb") == (404, "a/b")
    for bad in (
        "$iothub/methods/res/abc/?$rid=1",
        "$iothub/methods/res/200/",
        "$iothub/methods/res/200/?x=1",
    ):
        with pytest.raises(TopicError):
            topics.parse_method_response(bad)
