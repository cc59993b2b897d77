"""Event Hubs emulator configuration: our dataclass, and Microsoft's emulator ``Config.json`` read as is.

Microsoft's file (``Azure/azure-event-hubs-emulator-installer``, ``EventHub-Emulator/Config/Config.json``)::

    {"UserConfig": {
        "NamespaceConfig": [{"Type": "EventHub", "Name": "emulatorNs1",
            "Entities": [{"Name": "eh1", "PartitionCount": "2", "ConsumerGroups": [{"Name": "cg1"}]}]}],
        "LoggingConfig": {"Type": "File"}}}

``PartitionCount`` is a string there (an integer is accepted too). ``$Default`` is always present and
may also be declared. Keys we do not know inside ``UserConfig`` are logged and ignored, so newer files
still load; ``LoggingConfig`` is accepted and ignored (we log to stderr).

Our own options live in an optional top-level ``"Enginehub"`` object next to ``UserConfig`` (strict: an
unknown key is an error)::

    "Enginehub": {"Policies": {"RootManageSharedAccessKey": "<key>"}, "MaxMessageSize": 1048576,
                  "RetentionSeconds": 3600, "SegmentBytes": 67108864, "Fsync": false}

Without ``Policies`` a random key is generated per start for ``RootManageSharedAccessKey``.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "emulatorNs1"
DEFAULT_POLICY = "RootManageSharedAccessKey"
DEFAULT_MAX_MESSAGE_SIZE = 1048576
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
MAX_PARTITIONS = 1024
MAX_NAME_LENGTH = 256


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


def random_key() -> str:
    """A fresh SAS key in the service's format (base64 of 32 random bytes)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True, slots=True)
class HubConfig:
    """One event hub: name, partition count and the consumer groups besides ``$Default``."""

    name: str
    partition_count: int = 4
    consumer_groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything the emulator's state needs to start."""

    namespace: str = DEFAULT_NAMESPACE
    hubs: tuple[HubConfig, ...] = ()
    policies: dict[str, str] = field(default_factory=lambda: {DEFAULT_POLICY: random_key()})
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    retention_seconds: float | None = None  # None: keep events forever
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    fsync: bool = False

    def __post_init__(self) -> None:
        _check_name("namespace", self.namespace)
        seen: set[str] = set()
        for i, hub in enumerate(self.hubs):
            _check_name(f"hubs[{i}].name", hub.name)
            if hub.name.lower() in seen:
                raise ConfigError(f"hubs[{i}].name: duplicate event hub name {hub.name!r}")
            seen.add(hub.name.lower())
            if not isinstance(hub.partition_count, int) or not 1 <= hub.partition_count <= MAX_PARTITIONS:
                raise ConfigError(
                    f"hubs[{i}].partition_count: expected an integer 1..{MAX_PARTITIONS}, "
                    f"got {hub.partition_count!r}"
                )
            for j, cg in enumerate(hub.consumer_groups):
                _check_name(f"hubs[{i}].consumer_groups[{j}]", cg)
        if not self.policies:
            raise ConfigError("policies: at least one SAS policy is required")
        for name, key in self.policies.items():
            _check_name("policies", name)
            if not isinstance(key, str) or not key:
                raise ConfigError(f"policies[{name!r}]: the key must be a non-empty string")
        if not isinstance(self.max_message_size, int) or self.max_message_size < 256:
            raise ConfigError(f"max_message_size: expected an integer >= 256, got {self.max_message_size!r}")
        if self.retention_seconds is not None and (
            not isinstance(self.retention_seconds, int | float) or self.retention_seconds <= 0
        ):
            raise ConfigError(f"retention_seconds: expected a number > 0, got {self.retention_seconds!r}")
        if not isinstance(self.segment_bytes, int) or self.segment_bytes < 4096:
            raise ConfigError(f"segment_bytes: expected an integer >= 4096, got {self.segment_bytes!r}")

    @classmethod
    def simple(
        cls,
        hubs: Iterable[str] = ("eh1",),
        partitions: int = 4,
        consumer_groups: Iterable[str] = (),
        policies: Mapping[str, str] | None = None,
        **options: Any,
    ) -> EmulatorConfig:
        """Config from CLI-style flags: the same partitions and consumer groups for every hub."""
        cgs = tuple(consumer_groups)
        hub_configs = tuple(HubConfig(name, partitions, cgs) for name in hubs)
        if policies is None:
            return cls(hubs=hub_configs, **options)
        return cls(hubs=hub_configs, policies=dict(policies), **options)

    @property
    def default_policy(self) -> tuple[str, str]:
        """(name, key) of the policy to put in connection strings: RootManageSharedAccessKey if present."""
        if DEFAULT_POLICY in self.policies:
            return DEFAULT_POLICY, self.policies[DEFAULT_POLICY]
        name = next(iter(self.policies))
        return name, self.policies[name]


