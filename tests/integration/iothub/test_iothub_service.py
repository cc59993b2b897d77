"""The service side: the REAL azure-iot-hub IoTHubRegistryManager against the emulator's service API, with
REAL azure-iot-device clients on the device side (no private calls; wire-level checks use requests)."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.iot.device import IoTHubDeviceClient, MethodResponse
from azure.iot.device.exceptions import CredentialError
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from enginehub.harness.iothub import auth
from enginehub.harness.iothub.server import IotHubEmulator, MemoryRouter
from enginehub.harness.iothub.testing import free_loopback_ip
from enginehub.harness.runtime import LoopThread
from enginehub.harness.testing.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub() -> Iterator[IotHubEmulator]:
    runner = LoopThread(lambda: IotHubEmulator(MemoryRouter(), host=free_loopback_ip()), name="svc-hub")
    emulator = runner.start()
    mp = pytest.MonkeyPatch()
    mp.setenv("REQUESTS_CA_BUNDLE", str(emulator.ca_cert_path))  # how requests (the SDK) trusts our CA
    try:
        yield emulator
    finally:
        mp.undo()
        runner.stop()


@pytest.fixture(scope="module")
def rm(hub: IotHubEmulator) -> IoTHubRegistryManager:
    return IoTHubRegistryManager.from_connection_string(hub.service_connection_string)


@pytest.fixture
def devices(hub: IotHubEmulator) -> Iterator[Any]:
    """Factory of REAL sync device clients (retries off), shut down at teardown."""
    made: list[IoTHubDeviceClient] = []

    def create(device_id: str, key: str) -> IoTHubDeviceClient:
        cs = auth.device_connection_string(hub.hostname, device_id, key, hub.gateway_host)
        client = IoTHubDeviceClient.create_from_connection_string(
            cs, server_verification_cert=hub.ca_pem, connection_retry=False
        )
        made.append(client)
        return client

    yield create
    for client in made:
        client.shutdown()


def _status(exc_info: pytest.ExceptionInfo[HttpOperationError]) -> int:
    return exc_info.value.response.status_code


def _error_code(exc_info: pytest.ExceptionInfo[HttpOperationError]) -> str:
    return exc_info.value.response.headers.get("iothub-errorcode", "")


def test_device_identity_lifecycle(rm: IoTHubRegistryManager, hub: IotHubEmulator) -> None:
    key1, key2 = auth.generate_key(), auth.generate_key()
    created = rm.create_device_with_sas("svc-dev-1", key1, key2, "enabled")
    assert created.device_id == "svc-dev-1"
    assert created.authentication.symmetric_key.primary_key == key1
    assert created.authentication.symmetric_key.secondary_key == key2
    assert created.status == "enabled" and created.etag
    with pytest.raises(HttpOperationError) as exc:
        rm.create_device_with_sas("svc-dev-1", None, None, "enabled")
    assert _status(exc) == 409 and _error_code(exc) == "DeviceAlreadyExists"

    got = rm.get_device("svc-dev-1")
    assert got.generation_id == created.generation_id and got.etag == created.etag
    assert "svc-dev-1" in [d.device_id for d in rm.get_devices()]
    assert len(rm.get_devices(max_number_of_devices=1)) == 1

    # a stale etag is refused with 412 and changes nothing
    with pytest.raises(HttpOperationError) as exc:
        rm.update_device_with_sas("svc-dev-1", "not-the-etag", key1, key2, "disabled")
    assert _status(exc) == 412 and _error_code(exc) == "PreconditionFailed"
    assert rm.get_device("svc-dev-1").status == "enabled"

    updated = rm.update_device_with_sas("svc-dev-1", got.etag, key1, key2, "disabled", status_reason="test")
    assert updated.status == "disabled" and updated.status_reason == "test"
    assert updated.etag != got.etag
    assert hub.registry.get("svc-dev-1").status == "disabled"

    with pytest.raises(HttpOperationError) as exc:
        rm.delete_device("svc-dev-1", etag=got.etag)  # the old etag
    assert _status(exc) == 412
    rm.delete_device("svc-dev-1", etag=updated.etag)
    with pytest.raises(HttpOperationError) as exc:
        rm.get_device("svc-dev-1")
    assert _status(exc) == 404 and _error_code(exc) == "DeviceNotFound"
    with pytest.raises(HttpOperationError) as exc:
        rm.delete_device("svc-dev-1")
    assert _status(exc) == 404


def test_created_device_connects_and_disable_refuses_it(rm: IoTHubRegistryManager, devices: Any) -> None:
    key = auth.generate_key()
    dev = rm.create_device_with_sas("svc-dev-2", key, auth.generate_key(), "enabled")
    client = devices("svc-dev-2", key)
    client.connect()
    wait_until(lambda: rm.get_device("svc-dev-2").connection_state == "Connected", 5, lambda: "Connected")
    rm.update_device_with_sas("svc-dev-2", dev.etag, None, None, "disabled")
    wait_until(lambda: not client.connected, 5, lambda: "the disabled device to be disconnected")
    refused = devices("svc-dev-2", key)
    with pytest.raises(CredentialError):
        refused.connect()


def test_auth_rejects_wrong_key_unknown_policy_and_device_tokens(
    rm: IoTHubRegistryManager, hub: IotHubEmulator
) -> None:
    host = hub.service_hostname
    wrong = IoTHubRegistryManager.from_connection_string(
        f"HostName={host};SharedAccessKeyName=iothubowner;SharedAccessKey={auth.generate_key()}"
    )
    with pytest.raises(HttpOperationError) as exc:
        wrong.get_devices()
    assert _status(exc) == 401 and _error_code(exc) == "IotHubUnauthorizedAccess"
    # the 'device' policy has DeviceConnect only: no registry or service access
    device_policy = IoTHubRegistryManager.from_connection_string(
        f"HostName={host};SharedAccessKeyName=device;SharedAccessKey={hub.registry.policies['device']}"
    )
    with pytest.raises(HttpOperationError) as exc:
        device_policy.get_devices()
    assert _status(exc) == 401
    # 'registryRead' may read but not write
    reader = IoTHubRegistryManager.from_connection_string(
        f"HostName={host};SharedAccessKeyName=registryRead;SharedAccessKey={hub.registry.policies['registryRead']}"
    )
    assert isinstance(reader.get_devices(), list)
    with pytest.raises(HttpOperationError) as exc:
        reader.create_device_with_sas("svc-dev-3", None, None, "enabled")
    assert _status(exc) == 401
    # a device-scoped token (what a device signs with its own key) on the service API: 401
    rm.create_device_with_sas("svc-dev-3", None, None, "enabled")
    key = hub.registry.get("svc-dev-3").primary_key
    token = auth.generate_sas_token(f"{hub.hostname}/devices/svc-dev-3", key)
    url = f"https://{host}/devices/svc-dev-3?api-version=2021-04-12"
    r = requests.get(url, headers={"Authorization": token}, timeout=10)
    assert r.status_code == 401 and "device-scoped" in r.json()["Message"]
    assert requests.get(url, timeout=10).status_code == 401  # no Authorization at all
    expired = auth.generate_sas_token(
        host, hub.registry.policies["iothubowner"], time.time() - 10, policy="iothubowner"
    )
    assert requests.get(url, headers={"Authorization": expired}, timeout=10).status_code == 401
    good = auth.generate_sas_token(host, hub.registry.policies["iothubowner"], policy="iothubowner")
    assert requests.get(url, headers={"Authorization": good}, timeout=10).json()["deviceId"] == "svc-dev-3"
    r = requests.get(
        f"https://{host}/jobs/v2?api-version=2021-04-12", headers={"Authorization": good}, timeout=10
    )
    assert r.status_code == 501 and r.headers["iothub-errorcode"] == "NotSupportedByEmulator"


def test_twin_tags_and_desired_reach_the_connected_device(rm: IoTHubRegistryManager, devices: Any) -> None:
    key = auth.generate_key()
    rm.create_device_with_sas("svc-twin-1", key, None, "enabled")
    client = devices("svc-twin-1", key)
    patches: queue.Queue[dict[str, Any]] = queue.Queue()
    client.on_twin_desired_properties_patch_received = patches.put
    client.connect()
    wait_until(lambda: client.get_twin() is not None, 5, lambda: "the device's twin GET")

    twin = rm.get_twin("svc-twin-1")
    assert twin.tags in ({}, None) and twin.properties.desired == {"$version": 1}
    new = rm.update_twin(
        "svc-twin-1",
        Twin(tags={"site": "hangar-7"}, properties=TwinProperties(desired={"sendIntervalS": 2})),
        twin.etag,
    )
    assert new.tags == {"site": "hangar-7"}
    assert new.properties.desired["sendIntervalS"] == 2 and new.etag != twin.etag
    patch = patches.get(timeout=5)
    assert patch["sendIntervalS"] == 2 and patch["$version"] == 2
    assert "site" not in patch  # tags are not visible to the device

    with pytest.raises(HttpOperationError) as exc:
        rm.update_twin("svc-twin-1", Twin(tags={"site": "x"}), twin.etag)  # stale etag
    assert _status(exc) == 412
    assert rm.get_twin("svc-twin-1").tags == {"site": "hangar-7"}

    # reported properties written by the device are what the service reads
    client.patch_twin_reported_properties({"state": "running"})
    assert rm.get_twin("svc-twin-1").properties.reported["state"] == "running"

    # replace: keys left out are removed, and the device is told so
    rm.replace_twin("svc-twin-1", Twin(properties=TwinProperties(desired={"mode": "eco"})))
    patch = patches.get(timeout=5)
    assert patch["mode"] == "eco" and patch["sendIntervalS"] is None
    assert rm.get_twin("svc-twin-1").properties.desired == {"mode": "eco", "$version": 3}
    with pytest.raises(HttpOperationError) as exc:
        rm.get_twin("no-such-device")
    assert _status(exc) == 404


def _method(name: str, payload: Any = None, timeout: int = 5) -> CloudToDeviceMethod:
    return CloudToDeviceMethod(method_name=name, payload=payload, response_timeout_in_seconds=timeout)


def test_direct_method_sync_client(rm: IoTHubRegistryManager, devices: Any, hub: IotHubEmulator) -> None:
    key = auth.generate_key()
    rm.create_device_with_sas("svc-m-1", key, None, "enabled")
    with pytest.raises(HttpOperationError) as exc:
        rm.invoke_device_method("svc-m-1", _method("setRate"))  # registered but never connected
    assert _status(exc) == 404 and _error_code(exc) == "DeviceNotOnline"

    client = devices("svc-m-1", key)
    client.connect()
    seen: list[tuple[str, Any]] = []

    def handler(request: Any) -> None:
        seen.append((request.name, request.payload))
        if request.name == "silent":
            return  # never answers
        status = 200 if request.name == "setRate" else 404
        client.send_method_response(
            MethodResponse.create_from_method_request(request, status, {"echo": request.payload})
        )

    client.on_method_request_received = handler
    wait_until(lambda: hub.method_subscribed("svc-m-1"), 5, lambda: "the device's methods subscription")
    result = rm.invoke_device_method("svc-m-1", _method("setRate", {"rate": 2.5}))
    assert result.status == 200 and result.payload == {"echo": {"rate": 2.5}}
    result = rm.invoke_device_method("svc-m-1", _method("unknown", "x"))
    assert result.status == 404 and result.payload == {"echo": "x"}  # the device's status, passed through
    assert seen[:2] == [("setRate", {"rate": 2.5}), ("unknown", "x")]

    t0 = time.monotonic()
    with pytest.raises(HttpOperationError) as exc:
        rm.invoke_device_method("svc-m-1", _method("silent", timeout=1))
    assert _status(exc) == 504 and _error_code(exc) == "GatewayTimeout"
    assert 0.9 < time.monotonic() - t0 < 5
    with pytest.raises(HttpOperationError) as exc:
        rm.invoke_device_method("svc-nobody", _method("setRate"))
    assert _status(exc) == 404 and _error_code(exc) == "DeviceNotFound"
    with pytest.raises(HttpOperationError) as exc:
        rm.invoke_device_method("svc-m-1", _method("setRate", timeout=301))
    assert _status(exc) == 400
    client.disconnect()
    wait_until(lambda: not hub.method_subscribed("svc-m-1"), 5, lambda: "the device to go offline")
    with pytest.raises(HttpOperationError) as exc:
        rm.invoke_device_method("svc-m-1", _method("setRate"))
    assert _status(exc) == 404 and _error_code(exc) == "DeviceNotOnline"


def test_direct_method_aio_client(rm: IoTHubRegistryManager, hub: IotHubEmulator) -> None:
    from azure.iot.device.aio import IoTHubDeviceClient as AioClient

    key = auth.generate_key()
    rm.create_device_with_sas("svc-m-2", key, None, "enabled")
    ready = threading.Event()
    done = threading.Event()

    async def device() -> None:
        cs = auth.device_connection_string(hub.hostname, "svc-m-2", key, hub.gateway_host)
        client = AioClient.create_from_connection_string(
            cs, server_verification_cert=hub.ca_pem, connection_retry=False
        )

        async def handler(request: Any) -> None:
            await client.send_method_response(
                MethodResponse.create_from_method_request(request, 201, {"name": request.name})
            )

        client.on_method_request_received = handler
        await client.connect()
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.02)
        await client.shutdown()

    thread = threading.Thread(target=asyncio.run, args=(device(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        wait_until(
            lambda: hub.method_subscribed("svc-m-2"), 5, lambda: "the aio device's methods subscription"
        )
        result = rm.invoke_device_method("svc-m-2", _method("pause"))
        assert result.status == 201 and result.payload == {"name": "pause"}
    finally:
        done.set()
        thread.join(10)
