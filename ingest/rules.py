"""Ingest rules: which events go into which tables, in which payload format (pure functions).

Config file (TOML)::

    [unmatched]
    action = "dead-letter"        # or "log": counted and logged, not stored (an explicit choice)

    [[rule]]
    name = "fleet-a"              # optional, for logs and metrics
    eventhub = "eh1"              # optional: the source; omitted = any hub
    consumer_group = "$Default"   # optional: omitted = any consumer group
    table = "fleet_a_events"      # default enginehub_events
    format = "seed"               # seed | json | auto | raw (default auto)
    device_id = ["engine-1*", "engine-2"]   # optional glob(s) on the device id
    properties = { fleet = "A" }  # optional: application properties that must equal these (str compare)

Every matching rule writes one row into its table (fan-out, as in the original ingest rules). With no
config file the default rule writes every event into ``enginehub_events``. An event no rule matches is
counted and logged, and dead-lettered unless ``[unmatched] action = "log"``. A payload that does not parse
in the rule's format becomes a dead-letter row with the reason; nothing is silently dropped.
"""

from __future__ import annotations

import fnmatch
import logging
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginehub.ingest.model import DEFAULT_TABLE, DeadLetter, EventRecord, Row
from enginehub.ingest.payloads import FORMATS, PayloadFormatError, effective_format, parse_payload
from enginehub.ingest.sinks.base import TableSpec, check_identifier

LOG = logging.getLogger(__name__)

UNMATCHED_ACTIONS = ("dead-letter", "log")


class RuleConfigError(ValueError):
    """The rules file is invalid; the message names the file, the rule and the field."""


@dataclass(frozen=True)
class Rule:
    table: str = DEFAULT_TABLE
    format: str = "auto"
    name: str = "default"
    eventhub: str | None = None
    consumer_group: str | None = None
    device_id: tuple[str, ...] = ()
    properties: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def matches(self, event: EventRecord) -> bool:
        if self.eventhub is not None and event.eventhub != self.eventhub:
            return False
        if self.consumer_group is not None and event.consumer_group.lower() != self.consumer_group.lower():
            return False
        if self.device_id:
            if event.device_id is None:
                return False
            if not any(fnmatch.fnmatchcase(event.device_id, pattern) for pattern in self.device_id):
                return False
        for key, allowed in self.properties:
            if key not in event.properties or str(event.properties[key]) not in allowed:
                return False
        return True


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = (Rule(),)
    unmatched: str = "dead-letter"

    def tables(self) -> list[TableSpec]:
        """One spec per target table (the first rule naming a table decides its format)."""
        specs: dict[str, TableSpec] = {}
        for rule in self.rules:
            specs.setdefault(rule.table, TableSpec(rule.table, rule.format))
        return list(specs.values())


@dataclass
class Routed:
    rows: list[Row] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    unmatched: int = 0


def route(event: EventRecord, ruleset: RuleSet) -> Routed:
    """Rows and dead letters for one event (pure)."""
    out = Routed()
    _route_into(out, event, ruleset, event.partition_context())
    return out


def _route_into(out: Routed, event: EventRecord, ruleset: RuleSet, context: dict[str, Any]) -> None:
    matching = [rule for rule in ruleset.rules if rule.matches(event)]
    if not matching:
        out.unmatched += 1
        if ruleset.unmatched == "dead-letter":
            out.dead_letters.append(
                DeadLetter.of(
                    event, f"no rule matched (eventhub {event.eventhub!r}, device {event.device_id!r})"
                )
            )
        return
    try:
        text = event.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        for rule in matching:
            out.dead_letters.append(DeadLetter.of(event, f"payload is not UTF-8: {exc}", rule.table))
        return
    parsed: dict[str, dict[str, Any] | str] = {}
    metadata = event.event_metadata()
    for rule in matching:
        columns = parsed.get(rule.format)
        if columns is None:
            try:
                columns = parse_payload(rule.format, text)
            except PayloadFormatError as exc:
                columns = f"{effective_format(rule.format, text)} payload: {exc}"
            parsed[rule.format] = columns
        if isinstance(columns, str):
            out.dead_letters.append(DeadLetter.of(event, columns, rule.table))
            continue
        out.rows.append(
            Row(
                table=rule.table,
                key=event.identity_key,
                partition_context=context,
                event_metadata=metadata,
                ts=event.enqueued_time,
                payload=text,
                columns=columns,
                partition_id=event.partition_id,
                sequence_number=event.sequence_number,
                raw=event.body,
            )
        )