def _check_name(where: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise ConfigError(f"{where}: longer than {MAX_NAME_LENGTH} characters")
    if any(ord(ch) < 32 for ch in value):
        raise ConfigError(f"{where}: {value!r} contains control characters")
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ConfigError(f"{where}: {value!r} may not contain '/' or '\\' or be '.'/'..'")


def load_config(path: str | Path, **overrides: Any) -> EmulatorConfig:
    """Read a Microsoft emulator ``Config.json`` (plus our optional ``Enginehub`` section).

    ``overrides`` replace EmulatorConfig fields (for CLI flags such as ``max_message_size``).
    """
    path = Path(path)
    try:
        text = path.read_text("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    try:
        return parse_config(data, **overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_config(data: Any, **overrides: Any) -> EmulatorConfig:
    """Build an EmulatorConfig from the decoded JSON of a Config.json."""
    _expect(data, dict, "(top level)")
    for key in data:
        if key not in ("UserConfig", "Enginehub"):
            LOG.warning("Config: ignoring unknown top-level key %r", key)
    user = data.get("UserConfig")
    if user is None:
        raise ConfigError("UserConfig: missing (expected the Microsoft emulator Config.json shape)")
    _expect(user, dict, "UserConfig")
    for key in user:
        if key not in ("NamespaceConfig", "LoggingConfig"):
            LOG.warning("Config: ignoring unknown key UserConfig.%s", key)
    namespaces = user.get("NamespaceConfig")
    if namespaces is None:
        raise ConfigError("UserConfig.NamespaceConfig: missing")
    _expect(namespaces, list, "UserConfig.NamespaceConfig")
    if len(namespaces) != 1:
        raise ConfigError(f"UserConfig.NamespaceConfig: expected exactly 1 namespace, got {len(namespaces)}")
    where = "UserConfig.NamespaceConfig[0]"
    ns = namespaces[0]
    _expect(ns, dict, where)
    ns_type = ns.get("Type", "EventHub")
    if ns_type != "EventHub":
        raise ConfigError(f"{where}.Type: expected 'EventHub', got {ns_type!r}")
    namespace = ns.get("Name", DEFAULT_NAMESPACE)
    _check_name(where + ".Name", namespace)
    entities = ns.get("Entities")
    if entities is None:
        raise ConfigError(f"{where}.Entities: missing")
    _expect(entities, list, where + ".Entities")
    if not entities:
        raise ConfigError(f"{where}.Entities: at least one event hub is required")
    hubs = tuple(_parse_entity(e, f"{where}.Entities[{i}]") for i, e in enumerate(entities))
    for key in ns:
        if key not in ("Type", "Name", "Entities"):
            LOG.warning("Config: ignoring unknown key %s.%s", where, key)

    options: dict[str, Any] = {}
    ours = data.get("Enginehub")
    if ours is not None:
        options = _parse_enginehub(ours)
    options.update(overrides)
    try:
        return EmulatorConfig(namespace=namespace, hubs=hubs, **options)
    except ConfigError as exc:
        raise ConfigError(f"Enginehub: {exc}") from None


def _parse_entity(entity: Any, where: str) -> HubConfig:
    _expect(entity, dict, where)
    name = entity.get("Name")
    if name is None:
        raise ConfigError(f"{where}.Name: missing")
    _check_name(where + ".Name", name)
    raw = entity.get("PartitionCount")
    if raw is None:
        raise ConfigError(f"{where}.PartitionCount: missing")
    count: int | None = None
    if isinstance(raw, bool):
        count = None
    elif isinstance(raw, int):
        count = raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        count = int(raw.strip())
    if count is None or not 1 <= count <= MAX_PARTITIONS:
        raise ConfigError(f"{where}.PartitionCount: expected an integer 1..{MAX_PARTITIONS}, got {raw!r}")
    cgs_raw = entity.get("ConsumerGroups", [])
    _expect(cgs_raw, list, where + ".ConsumerGroups")
    groups: list[str] = []
    for j, cg in enumerate(cgs_raw):
        cg_where = f"{where}.ConsumerGroups[{j}]"
        _expect(cg, dict, cg_where)
        cg_name = cg.get("Name")
        if cg_name is None:
            raise ConfigError(f"{cg_where}.Name: missing")
        _check_name(cg_where + ".Name", cg_name)
        if cg_name.lower() == "$default":
            continue  # always present
        if cg_name.lower() in (g.lower() for g in groups):
            raise ConfigError(f"{cg_where}.Name: duplicate consumer group {cg_name!r}")
        groups.append(cg_name)
    for key in entity:
        if key not in ("Name", "PartitionCount", "ConsumerGroups"):
            LOG.warning("Config: ignoring unknown key %s.%s", where, key)
    return HubConfig(name=name, partition_count=count, consumer_groups=tuple(groups))


_OUR_KEYS = {
    "Policies": "policies",
    "MaxMessageSize": "max_message_size",
    "RetentionSeconds": "retention_seconds",
    "SegmentBytes": "segment_bytes",
    "Fsync": "fsync",
}


def _parse_enginehub(ours: Any) -> dict[str, Any]:
    _expect(ours, dict, "Enginehub")
    options: dict[str, Any] = {}
    for key, value in ours.items():
        if key not in _OUR_KEYS:
            raise ConfigError(f"Enginehub.{key}: unknown key (known: {', '.join(_OUR_KEYS)})")
        where = "Enginehub." + key
        if key == "Policies":
            _expect(value, dict, where)
            for pname, pkey in value.items():
                if not isinstance(pkey, str) or not pkey:
                    raise ConfigError(f"{where}.{pname}: the key must be a non-empty string")
            value = dict(value)
        elif key == "Fsync":
            _expect(value, bool, where)
        elif key == "RetentionSeconds":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise ConfigError(f"{where}: expected a number > 0 or null, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        options[_OUR_KEYS[key]] = value
    return options


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        names = {dict: "an object", list: "an array", bool: "true or false", str: "a string"}
        raise ConfigError(f"{where}: expected {names.get(kind, kind.__name__)}, got {type(value).__name__}")
