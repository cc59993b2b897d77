"""Event Hubs rules without I/O: selector filters, start positions, epoch/quota rules, $cbs scopes, READ."""

from __future__ import annotations

from typing import Any

import pytest

from enginehub.harness.amqp.message import Message
from enginehub.harness.eventhubs import cbs, mgmt
from enginehub.harness.eventhubs.config import EmulatorConfig
from enginehub.harness.eventhubs.errors import InvalidFilter, ManagementError, QuotaExceeded, ReceiverStolen
from enginehub.harness.eventhubs.links import parse_filter, start_sequence
from enginehub.harness.eventhubs.server import EventHubsEmulator
from enginehub.harness.eventhubs.state import EventHubsStore


@pytest.mark.parametrize(
    "expr,expected",
    [
        ("amqp.annotation.x-opt-offset > '-1'", ("offset", False, "-1")),
        ("amqp.annotation.x-opt-offset >= '@latest'", ("offset", True, "@latest")),
        ("amqp.annotation.x-opt-sequence-number > '41'", ("sequence-number", False, "41")),
        ("amqp.annotation.x-opt-enqueued-time >= '1700000000000'", ("enqueued-time", True, "1700000000000")),
    ],
)
def test_parse_filter(expr: str, expected: tuple[str, bool, str]) -> None:
    assert parse_filter(expr) == expected


@pytest.mark.parametrize("expr", ["", "x-opt-offset > 1", "amqp.annotation.x-opt-offset < '1'", "drop table"])
def test_bad_filters_are_refused_with_not_allowed(expr: str) -> None:
    with pytest.raises(InvalidFilter) as info:
        parse_filter(expr)
    assert info.value.condition == "amqp:not-allowed" and "not a valid amqp filter" in info.value.description


@pytest.fixture
def store() -> Any:
    clock = iter(range(1_000, 10_000, 10))
    s = EventHubsStore(EmulatorConfig.simple(partitions=1, policies={"p": "k"}), clock=lambda: next(clock))
    for _ in range(5):  # one append each: distinct enqueued times
        s.hub("eh1").partitions["0"].append([(b"\x01" + b"\x00" * 12, None)])
    yield s
    s.close()


def test_start_sequence_positions(store: Any) -> None:
    p = store.hub("eh1").partitions["0"]
    events = p.read(0, 10)
    assert start_sequence(p, "offset", False, "-1") == 0
    assert start_sequence(p, "offset", True, "@latest") == 5
    assert start_sequence(p, "offset", False, str(events[1].offset)) == 2
    assert start_sequence(p, "offset", True, str(events[1].offset)) == 1
    assert start_sequence(p, "sequence-number", False, "2") == 3
    assert start_sequence(p, "sequence-number", True, "2") == 2
    assert start_sequence(p, "enqueued-time", True, str(events[3].enqueued_time_ms)) == 3
    with pytest.raises(InvalidFilter):
        start_sequence(p, "sequence-number", False, "abc")


class StubLink:
    def __init__(self) -> None:
        self.detached = False
        self.error: tuple[str, str] | None = None

    def detach(self, condition: Any, description: str) -> None:
        self.detached = True
        self.error = (str(condition), description)


class StubConsumer:
    def __init__(self, epoch: int | None) -> None:
        self.epoch = epoch
        self.link = StubLink()
        self.key = ("eh1", "$default", "0")


def test_epoch_rules() -> None:
    emu = EventHubsEmulator(EmulatorConfig.simple(policies={"p": "k"}), port=0, http_port=None)
    first = StubConsumer(1)
    emu.register_consumer(first)
    with pytest.raises(ReceiverStolen, match="higher epoch '1' already exists"):
        emu.register_consumer(StubConsumer(0))
    with pytest.raises(ReceiverStolen, match="non-epoch receiver is not allowed"):
        emu.register_consumer(StubConsumer(None))
    equal = StubConsumer(1)
    emu.register_consumer(equal)  # equal epoch steals
    assert first.link.detached and first.link.error[0] == "amqp:link:stolen"
    assert "higher epoch of '1'" in first.link.error[1]
    emu.unregister_consumer(first)
    emu.unregister_consumer(equal)


def test_non_epoch_quota_and_epoch_over_non_epoch() -> None:
    emu = EventHubsEmulator(EmulatorConfig.simple(policies={"p": "k"}), port=0, http_port=None)
    readers = [StubConsumer(None) for _ in range(5)]
    for r in readers:
        emu.register_consumer(r)
    with pytest.raises(QuotaExceeded, match="which is 5"):
        emu.register_consumer(StubConsumer(None))
    emu.register_consumer(StubConsumer(0))
    assert all(r.link.detached and r.link.error[0] == "amqp:link:stolen" for r in readers)


def test_authorization_scopes() -> None:
    auth = cbs.Authorization()
    auth.grant("sb://localhost:5672/eh1/consumergroups/$default")
    assert auth.covers("amqps://localhost:5672/eh1/ConsumerGroups/$Default/Partitions/0")
    assert not auth.covers("amqps://localhost:5672/eh1")
    assert not auth.covers("amqps://localhost:5672/eh2/ConsumerGroups/$Default/Partitions/0")
    auth.grant("sb://localhost:5672/")
    assert auth.covers("amqps://x/eh2/Partitions/1")


def test_put_token_statuses() -> None:
    from enginehub.harness.eventhubs.auth import generate_sas_token

    auth = cbs.Authorization()
    token = generate_sas_token("sb://h/eh1", "p", "k")
    props = {"operation": "put-token", "name": "sb://h/eh1", "type": "servicebus.windows.net:sastoken"}
    ok = Message(application_properties=props, value=token, has_value=True)
    assert cbs.put_token(ok, auth, {"p": "k"}) == (202, "Accepted") and auth.covers("amqps://h/eh1")
    bad = Message(application_properties=dict(ok.application_properties), value=token, has_value=True)
    status, text = cbs.put_token(bad, cbs.Authorization(), {"p": "other"})
    assert status == 401 and "InvalidSignature" in text
    jwt = Message(
        application_properties={**ok.application_properties, "type": "jwt"}, value="x", has_value=True
    )
    assert cbs.put_token(jwt, cbs.Authorization(), {"p": "k"})[0] == 401


def test_management_read(store: Any) -> None:
    def req(**props: Any) -> Message:
        return Message(application_properties={"operation": "READ", **props})

    body = mgmt.handle_request(store, req(name="EH1", type="com.microsoft:eventhub"), True)
    assert body["partition_ids"] == ["0"] and body["name"] == "eh1"
    part = mgmt.handle_request(store, req(name="eh1", type="com.microsoft:partition", partition="0"), True)
    assert part["last_enqueued_sequence_number"] == 4 and part["is_partition_empty"] is False
    assert isinstance(part["last_enqueued_offset"], str)
    for props, status in [
        ({"name": "nope", "type": "com.microsoft:eventhub"}, 404),
        ({"name": "eh1", "type": "com.microsoft:partition", "partition": "9"}, 404),
        ({"name": "eh1", "type": "other"}, 400),
    ]:
        with pytest.raises(ManagementError) as info:
            mgmt.handle_request(store, req(**props), True)
        assert info.value.status == status
    with pytest.raises(ManagementError) as info:
        mgmt.handle_request(store, req(name="eh1", type="com.microsoft:eventhub"), False)
    assert info.value.status == 401
