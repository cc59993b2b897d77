"""SAS validation against tokens minted by the SDK itself, and the group-key derivation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from azure.iot.device.common.auth.sastoken import RenewableSasToken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism

from enginehub.harness.iothub import auth
from enginehub.harness.iothub.errors import AuthError

KEY = base64.b64encode(b"k" * 32).decode()
OTHER = base64.b64encode(b"o" * 32).decode()


def _sdk_token(uri: str = "myhub.local/devices/engine-001", key: str = KEY, ttl: int = 3600) -> str:
    return str(RenewableSasToken(uri, SymmetricKeySigningMechanism(key), ttl=ttl))


def _validate(token: str, hostname: str, device_id: str, keys, now=None) -> auth.SasToken:
    t = auth.parse_sas_token(token)
    auth.check_audience(t, hostname, device_id)
    auth.check_expiry(t, now if now is not None else time.time())
    if not auth.check_signature(t, keys):
        raise AuthError("bad signature")
    return t


def test_sdk_token_validates_with_primary_or_secondary():
    tok = _sdk_token()
    assert "%2F" in tok  # the SDK's upper-case encoding, verified as sent
    _validate(tok, "myhub.local", "engine-001", [KEY, None])
    _validate(tok, "MYHUB.local", "engine-001", [OTHER, KEY])


@pytest.mark.parametrize(
    ("hostname", "device", "keys", "now_offset"),
    [
        ("myhub.local", "engine-002", [KEY], 0),  # wrong device
        ("myhub.local", "ENGINE-001", [KEY], 0),  # ids are case-sensitive
        ("otherhub.local", "engine-001", [KEY], 0),
        ("myhub.local", "engine-001", [OTHER], 0),  # wrong key
        ("myhub.local", "engine-001", [KEY], 7200),  # expired
    ],
)
def test_rejections(hostname, device, keys, now_offset):
    with pytest.raises(AuthError):
        _validate(_sdk_token(), hostname, device, keys, now=time.time() + now_offset)


@pytest.mark.parametrize(
    "bad",
    [
        "Bearer x",
        "SharedAccessSignature sr=a&sig=b",
        "SharedAccessSignature sr=a&sig=b&se=soon",
        "SharedAccessSignature sr=a&sig",
        "SharedAccessSignature " + "x" * 5000,
    ],
)
def test_malformed_tokens(bad):
    with pytest.raises(AuthError):
        auth.parse_sas_token(bad)


def test_generated_token_equals_sdk_token_form():
    se = int(time.time()) + 100
    ours = auth.generate_sas_token("myhub.local/devices/engine-001", KEY, expiry=se)
    theirs = RenewableSasToken(
        "myhub.local/devices/engine-001", SymmetricKeySigningMechanism(KEY), ttl=se - int(time.time())
    )
    assert (
        auth.parse_sas_token(ours).sig == auth.parse_sas_token(str(theirs)).sig
        or abs(auth.parse_sas_token(str(theirs)).se - se) <= 1
    )


def test_group_key_derivation():
    expected = base64.b64encode(hmac.new(b"k" * 32, b"eng-7", hashlib.sha256).digest()).decode()
    assert auth.derive_device_key(KEY, "eng-7") == expected


def test_policy_token():
    tok = auth.generate_sas_token("myhub.local", KEY, ttl=60, policy="iothubowner")
    t = auth.parse_sas_token(tok)
    assert t.skn == "iothubowner"
    auth.check_audience(t, "myhub.local", "any-device")
    assert auth.check_signature(t, [KEY])


def test_bad_base64_key():
    with pytest.raises(AuthError):
        auth.sign("not base64!!", "x")


def test_connection_string_roundtrip():
    cs = auth.device_connection_string("h", "d", KEY, "127.0.0.2")
    assert auth.parse_connection_string(cs) == {
        "HostName": "h",
        "DeviceId": "d",
        "SharedAccessKey": KEY,
        "GatewayHostName": "127.0.0.2",
    }
    with pytest.raises(ValueError):
        auth.parse_connection_string("HostName")
