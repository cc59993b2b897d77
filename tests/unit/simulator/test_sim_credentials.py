from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from enginehub.simulator.credentials import (
    CredentialsError,
    DeviceCredentials,
    HubTarget,
    derive_device_key,
    device_from_connection_string,
    device_id_for,
    hub_from_connection_string,
    parse_connection_string,
    read_devices_file,
    write_devices_file,
)

GROUP = base64.b64encode(bytes(range(32))).decode()


def test_device_ids() -> None:
    assert device_id_for(0) == "engine-0001"
    assert device_id_for(99) == "engine-0100"
    assert device_id_for(12344) == "engine-12345"


def test_key_derivation_matches_the_dps_formula() -> None:
    expected = base64.b64encode(hmac.new(bytes(range(32)), b"engine-0001", hashlib.sha256).digest()).decode()
    assert derive_device_key(GROUP, "engine-0001") == expected
    assert derive_device_key(GROUP, "engine-0002") != expected


def test_bad_group_key_is_one_sentence() -> None:
    with pytest.raises(CredentialsError, match="group key is not valid base64"):
        derive_device_key("not base64!!", "engine-0001")


def test_connection_string_roundtrip_keeps_base64_padding() -> None:
    dev = DeviceCredentials("engine-0007", "hub.local", derive_device_key(GROUP, "engine-0007"), "127.0.0.5")
    assert dev.key.endswith("=")
    assert device_from_connection_string(dev.connection_string()) == dev


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("HostName", "expected Key=Value"),
        ("HostName=h;Foo=bar", "unknown key 'Foo'"),
        ("DeviceId=d;SharedAccessKey=AAAA", "missing HostName"),
        ("HostName=h;HostName=g", "duplicate key"),
    ],
)
def test_bad_connection_strings(text: str, message: str) -> None:
    with pytest.raises(CredentialsError, match=message):
        parse_connection_string(text)


def test_device_string_needs_id_key_and_safe_id() -> None:
    with pytest.raises(CredentialsError, match="missing SharedAccessKey"):
        device_from_connection_string("HostName=h;DeviceId=d")
    with pytest.raises(CredentialsError, match="not valid base64"):
        device_from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=@@")
    with pytest.raises(CredentialsError, match="is not"):
        device_from_connection_string("HostName=h;DeviceId=a/b;SharedAccessKey=AAAA")


def test_devices_file(tmp_path: Path) -> None:
    devs = HubTarget("hub.local", GROUP, "127.0.0.9").devices(3)
    f = tmp_path / "devices.txt"
    write_devices_file(f, devs)
    f.write_text("# fleet\n\n" + f.read_text())
    assert read_devices_file(f) == devs
    f.write_text(devs[0].connection_string() + "\n" + devs[0].connection_string() + "\n")
    with pytest.raises(CredentialsError, match=r"devices.txt:2: device id 'engine-0001' appears twice"):
        read_devices_file(f)
    f.write_text("# nothing\n")
    with pytest.raises(CredentialsError, match="has no connection strings"):
        read_devices_file(f)
    with pytest.raises(CredentialsError, match="cannot read devices file"):
        read_devices_file(tmp_path / "missing.txt")


def test_hub_from_service_connection_string() -> None:
    cs = f"HostName=hub.local;SharedAccessKeyName=iothubowner;SharedAccessKey={GROUP}"
    hub = hub_from_connection_string(cs, group_key=GROUP, gateway_host="127.0.0.3")
    assert hub == HubTarget("hub.local", GROUP, "127.0.0.3")
    d = hub.devices(2)[1]
    assert d.device_id == "engine-0002" and d.key == derive_device_key(GROUP, "engine-0002")
    with pytest.raises(CredentialsError, match="device connection string"):
        hub_from_connection_string("HostName=h;DeviceId=d;SharedAccessKey=AAAA")
    with pytest.raises(CredentialsError, match="--group-key"):
        hub_from_connection_string("HostName=h;SharedAccessKeyName=x;SharedAccessKey=AAAA").devices(1)
