"""Rules: TOML config, filters, fan-out, formats, dead letters for bad payloads and unmatched events."""

from __future__ import annotations

from pathlib import Path

import pytest

from enginehub.ingest.model import DEFAULT_TABLE
from enginehub.ingest.rules import RuleConfigError, load_rules, parse_rules, route, route_batch
from enginehub.ingest.testing import json_payload, make_event, seed_line

CONFIG = """
[unmatched]
action = "dead-letter"

[[rule]]
name = "all"
eventhub = "eh1"
table = "all_events"
format = "auto"

[[rule]]
name = "fleet-a-json"
eventhub = "eh1"
consumer_group = "$default"
table = "fleet_a"
format = "json"
device_id = ["engine-1*", "engine-7"]
properties = { fleet = "A" }
"""


@pytest.fixture
def rules(tmp_path: Path):
    path = tmp_path / "rules.toml"
    path.write_text(CONFIG)
    return load_rules(path)


def test_default_rule_every_event_into_enginehub_events() -> None:
    rs = load_rules(None)
    out = route(make_event(0, seed_line(3, 9), message_id="m"), rs)
    assert [r.table for r in out.rows] == [DEFAULT_TABLE]
    row = out.rows[0]
    assert row.key == "mid:m"
    assert (row.columns["unit #"], row.columns["cycle #"]) == (3, 9)
    assert row.partition_context == {"eventhub": "eh1", "consumer_group": "$Default", "partition_id": "0"}
    assert row.event_metadata["sequence_number"] == 0 and row.event_metadata["device_id"] == "engine-1"
    assert [t.name for t in rs.tables()] == [DEFAULT_TABLE]


def test_default_rule_takes_json_too() -> None:
    out = route(make_event(0, json_payload(4, 2)), load_rules(None))
    assert out.rows[0].columns["unit #"] == 4 and not out.dead_letters


def test_fan_out_to_every_matching_rule(rules) -> None:
    event = make_event(5, json_payload(1, 6), device_id="engine-12", properties={"fleet": "A"})
    out = route(event, rules)
    assert sorted(r.table for r in out.rows) == ["all_events", "fleet_a"]
    assert {r.key for r in out.rows} == {"seq:0:5"}


@pytest.mark.parametrize(
    ("device", "props", "eventhub", "expected"),
    [
        ("engine-12", {"fleet": "A"}, "eh1", ["all_events", "fleet_a"]),
        ("engine-7", {"fleet": "A"}, "eh1", ["all_events", "fleet_a"]),
        ("engine-2", {"fleet": "A"}, "eh1", ["all_events"]),  # device filter
        ("engine-1", {"fleet": "B"}, "eh1", ["all_events"]),  # property filter
        ("engine-1", {}, "eh1", ["all_events"]),  # property missing
        (None, {"fleet": "A"}, "eh1", ["all_events"]),  # no device id
    ],
)
def test_filters(rules, device, props, eventhub, expected) -> None:
    out = route(
        make_event(1, json_payload(1, 1), device_id=device, properties=props, eventhub=eventhub), rules
    )
    assert sorted(r.table for r in out.rows) == expected


def test_unmatched_is_counted_and_dead_lettered(rules) -> None:
    out = route(make_event(3, seed_line(1, 1), eventhub="other", partition_id="2"), rules)
    assert out.rows == [] and out.unmatched == 1
    (dl,) = out.dead_letters
    assert (dl.table, dl.partition_id, dl.sequence_number) == ("", "2", 3)
    assert "no rule matched" in dl.reason and dl.raw == seed_line(1, 1).encode()


def test_unmatched_log_action_counts_without_storing() -> None:
    rs = parse_rules({"rule": [{"eventhub": "x"}], "unmatched": {"action": "log"}})
    out = route(make_event(0), rs)
    assert (out.rows, out.dead_letters, out.unmatched) == ([], [], 1)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"1 2 3", "seed"),
        (b'{"unit": 1}', "json"),
        (b"", "seed"),
        (seed_line(1, 1).replace("100.0", "abc").encode(), "seed"),
    ],
)
def test_unparseable_payloads_become_dead_letters_with_reason(body: bytes, reason: str) -> None:
    out = route(make_event(9, body, partition_id="1"), load_rules(None))
    assert out.rows == []
    (dl,) = out.dead_letters
    assert reason.lower() in dl.reason.lower() and dl.raw == body and dl.table == DEFAULT_TABLE
    assert (dl.partition_id, dl.sequence_number, dl.key) == ("1", 9, "seq:1:9")


def test_one_bad_format_does_not_block_the_other_rule(rules) -> None:
    # a seed line: fine for the auto rule, a dead letter for the json rule
    event = make_event(2, seed_line(1, 1), device_id="engine-1", properties={"fleet": "A"})
    out = route(event, rules)
    assert [r.table for r in out.rows] == ["all_events"]
    assert [d.table for d in out.dead_letters] == ["fleet_a"]


def test_route_batch_sums(rules) -> None:
    events = [make_event(i, json_payload(1, i + 1), eventhub="eh1" if i % 2 else "zz") for i in range(6)]
    out = route_batch(events, rules)
    assert (len(out.rows), len(out.dead_letters), out.unmatched) == (3, 3, 3)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"rule": []}, "no \\[\\[rule\\]\\]"),
        ({"rule": [{"table": "bad name"}]}, "rule #1.*invalid table name"),
        ({"rule": [{"format": "xml"}]}, "format 'xml'"),
        ({"rule": [{"tabel": "x"}]}, "unknown keys \\['tabel'\\]"),
        ({"rule": [{"properties": "fleet=A"}]}, "properties must be a table"),
        ({"rule": [{"device_id": []}]}, "device_id"),
        ({"rule": [{}], "unmatched": {"action": "drop"}}, "action 'drop'"),
        ({"rule": [{}], "extra": 1}, "unknown top-level"),
        (
            {"rule": [{"table": "t", "format": "seed"}, {"table": "t", "format": "json"}]},
            "one payload format",
        ),
    ],
)
def test_bad_config_is_a_clear_error(doc, message) -> None:
    with pytest.raises(RuleConfigError, match=message):
        parse_rules(doc, "rules.toml")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(RuleConfigError, match="not found"):
        load_rules(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]\n")
    with pytest.raises(RuleConfigError, match="invalid TOML"):
        load_rules(bad)


def test_builtin_fallback_parsers_agree_with_the_codecs() -> None:
    """The fallback (used only while enginehub.datasets.codecs is not importable) parses the same layout."""
    from enginehub.ingest import payloads

    for text in (seed_line(3, 4), json_payload(3, 4)):
        fmt = payloads.effective_format("auto", text)
        fallback = payloads._fallback_seed if fmt == "seed" else payloads._fallback_json
        assert fallback(text) == payloads.parse_payload(fmt, text)
    for bad, parse in (("1 2", payloads._fallback_seed), ("[1]", payloads._fallback_json)):
        with pytest.raises(payloads.PayloadFormatError):
            parse(bad)
