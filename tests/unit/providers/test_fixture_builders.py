"""Builders behind the fixtures, constructed without starting anything."""

from __future__ import annotations

import sys

import pytest

from enginehub.harness.providers.base import ProviderUnavailable
from enginehub.harness.providers.eventhubs import ContainerEventHubs
from enginehub.harness.providers.iothub import IotHubEndpoint, _external, from_up_json
from enginehub.harness.testing.processes import ingest_command, simulate_command

UP_LINE = {
    "eventhubs_connection_string": "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=R;SharedAccessKey=k;"
    "UseDevelopmentEmulator=true",
    "eventhub_name": "enginehub-local",
    "iothub_eventhub_connection_string": "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=R;SharedAccessKey=k;"
    "UseDevelopmentEmulator=true;EntityPath=enginehub-local",
    "iothub_hostname": "enginehub-local.azure-devices.net",
    "iothub_gateway_host": "127.0.0.7",
    "iothub_connection_string": "HostName=enginehub-local.azure-devices.net;SharedAccessKeyName=iothubowner;"
    "SharedAccessKey=o",
    "device_group_key": "Z3JvdXAta2V5LWJ5dGVz",
    "ca_cert": "/tmp/ca.pem",
}


def test_ingest_command_uses_the_cli_contract_options() -> None:
    cmd = ingest_command(
        "Endpoint=sb://x;SharedAccessKey=k",
        "sqlite:///e.db",
        eventhub="eh1",
        checkpoint_store="UseDevelopmentStorage=true",
        checkpoint_container="c1",
        owner_id="node-a",
        load_balancing_interval=1.0,
        ownership_expiry=4.0,
        extra=["--batch-size", "50"],
    )
    assert cmd[:3] == [sys.executable, "-m", "enginehub.ingest"]
    pairs = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert pairs["--eventhub"] == "eh1" and pairs["--sink"] == "sqlite:///e.db"
    assert pairs["--checkpoint-container"] == "c1" and pairs["--owner-id"] == "node-a"
    assert pairs["--load-balancing-interval"] == "1.0" and pairs["--ownership-expiry"] == "4.0"
    assert cmd[-2:] == ["--batch-size", "50"]
    assert "--checkpoint-dir" not in ingest_command("cs", "sqlite:///e.db")


def test_simulate_command_targets_the_given_hub_and_prints_json() -> None:
    cmd = simulate_command(
        4, 40.0, duration=6, iothub_connection_string="HostName=h;SharedAccessKeyName=o;SharedAccessKey=k",
        group_key="g", gateway_host="127.0.0.7", ca_cert="/tmp/ca.pem", dataset="FD001", run_id="r1",
    )  # fmt: skip
    assert cmd[:3] == [sys.executable, "-m", "enginehub.simulator"]
    assert "--json" in cmd and "--no-progress" in cmd
    pairs = {cmd[i]: cmd[i + 1] for i in range(3, len(cmd) - 1) if cmd[i].startswith("--")}
    assert pairs["--units"] == "4" and pairs["--rate"] == "40.0" and pairs["--duration"] == "6"
    assert pairs["--gateway-host"] == "127.0.0.7" and pairs["--run-id"] == "r1"


def test_endpoint_from_the_harness_up_line_and_device_keys() -> None:
    hub = from_up_json(UP_LINE)
    assert hub.eventhub_name == "enginehub-local" and hub.gateway_host == "127.0.0.7"
    cs = hub.device_connection_string("engine-0001")
    assert cs.startswith("HostName=enginehub-local.azure-devices.net;DeviceId=engine-0001;SharedAccessKey=")
    assert cs.endswith(";GatewayHostName=127.0.0.7")
    # the key is the DPS group-enrollment derivation the emulator checks
    from enginehub.harness.iothub.auth import derive_device_key

    assert f"SharedAccessKey={derive_device_key(UP_LINE['device_group_key'], 'engine-0001')};" in cs
    assert hub.new_device_id() != hub.new_device_id()


def test_external_iothub_names_each_missing_variable() -> None:
    with pytest.raises(ProviderUnavailable, match="ENGINEHUB_DEVICE_GROUP_KEY, ENGINEHUB_IOTHUB_EVENTHUB"):
        _external({"ENGINEHUB_IOTHUB_CONNECTION_STRING": "HostName=h;SharedAccessKey=k"})
    hub, _stop = _external(
        {
            "ENGINEHUB_IOTHUB_CONNECTION_STRING": "HostName=h.azure-devices.net;SharedAccessKeyName=o;"
            "SharedAccessKey=k",
            "ENGINEHUB_DEVICE_GROUP_KEY": "Zw==",
            "ENGINEHUB_IOTHUB_EVENTHUB_CONNECTION_STRING": "Endpoint=sb://x/;SharedAccessKey=s;EntityPath=h",
        }
    )
    assert (
        isinstance(hub, IotHubEndpoint) and hub.hostname == "h.azure-devices.net" and hub.eventhub_name == "h"
    )
    assert hub.gateway_host is None and hub.ca_cert is None


def test_microsoft_emulator_container_needs_its_eula(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINEHUB_ACCEPT_EULA", raising=False)
    with pytest.raises(ProviderUnavailable, match="ENGINEHUB_ACCEPT_EULA=Y"):
        ContainerEventHubs().start()
