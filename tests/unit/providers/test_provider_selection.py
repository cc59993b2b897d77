"""Provider selection is pure: environment and probes are arguments, nothing is started or probed."""

from __future__ import annotations

import pytest

from enginehub.harness.providers.base import (
    SERVICES,
    Choice,
    Probes,
    ProviderUnavailable,
    choose,
    provider_env,
)
from enginehub.harness.providers.cratedb import CrateDBServer
from enginehub.harness.providers.eventhubs import (
    EventHubsNamespace,
    config_json,
    external_namespace,
    pool_names,
)

HAVE_ALL = Probes(docker=lambda: None, node_azurite=lambda: None)
NO_DOCKER = Probes(docker=lambda: "no Docker engine: start Docker", node_azurite=lambda: None)
NOTHING = Probes(
    docker=lambda: "no Docker engine: start Docker",
    node_azurite=lambda: "azurite-blob not found: make azurite",
)


def pick(service: str, env: dict[str, str] | None = None, probes: Probes = HAVE_ALL, **kw: str) -> Choice:
    return choose(service, env=env or {}, probes=probes, **kw)


@pytest.mark.parametrize(
    ("service", "expected"),
    [("eventhubs", "local"), ("iothub", "local"), ("azurite", "local"), ("cratedb", "container")],
)
def test_auto_defaults(service: str, expected: str) -> None:
    choice = pick(service)
    assert choice.provider == expected
    assert "default" in choice.reason


@pytest.mark.parametrize(
    ("service", "var"),
    [
        ("eventhubs", "ENGINEHUB_EVENTHUBS_CONNECTION_STRING"),
        ("iothub", "ENGINEHUB_IOTHUB_CONNECTION_STRING"),
        ("azurite", "ENGINEHUB_STORAGE_CONNECTION_STRING"),
        ("cratedb", "CRATEDB_URL"),
    ],
)
def test_auto_prefers_the_external_service_when_its_variable_is_set(service: str, var: str) -> None:
    choice = pick(service, {var: "x"})
    assert (choice.provider, var in choice.reason) == ("external", True)


def test_azurite_falls_back_to_the_container_without_node() -> None:
    probes = Probes(docker=lambda: None, node_azurite=lambda: "azurite-blob not found")
    assert pick("azurite", probes=probes).provider == "container"


def test_nothing_available_says_how_to_enable_each_way() -> None:
    crate = pick("cratedb", probes=NOTHING)
    assert crate.provider is None and not crate.available
    assert "start Docker" in crate.reason and "CRATEDB_URL" in crate.reason
    blob = pick("azurite", probes=NOTHING)
    assert blob.provider is None
    assert "make azurite" in blob.reason and "start Docker" in blob.reason
    assert "ENGINEHUB_STORAGE_CONNECTION_STRING" in blob.reason


def test_one_switch_sets_every_service_it_applies_to() -> None:
    got = {s: pick(s, target="process").provider for s in SERVICES}
    # azurite and cratedb have no process provider: the global switch falls back to auto for them
    assert got == {"eventhubs": "process", "iothub": "process", "azurite": "local", "cratedb": "container"}
    assert "does not apply" in pick("cratedb", target="process").reason


def test_target_from_the_environment() -> None:
    assert pick("eventhubs", {"ENGINEHUB_TEST_TARGET": "process"}).provider == "process"


def test_per_service_option_beats_variable_beats_target() -> None:
    env = {provider_env("eventhubs"): "process", "ENGINEHUB_TEST_TARGET": "local"}
    assert pick("eventhubs", env, target="local").provider == "process"
    assert pick("eventhubs", env, option="local", target="process").provider == "local"
    assert pick("eventhubs", env).reason == "ENGINEHUB_EVENTHUBS_PROVIDER=process"


def test_explicit_request_that_cannot_be_served_is_unavailable_with_the_reason() -> None:
    choice = pick("cratedb", probes=NO_DOCKER, option="container")
    assert choice.provider is None
    assert choice.reason == "--cratedb-provider=container, but no Docker engine: start Docker"
    external = pick("eventhubs", option="external")
    assert external.provider is None and "ENGINEHUB_EVENTHUBS_CONNECTION_STRING is not set" in external.reason
    unsupported = pick("cratedb", option="local")
    assert unsupported.provider is None and "supports only container, external" in unsupported.reason


