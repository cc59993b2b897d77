from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from enginehub.datasets.schema import Row
from enginehub.simulator.faults import FaultConfig, FaultPlan
from enginehub.simulator.fleet import Fleet, MemorySource
from enginehub.simulator.messages import build_message, format_creation_time, malform, message_id


def _rows(unit: int, cycles: int) -> list[Row]:
    return [
        Row(unit, c, (0.0, 0.0, 100.0), tuple(float(unit * 1000 + c + s) for s in range(21)))
        for c in range(cycles, 0, -1)
    ]


SOURCE = MemorySource("TEST", _rows(1, 3) + _rows(2, 2) + _rows(5, 4))


def test_memory_source_groups_and_orders_by_cycle() -> None:
    assert list(SOURCE.unit_numbers()) == [1, 2, 5]
    assert [r.cycle for r in SOURCE.rows(5)] == [1, 2, 3, 4]


def test_each_device_replays_its_unit_then_a_fresh_engine_takes_its_place() -> None:
    fleet = Fleet(SOURCE, 2)
    sent = [fleet.next_row(0) for _ in range(6)]
    # engine 1 replays source unit 1 (3 cycles), then engine 3 (= 1 + 2 devices) replays source unit 5
    assert [(r.unit, r.cycle) for r in sent] == [(1, 1), (1, 2), (1, 3), (3, 1), (3, 2), (3, 3)]
    assert sent[3].sensors == SOURCE.rows(5)[0].sensors
    assert [(r.unit, r.cycle) for r in (fleet.next_row(1), fleet.next_row(1), fleet.next_row(1))] == [
        (2, 1),
        (2, 2),
        (4, 1),
    ]
    assert fleet.engines_finished == 2 and fleet.engine_of(1) == 4 and fleet.source_unit_of(1) == 1


def test_workers_slices_get_disjoint_engines() -> None:
    a = Fleet(SOURCE, 2, total_devices=4, first_index=0)
    b = Fleet(SOURCE, 2, total_devices=4, first_index=2)
    engines = set()
    for f in (a, b):
        for d in range(2):
            for _ in range(12):
                row = f.next_row(d)
                engines.add((row.unit, row.cycle))
    assert len(engines) == 48  # no (unit, cycle) twice across the two slices
    assert b.engine_of(0) > 4


def test_without_replacement_a_device_stops_after_its_engine() -> None:
    fleet = Fleet(SOURCE, 1, replace=False)
    assert [fleet.next_row(0).cycle for _ in range(3)] == [1, 2, 3]
    assert fleet.next_row(0) is None


def test_bad_fleet_slice() -> None:
    with pytest.raises(ValueError, match="bad fleet slice"):
        Fleet(SOURCE, 3, total_devices=2)


def _fake_encode(row: Row, payload: str) -> bytes:
    return f"{payload}:{row.unit}:{row.cycle}".encode()


def test_message_fields_are_deterministic() -> None:
    row = SOURCE.rows(2)[1]._replace(unit=42)
    t = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    m = build_message(row, run_id="r1", payload="json", dataset="FD001", created=t, encode=_fake_encode)
    again = build_message(row, run_id="r1", payload="json", dataset="FD001", created=t, encode=_fake_encode)
    assert m == again
    assert m.message_id == message_id("r1", 42, 2) == "r1-42-2"
    assert m.content_type == "application/json" and m.content_encoding == "utf-8"
    assert m.properties == {
        "unit": "42",
        "cycle": "2",
        "dataset": "FD001",
        "iothub-creation-time-utc": "2024-05-06T07:08:09.123Z",
    }
    other = build_message(row, run_id="r2", payload="seed", dataset="FD001", created=t, encode=_fake_encode)
    assert other.message_id != m.message_id and other.content_type == "text/plain"
    with pytest.raises(ValueError, match="payload must be one of"):
        build_message(row, run_id="r", payload="xml", dataset="x", created=t, encode=_fake_encode)


def test_creation_time_is_utc_with_milliseconds() -> None:
    assert format_creation_time(datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01T00:00:00.000Z"


def test_real_codecs_payloads() -> None:
    pytest.importorskip("enginehub.datasets.codecs")
    row = Row(
        7,
        3,
        (0.0023, 0.0003, 100.0),
        tuple([518.67] * 14 + [8.4052] + [0.03, 392.0, 2388.0, 100.0, 38.86, 23.3735]),
    )
    t = datetime(2024, 1, 1, tzinfo=UTC)
    seed = build_message(row, run_id="r", payload="seed", dataset="FD001", created=t)
    assert seed.body.decode().split()[:2] == ["7", "3"] and len(seed.body.split()) == 26
    js = json.loads(build_message(row, run_id="r", payload="json", dataset="FD001", created=t).body)
    assert js["unit"] == 7 and js["cycle"] == 3


def test_malformed_bodies_do_not_parse_but_keep_the_id() -> None:
    row = SOURCE.rows(1)[0]
    t = datetime(2024, 1, 1, tzinfo=UTC)
    m = build_message(
        row,
        run_id="r",
        payload="seed",
        dataset="T",
        created=t,
        encode=lambda r, p: b"1 1 " + b" ".join(b"1.0" for _ in range(24)),
    )
    rng = random.Random(0)
    seen = set()
    for _ in range(30):
        bad = malform(m, rng)
        assert bad.malformed and bad.message_id == m.message_id and bad.body != m.body
        assert bad.properties["enginehub-fault"] == "malformed"
        seen.add(bad.body[:3])
    assert len(seen) == 3  # all three corruption modes happen


def test_faults_are_off_by_default_and_seeded() -> None:
    plan = FaultPlan(FaultConfig(), random.Random(0))
    assert not FaultConfig().any
    assert not any(plan.duplicate() or plan.malformed() or plan.disconnect_after(i) for i in range(1000))
    cfg = FaultConfig(duplicate_rate=0.1, malformed_rate=0.2, disconnect_every=7)
    a, b = FaultPlan(cfg, random.Random(9)), FaultPlan(cfg, random.Random(9))
    da = [a.duplicate() for _ in range(2000)]
    assert da == [b.duplicate() for _ in range(2000)]
    assert 150 < sum(da) < 250
    assert 300 < sum(a.malformed() for _ in range(2000)) < 500
    assert [i for i in range(1, 30) if a.disconnect_after(i)] == [7, 14, 21, 28]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duplicate_rate": 1.5}, "--duplicate-rate"),
        ({"malformed_rate": -0.1}, "--malformed-rate"),
        ({"disconnect_every": -1}, "--disconnect-every"),
    ],
)
def test_bad_fault_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultConfig(**kwargs)
