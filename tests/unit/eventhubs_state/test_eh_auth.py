"""SAS validation: the SDK's own tokens validate; tampered, expired, foreign and malformed ones fail."""

from __future__ import annotations

import time
from urllib.parse import quote_plus

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.eventhub._client_base import EventhubAzureNamedKeyTokenCredential
from azure.eventhub._pyamqp.utils import generate_sas_token as sdk_generate_sas_token

from enginehub.harness.eventhubs.auth import (
    AuthError,
    audience_covers,
    generate_sas_token,
    parse_sas_token,
    validate_sas_token,
)

KEY = "3q2+7w=="  # looks like base64 on purpose: it must be used as-is, not decoded
POLICIES = {"RootManageSharedAccessKey": KEY, "listen": "other-key"}
AUD = "sb://127.0.0.1:5672/eh1"
NOW = 1_800_000_000.0


def test_sdk_token_validates() -> None:
    token = sdk_generate_sas_token(AUD, "RootManageSharedAccessKey", KEY, NOW + 3600)
    assert validate_sas_token(token, AUD, POLICIES, NOW) == "RootManageSharedAccessKey"


def test_sdk_credential_token_validates() -> None:
    cred = EventhubAzureNamedKeyTokenCredential(AzureNamedKeyCredential("listen", "other-key"))
    aud = "sb://localhost:5673/eh1/consumergroups/$Default"
    token = cred.get_token(aud).token
    if isinstance(token, bytes):
        token = token.decode()
    assert validate_sas_token(token, aud, POLICIES, time.time()) == "listen"


def test_ours_matches_sdk_bytes() -> None:
    assert generate_sas_token(AUD, "p", KEY, NOW) == sdk_generate_sas_token(AUD, "p", KEY, NOW)


def test_tampered_signature() -> None:
    token = sdk_generate_sas_token(AUD, "RootManageSharedAccessKey", KEY, NOW + 3600)
    fields = parse_sas_token(token)
    sig = fields["sig"]
    bad = token.replace(sig, ("A" if sig[0] != "A" else "B") + sig[1:])
    with pytest.raises(AuthError, match="InvalidSignature"):
        validate_sas_token(bad, AUD, POLICIES, NOW)


def test_tampered_expiry_and_audience() -> None:
    token = sdk_generate_sas_token(AUD, "RootManageSharedAccessKey", KEY, NOW + 3600)
    with pytest.raises(AuthError, match="InvalidSignature"):
        validate_sas_token(token.replace(f"se={NOW + 3600:.0f}", f"se={NOW + 7200:.0f}"), AUD, POLICIES, NOW)
    with pytest.raises(AuthError, match="InvalidSignature"):
        validate_sas_token(token.replace("eh1", "eh2"), "sb://127.0.0.1:5672/eh2", POLICIES, NOW)


def test_wrong_key() -> None:
    token = sdk_generate_sas_token(AUD, "RootManageSharedAccessKey", "nope", NOW + 3600)
    with pytest.raises(AuthError, match="InvalidSignature"):
        validate_sas_token(token, AUD, POLICIES, NOW)


def test_key_used_as_is_not_b64_decoded() -> None:
    import base64
    import hashlib
    import hmac

    sig = base64.b64encode(
        hmac.new(
            base64.b64decode(KEY), (f"{quote_plus(AUD)}\n{NOW + 60:.0f}").encode(), hashlib.sha256
        ).digest()
    ).decode()
    token = (
        f"SharedAccessSignature sr={quote_plus(AUD)}&sig={quote_plus(sig)}&se={NOW + 60:.0f}"
        "&skn=RootManageSharedAccessKey"
    )
    with pytest.raises(AuthError, match="InvalidSignature"):
        validate_sas_token(token, AUD, POLICIES, NOW)


def test_unknown_policy() -> None:
    token = sdk_generate_sas_token(AUD, "ghost", KEY, NOW + 3600)
    with pytest.raises(AuthError, match="UnknownPolicy: no shared access policy named 'ghost'"):
        validate_sas_token(token, AUD, POLICIES, NOW)


