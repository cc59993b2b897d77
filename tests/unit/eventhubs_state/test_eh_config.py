"""Configuration: Microsoft's emulator Config.json as is, our Enginehub section, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enginehub.harness.eventhubs.config import (
    DEFAULT_POLICY,
    ConfigError,
    EmulatorConfig,
    HubConfig,
    load_config,
    parse_config,
)

# Microsoft's sample, verbatim shape (Azure/azure-event-hubs-emulator-installer, Config/Config.json).
MICROSOFT_SAMPLE = """{
  "UserConfig": {
    "NamespaceConfig": [
      {
        "Type": "EventHub",
        "Name": "emulatorNs1",
        "Entities": [
          {
            "Name": "eh1",
            "PartitionCount": "2",
            "ConsumerGroups": [
              {
                "Name": "cg1"
              }
            ]
          }
        ]
      }
    ],
    "LoggingConfig": {
      "Type": "File"
    }
  }
}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Config.json"
    path.write_text(text, "utf-8")
    return path


def test_microsoft_sample_loads_unchanged(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MICROSOFT_SAMPLE))
    assert config.namespace == "emulatorNs1"
    assert config.hubs == (HubConfig("eh1", 2, ("cg1",)),)
    assert list(config.policies) == [DEFAULT_POLICY]
    assert len(config.policies[DEFAULT_POLICY]) == 44  # base64 of 32 random bytes
    assert config.max_message_size == 1048576
    assert config.retention_seconds is None


def test_random_key_per_start(tmp_path: Path) -> None:
    path = write(tmp_path, MICROSOFT_SAMPLE)
    assert load_config(path).policies != load_config(path).policies


def test_bom_and_int_partition_count_and_default_group(tmp_path: Path) -> None:
    data = json.loads(MICROSOFT_SAMPLE)
    entity = data["UserConfig"]["NamespaceConfig"][0]["Entities"][0]
    entity["PartitionCount"] = 3
    entity["ConsumerGroups"].append({"Name": "$Default"})
    path = tmp_path / "c.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode())
    config = load_config(path)
    assert config.hubs[0].partition_count == 3
    assert config.hubs[0].consumer_groups == ("cg1",)


def test_our_options(tmp_path: Path) -> None:
    data = json.loads(MICROSOFT_SAMPLE)
    data["Enginehub"] = {
        "Policies": {"send": "k1", "listen": "k2"},
        "MaxMessageSize": 262144,
        "RetentionSeconds": 3600,
        "SegmentBytes": 1 << 20,
        "Fsync": True,
    }
    config = parse_config(data)
    assert config.policies == {"send": "k1", "listen": "k2"}
    assert config.default_policy == ("send", "k1")
    assert (config.max_message_size, config.retention_seconds, config.segment_bytes, config.fsync) == (
        262144,
        3600,
        1 << 20,
        True,
    )
    assert parse_config(data, max_message_size=1000).max_message_size == 1000


def test_unknown_keys_in_microsoft_part_are_ignored(caplog) -> None:
    data = json.loads(MICROSOFT_SAMPLE)
    data["UserConfig"]["NamespaceConfig"][0]["Entities"][0]["Future"] = 1
    assert parse_config(data).hubs[0].name == "eh1"
    assert "Entities[0].Future" in caplog.text


def test_simple() -> None:
    config = EmulatorConfig.simple(hubs=["a", "b"], partitions=8, consumer_groups=["cg"], policies={"p": "k"})
    assert config.hubs == (HubConfig("a", 8, ("cg",)), HubConfig("b", 8, ("cg",)))
    assert config.policies == {"p": "k"}
    assert EmulatorConfig.simple().default_policy[0] == DEFAULT_POLICY


def _mutate(path: list, value):
    data = json.loads(MICROSOFT_SAMPLE)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


E0 = ["UserConfig", "NamespaceConfig", 0, "Entities", 0]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["UserConfig"], KeyError, "UserConfig: missing"),
        (["UserConfig"], [], "UserConfig: expected an object, got list"),
        (["UserConfig", "NamespaceConfig"], KeyError, "UserConfig.NamespaceConfig: missing"),
        (["UserConfig", "NamespaceConfig"], [], "expected exactly 1 namespace, got 0"),
        (
            ["UserConfig", "NamespaceConfig", 0, "Type"],
            "ServiceBus",
            r"NamespaceConfig\[0\].Type: expected 'EventHub'",
        ),
        (["UserConfig", "NamespaceConfig", 0, "Entities"], [], "at least one event hub"),
        (
            ["UserConfig", "NamespaceConfig", 0, "Entities"],
            KeyError,
            r"NamespaceConfig\[0\].Entities: missing",
        ),
        (
            [*E0, "PartitionCount"],
            "two",
            r"Entities\[0\].PartitionCount: expected an integer 1..1024, got 'two'",
        ),
        ([*E0, "PartitionCount"], "0", r"Entities\[0\].PartitionCount: expected an integer"),
        ([*E0, "PartitionCount"], "-3", r"Entities\[0\].PartitionCount: expected an integer"),
        ([*E0, "PartitionCount"], True, r"Entities\[0\].PartitionCount: expected an integer"),
        ([*E0, "PartitionCount"], KeyError, r"Entities\[0\].PartitionCount: missing"),
        ([*E0, "Name"], KeyError, r"Entities\[0\].Name: missing"),
        ([*E0, "Name"], "", r"Entities\[0\].Name: expected a non-empty string"),
        ([*E0, "Name"], "a/b", r"Entities\[0\].Name: 'a/b' may not contain"),
        ([*E0, "Name"], "a\x00b", r"Entities\[0\].Name: .* contains control characters"),
        ([*E0, "Name"], "..", r"Entities\[0\].Name: '..' may not contain"),
        ([*E0, "ConsumerGroups"], {"Name": "x"}, r"Entities\[0\].ConsumerGroups: expected an array"),
        ([*E0, "ConsumerGroups"], [{"Nom": "x"}], r"ConsumerGroups\[0\].Name: missing"),
        ([*E0, "ConsumerGroups"], [{"Name": "x"}, {"Name": "X"}], r"ConsumerGroups\[1\].Name: duplicate"),
        (["Enginehub"], {"Polices": {}}, "Enginehub.Polices: unknown key"),
        (["Enginehub"], {"MaxMessageSize": "1"}, "Enginehub.MaxMessageSize: expected an integer"),
        (["Enginehub"], {"MaxMessageSize": 10}, "max_message_size: expected an integer >= 256"),
        (["Enginehub"], {"RetentionSeconds": -1}, "Enginehub.RetentionSeconds: expected a number > 0"),
        (["Enginehub"], {"Policies": {"p": ""}}, "Enginehub.Policies.p: the key must be a non-empty string"),
        (["Enginehub"], {"Policies": {}}, "at least one SAS policy"),
        (["Enginehub"], {"Fsync": "yes"}, "Enginehub.Fsync: expected true or false"),
    ],
)
def test_bad_config_names_the_key(path, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_mutate(path, value))


def test_duplicate_hub_names() -> None:
    data = json.loads(MICROSOFT_SAMPLE)
    entities = data["UserConfig"]["NamespaceConfig"][0]["Entities"]
    entities.append(dict(entities[0], Name="EH1"))
    with pytest.raises(ConfigError, match="duplicate event hub name 'EH1'"):
        parse_config(data)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 1, column 2"):
        load_config(write(tmp_path, "{oops"))
    with pytest.raises(ConfigError, match=r"Config.json: \(top level\): expected an object"):
        load_config(write(tmp_path, "[]"))