def route_batch(events: Sequence[EventRecord], ruleset: RuleSet) -> Routed:
    """``route`` for a batch, into one :class:`Routed`; rows of one partition share one (read-only)
    partition context dict, so sinks can encode it once per batch."""
    out = Routed()
    contexts: dict[tuple[str, str, str], dict[str, Any]] = {}
    for event in events:
        where = (event.eventhub, event.consumer_group, event.partition_id)
        context = contexts.get(where)
        if context is None:
            context = contexts[where] = event.partition_context()
        _route_into(out, event, ruleset, context)
    return out


# -- configuration ------------------------------------------------------------------------------------------
_RULE_KEYS = {"name", "eventhub", "consumer_group", "table", "format", "device_id", "properties"}


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str | int | float | bool) for v in value):
        return tuple(str(v) for v in value)
    if isinstance(value, int | float | bool):
        return (str(value),)
    raise RuleConfigError(f"{where}: expected a string or a non-empty list of strings, got {value!r}")


def parse_rules(
    config: Mapping[str, Any], source: str = "<rules>", default_table: str = DEFAULT_TABLE
) -> RuleSet:
    """Validate a decoded TOML document; every error names the rule and the field."""
    unknown = set(config) - {"rule", "unmatched"}
    if unknown:
        raise RuleConfigError(
            f"{source}: unknown top-level keys {sorted(unknown)} (expected [[rule]], [unmatched])"
        )
    unmatched_cfg = config.get("unmatched", {})
    if not isinstance(unmatched_cfg, dict) or set(unmatched_cfg) - {"action"}:
        raise RuleConfigError(f'{source}: [unmatched] takes only action = "dead-letter" | "log"')
    action = unmatched_cfg.get("action", "dead-letter")
    if action not in UNMATCHED_ACTIONS:
        raise RuleConfigError(f"{source}: [unmatched] action {action!r}: expected one of {UNMATCHED_ACTIONS}")
    raw_rules = config.get("rule", [])
    if not isinstance(raw_rules, list):
        raise RuleConfigError(f"{source}: 'rule' must be an array of tables ([[rule]])")
    rules: list[Rule] = []
    for n, raw in enumerate(raw_rules, start=1):
        where = f"{source}: rule #{n}"
        if not isinstance(raw, dict):
            raise RuleConfigError(f"{where}: must be a table")
        if "name" in raw:
            where += f" ({raw['name']!r})"
        extra = set(raw) - _RULE_KEYS
        if extra:
            raise RuleConfigError(f"{where}: unknown keys {sorted(extra)} (allowed: {sorted(_RULE_KEYS)})")
        table = raw.get("table", default_table)
        try:
            check_identifier(table)
        except ValueError as exc:
            raise RuleConfigError(f"{where}: {exc}") from exc
        fmt = raw.get("format", "auto")
        if fmt not in FORMATS:
            raise RuleConfigError(f"{where}: format {fmt!r}: expected one of {', '.join(FORMATS)}")
        props = raw.get("properties", {})
        if not isinstance(props, dict):
            raise RuleConfigError(f'{where}: properties must be a table, e.g. {{ fleet = "A" }}')
        for key in ("eventhub", "consumer_group", "name"):
            if key in raw and not isinstance(raw[key], str):
                raise RuleConfigError(f"{where}: {key} must be a string")
        rules.append(
            Rule(
                table=table,
                format=fmt,
                name=raw.get("name", f"rule{n}"),
                eventhub=raw.get("eventhub"),
                consumer_group=raw.get("consumer_group"),
                device_id=_strings(raw["device_id"], f"{where} device_id") if "device_id" in raw else (),
                properties=tuple(
                    (str(k), _strings(v, f"{where} properties.{k}")) for k, v in sorted(props.items())
                ),
            )
        )
    if not rules:
        raise RuleConfigError(f"{source}: no [[rule]] defined")
    formats: dict[str, str] = {}
    for rule in rules:
        if formats.setdefault(rule.table, rule.format) != rule.format:
            raise RuleConfigError(
                f"{source}: table {rule.table!r} is used with formats {formats[rule.table]!r} and "
                f"{rule.format!r}; one table has one payload format"
            )
    return RuleSet(tuple(rules), action)


def load_rules(path: str | Path | None, default_table: str = DEFAULT_TABLE) -> RuleSet:
    """The rule set of a TOML file, or the default rule (every event into ``default_table``)."""
    if path is None:
        return RuleSet((Rule(table=check_identifier(default_table)),))
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RuleConfigError(f"rules file {p} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RuleConfigError(f"rules file {p}: invalid TOML: {exc}") from exc
    return parse_rules(data, str(p), default_table)