def test_expired() -> None:
    token = sdk_generate_sas_token(AUD, "RootManageSharedAccessKey", KEY, NOW)
    with pytest.raises(AuthError, match="ExpiredToken"):
        validate_sas_token(token, AUD, POLICIES, NOW)
    assert validate_sas_token(token, AUD, POLICIES, NOW - 1)


@pytest.mark.parametrize(
    ("token_aud", "requested", "ok"),
    [
        ("sb://h/eh1", "sb://h/eh1", True),
        ("sb://h/eh1", "sb://H/EH1/Partitions/0", True),
        ("sb://h/eh1", "amqps://h/eh1/ConsumerGroups/$Default/Partitions/3", True),
        ("sb://h/eh1/", "sb://h/eh1/consumergroups/cg", True),
        ("sb://h/eh1", "sb://h/eh10", False),
        ("sb://h/eh1", "sb://h/", False),
        ("sb://h/eh1/Partitions/0", "sb://h/eh1/Partitions/1", False),
        ("sb://h/", "sb://h/anything/at/all", True),
        ("sb://h", "sb://h/eh1", True),
        ("sb://h/eh1", "sb://other/eh1", False),
        ("sb://h:5672/eh1", "sb://h:5673/eh1", False),
        ("https://h/eh1", "sb://h/eh1", False),
    ],
)
def test_audience_scope(token_aud: str, requested: str, ok: bool) -> None:
    assert audience_covers(token_aud, requested) is ok


def test_audience_not_covered_is_reported() -> None:
    token = generate_sas_token("sb://h/eh1", "listen", "other-key", NOW + 10)
    with pytest.raises(AuthError, match="InvalidAudience: The token's audience 'sb://h/eh1' does not cover"):
        validate_sas_token(token, "sb://h/eh2", POLICIES, NOW)
    ns_token = generate_sas_token("sb://h/", "listen", "other-key", NOW + 10)
    assert validate_sas_token(ns_token, "sb://h/eh2/consumergroups/cg", POLICIES, NOW) == "listen"


def test_lower_case_escapes_signed_by_other_sdks() -> None:
    """Some SDKs sign the sr with lower-case %xx escapes and put that string in the token."""
    import base64
    import hashlib
    import hmac

    sr = quote_plus(AUD).replace("%3A", "%3a").replace("%2F", "%2f")
    se = int(NOW + 60)
    sig = base64.b64encode(hmac.new(KEY.encode(), (f"{sr}\n{se}").encode(), hashlib.sha256).digest()).decode()
    token = f"SharedAccessSignature sr={sr}&sig={quote_plus(sig)}&se={se}&skn=RootManageSharedAccessKey"
    assert validate_sas_token(token, AUD, POLICIES, NOW) == "RootManageSharedAccessKey"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "does not start with 'SharedAccessSignature '"),
        ("Bearer abc", "does not start with"),
        ("SharedAccessSignature ", r"missing field\(s\) sr, sig, se, skn"),
        ("SharedAccessSignature sr=a&sig=b&se=1", r"missing field\(s\) skn"),
        ("SharedAccessSignature sr=a&sig=b&se=1&skn=p&sr=b", "field 'sr' appears twice"),
        ("SharedAccessSignature sr=a&sig&se=1&skn=p", "field 'sig' has no value"),
        (
            "SharedAccessSignature sr=a&sig=b&se=soon&skn=RootManageSharedAccessKey",
            "se='soon' is not an integer",
        ),
        ("SharedAccessSignature " + "x" * 20000, "longer than"),
    ],
)
def test_malformed(token: str, message: str) -> None:
    with pytest.raises(AuthError, match="MalformedToken: .*" + message):
        validate_sas_token(token, AUD, POLICIES, NOW)


def test_non_string_token() -> None:
    with pytest.raises(AuthError, match="must be a string"):
        validate_sas_token(b"SharedAccessSignature x", AUD, POLICIES, NOW)  # type: ignore[arg-type]


def test_error_has_description() -> None:
    with pytest.raises(AuthError) as info:
        validate_sas_token("nope", AUD, POLICIES, NOW)
    assert info.value.description.startswith("MalformedToken")
