"""Fixtures for the IoT Hub emulator integration tests: a hub on a fresh loopback address per test."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import pytest

from enginehub.harness.iothub.rawclient import RawDevice
from enginehub.harness.iothub.server import IotHubEmulator, MemoryRouter
from enginehub.harness.iothub.testing import free_loopback_ip

# keep the SDK quiet (INFO logging costs ~20% and floods the output)
for _name in ("azure.iot.device", "paho"):
    logging.getLogger(_name).setLevel(logging.ERROR)


@pytest.fixture
def router() -> MemoryRouter:
    return MemoryRouter()


@pytest.fixture
async def hub(router: MemoryRouter) -> AsyncIterator[IotHubEmulator]:
    emulator = IotHubEmulator(router, host=free_loopback_ip())
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def raw(hub: IotHubEmulator) -> AsyncIterator[Callable[..., RawDevice]]:
    """Factory of raw codec-based device clients; all closed at teardown."""
    made: list[RawDevice] = []

    def create(device_id: str, key: str | None = None, *, register: bool = True, **kw: object) -> RawDevice:
        if key is None and kw.get("token") is None:
            if not register:
                key = hub.registry.derived_key(device_id)
            else:
                existing = hub.registry.devices.get(device_id)
                key = (existing or hub.registry.create(device_id)).primary_key
        dev = RawDevice(hub.host, hub.hostname, device_id, key, ssl_context=hub.certs.client_context(), **kw)
        made.append(dev)
        return dev

    yield create
    for dev in made:
        await dev.close()


@pytest.fixture
async def sdk_client(hub: IotHubEmulator):
    """Factory of REAL azure-iot-device aio clients (retries off unless asked); shut down at teardown."""
    from azure.iot.device.aio import IoTHubDeviceClient

    made = []

    def create(device_id: str, *, connection_string: str | None = None, **kw: object):
        cs = connection_string or hub.device_connection_string(device_id)
        kw.setdefault("connection_retry", False)
        client = IoTHubDeviceClient.create_from_connection_string(
            cs, server_verification_cert=hub.ca_pem, **kw
        )
        made.append(client)
        return client

    yield create
    for client in made:
        try:
            await client.shutdown()
        except Exception as exc:  # teardown only
            logging.getLogger(__name__).debug("client shutdown failed: %s", exc)
