"""Registry, twin, faults and token bucket (pure state, injected clock)."""

from __future__ import annotations

import time

import pytest

from enginehub.harness.iothub import auth
from enginehub.harness.iothub.errors import (
    AuthError,
    DeviceExists,
    DeviceNotFound,
    NotAuthorized,
    RegistryError,
)
from enginehub.harness.iothub.state import Faults, Registry, TokenBucket, Twin

HOST = "hub.local"


def _token(device_id: str, key: str, ttl: float = 3600) -> str:
    return auth.generate_sas_token(f"{HOST}/devices/{device_id}", key, ttl=ttl)


def test_primary_and_secondary_keys():
    reg = Registry(HOST)
    dev = reg.create("d1")
    now = time.time()
    assert reg.authenticate("d1", _token("d1", dev.primary_key), now)[0] is dev
    assert reg.authenticate("d1", _token("d1", dev.secondary_key), now)[0] is dev
    with pytest.raises(AuthError):
        reg.authenticate("d1", _token("d1", auth.generate_key()), now)
    with pytest.raises(AuthError):
        reg.authenticate("d1", _token("d1", dev.primary_key, ttl=-1), now)


def test_disabled_and_unknown_devices():
    reg = Registry(HOST)
    dev = reg.create("d1")
    reg.set_status("d1", "disabled")
    with pytest.raises(NotAuthorized, match="disabled"):
        reg.authenticate("d1", _token("d1", dev.primary_key), time.time())
    with pytest.raises(AuthError):
        reg.authenticate("nobody", _token("nobody", auth.generate_key()), time.time())


def test_group_key_derived_device_is_created_on_first_connect():
    reg = Registry(HOST)
    key = auth.derive_device_key(reg.group_key, "eng-42")
    dev, _ = reg.authenticate("eng-42", _token("eng-42", key), time.time())
    assert dev.source == "group"
    assert reg.get("eng-42") is dev


def test_policy_token():
    reg = Registry(HOST)
    tok = auth.generate_sas_token(HOST, reg.policies["iothubowner"], ttl=60, policy="iothubowner")
    reg.create("d1")
    assert reg.authenticate("d1", tok, time.time())[0].device_id == "d1"
    bad = auth.generate_sas_token(HOST, auth.generate_key(), ttl=60, policy="iothubowner")
    with pytest.raises(AuthError):
        reg.authenticate("d1", bad, time.time())


def test_registry_errors():
    reg = Registry(HOST)
    reg.create("d1")
    with pytest.raises(DeviceExists):
        reg.create("d1")
    with pytest.raises(DeviceNotFound):
        reg.get("zz")
    with pytest.raises(DeviceNotFound):
        reg.delete("zz")
    for bad in ("", "a" * 129, "sp ace", "sl/ash"):
        with pytest.raises(RegistryError):
            reg.create(bad)
    assert reg.create("a" * 128).device_id == "a" * 128
    with pytest.raises(RegistryError):
        reg.set_status("d1", "paused")
    with pytest.raises(AuthError):
        reg.create("d2", primary_key="not base64!")


def test_registry_json_roundtrip(tmp_path):
    reg = Registry(HOST)
    dev = reg.create("d1")
    dev.twin.patch_reported({"a": 1})
    path = tmp_path / "r.json"
    reg.save(path)
    again = Registry.load_or_create(path, HOST)
    assert again.group_key == reg.group_key
    assert again.get("d1").primary_key == dev.primary_key
    assert again.get("d1").twin.reported == {"a": 1}
    path.write_text("{nonsense")
    with pytest.raises(RegistryError, match="not a registry file"):
        Registry.load_or_create(path, HOST)


def test_twin_merge_patch():
    twin = Twin()
    assert twin.patch_reported({"a": {"b": 1, "c": 2}, "d": 3}) == 2
    twin.patch_reported({"a": {"b": None}, "d": None, "$version": 99})
    assert twin.document() == {"desired": {"$version": 1}, "reported": {"a": {"c": 2}, "$version": 3}}


def test_faults_validation():
    f = Faults()
    f.update({"puback_delay_s": 0.5, "refuse_connect": 3, "refuse_connect_count": 2, "throttle_per_s": 100})
    assert (f.puback_delay_s, f.refuse_connect, f.throttle_per_s) == (0.5, 3, 100)
    for bad in (
        {"nope": 1},
        {"refuse_connect": 7},
        {"puback_delay_s": -1},
        {"drop_pubacks": -1},
        {"close_after_publishes": 0},
        {"throttle_per_s": 0},
    ):
        with pytest.raises(RegistryError):
            f.update(bad)
    f.reset()
    assert f == Faults()


def test_token_bucket_with_injected_clock():
    now = [0.0]
    bucket = TokenBucket(100, burst=1, clock=lambda: now[0])
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.01)
    assert bucket.reserve() == pytest.approx(0.02)
    now[0] = 1.0
    assert bucket.reserve() == 0.0