def test_explicit_external_with_its_variable() -> None:
    assert pick("cratedb", {"CRATEDB_URL": "crate://h:4200"}, option="external").provider == "external"


def test_auto_option_means_no_preference() -> None:
    assert pick("eventhubs", {provider_env("eventhubs"): "process"}, option="auto").provider == "process"


def test_bad_values_are_errors_not_silent_defaults() -> None:
    with pytest.raises(ValueError, match="ENGINEHUB_EVENTHUBS_PROVIDER='docker'"):
        pick("eventhubs", {provider_env("eventhubs"): "docker"})
    with pytest.raises(ValueError, match="unknown service"):
        pick("kafka")


def test_probes_are_not_called_when_not_needed() -> None:
    def boom() -> str:
        raise AssertionError("probed")

    probes = Probes(docker=boom, node_azurite=boom)
    assert pick("eventhubs", probes=probes).provider == "local"
    assert pick("cratedb", {"CRATEDB_URL": "crate://h"}, probes=probes).provider == "external"


# -------------------------------------------------------------------------- builders (nothing started)
def test_hub_pool_hands_out_each_spare_hub_once() -> None:
    ns = EventHubsNamespace("local", "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=a;SharedAccessKey=b",
                            pool_names(2), 4)  # fmt: skip
    assert ns.default_hub == "eh1"
    assert [ns.take_hub(), ns.take_hub()] == ["t000", "t001"]
    with pytest.raises(ProviderUnavailable, match="--eventhubs-hub-pool"):
        ns.take_hub()
    assert ns.connection_string_for("t000").endswith(";EntityPath=t000")


def test_config_json_is_microsofts_shape_and_our_emulator_reads_it() -> None:
    from enginehub.harness.eventhubs.config import parse_config

    data = config_json(("eh1", "t000"), 3, "a2V5", ("cg1",))
    assert data["UserConfig"]["NamespaceConfig"][0]["Entities"][1] == {
        "Name": "t000",
        "PartitionCount": "3",
        "ConsumerGroups": [{"Name": "cg1"}],
    }
    config = parse_config(data)
    assert [h.name for h in config.hubs] == ["eh1", "t000"]
    assert config.default_policy == ("RootManageSharedAccessKey", "a2V5")


def test_external_namespace_from_environment() -> None:
    env = {
        "ENGINEHUB_EVENTHUBS_CONNECTION_STRING": "Endpoint=sb://ns.servicebus.windows.net/;"
        "SharedAccessKeyName=k;SharedAccessKey=s;EntityPath=main",
        "ENGINEHUB_EVENTHUB_NAMES": "main, spare1,spare2",
    }
    ns = external_namespace(env)
    assert ns.provider == "external" and "EntityPath" not in ns.connection_string
    assert ns.hubs == ("main", "spare1", "spare2") and ns.take_hub() == "spare1"
    only_entity = external_namespace(
        {"ENGINEHUB_EVENTHUBS_CONNECTION_STRING": env["ENGINEHUB_EVENTHUBS_CONNECTION_STRING"]}
    )
    assert only_entity.hubs == ("main",)
    with pytest.raises(ProviderUnavailable, match="ENGINEHUB_EVENTHUB_NAMES"):
        external_namespace({"ENGINEHUB_EVENTHUBS_CONNECTION_STRING": "Endpoint=sb://x/;SharedAccessKey=s"})


@pytest.mark.parametrize(
    ("url", "http", "sink"),
    [
        ("crate://db.example:4200", "http://db.example:4200", "crate://db.example:4200?schema=s1"),
        ("http://localhost:4201", "http://localhost:4201", "crate://localhost:4201?schema=s1"),
        ("crate://u:pw@h", "http://h:4200", "crate://u:pw@h:4200?schema=s1"),
        ("https://h:4200", "https://h:4200", "crate+https://h:4200?schema=s1"),
    ],
)
def test_cratedb_urls(url: str, http: str, sink: str) -> None:
    server = CrateDBServer.from_url(url)
    assert server.http_url == http
    assert server.sink_url("s1") == sink
    assert server.new_schema() != server.new_schema()
