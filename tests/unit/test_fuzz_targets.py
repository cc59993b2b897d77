"""CI's short profile of the fuzz targets (``make fuzz`` runs each for 100,000 cases): every decoder that
takes bytes from the network or from users raises only its declared errors. No I/O."""

from __future__ import annotations

import logging

import pytest

from enginehub.harness.testing.fuzz import TARGETS, run

CI_CASES = 300


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_fuzz_target_short_profile(target, caplog) -> None:
    caplog.set_level(logging.ERROR)
    cases, _ = run(target, CI_CASES)
    assert cases >= CI_CASES // 2  # hypothesis may stop early on a small input space, not at nothing


def test_the_connection_target_reaches_sessions_and_links_and_traps_internal_errors(monkeypatch) -> None:
    """The frames it generates are ones the state machine acts on (not all refused at the handshake), and
    the catch-all internal-error path is a finding."""
    from enginehub.harness.amqp import connection
    from enginehub.harness.testing import fuzz

    seen = []
    real = connection.AMQPConnection.data_received

    def spy(self, data):
        real(self, data)
        seen.append((len(self.sessions), sum(len(s.remote_links) for s in self.sessions.values())))

    monkeypatch.setattr(connection.AMQPConnection, "data_received", spy)
    begin = fuzz._f(fuzz.Begin(None, 0, 65536, 65536, 100, None, None, None), 1)
    attach = fuzz._f(
        fuzz.Attach(
            "l", 0, False, 0, 1, fuzz.Source("x"), fuzz.AmqpTarget("t"), None, None, 0, 0, None, None, None
        ),
        1,
    )
    fuzz._amqp_connection([begin, attach])
    assert seen[-1] == (1, 1)

    def boom(self):
        raise RuntimeError("a bug")

    monkeypatch.setattr(connection.AMQPConnection, "_process", boom)
    with pytest.raises(fuzz._Internal, match="a bug"):
        fuzz._amqp_connection([])


def test_the_mqtt_session_target_connects_routes_telemetry_and_refuses_a_bad_password() -> None:
    import asyncio

    from enginehub.harness.iothub import codec
    from enginehub.harness.testing import fuzz

    publish = codec.encode(codec.Publish(f"devices/{fuzz._DEVICE}/messages/events/", b"x", 1, 7))
    hub, transport = asyncio.run(fuzz._mqtt_session_async(True, [publish]))
    connack, used = codec.decode(bytes(transport.out))
    assert connack == codec.Connack(0)
    assert codec.decode(bytes(transport.out[used:]))[0] == codec.Puback(7)
    assert len(hub.router.messages) == 1
    hub, transport = asyncio.run(fuzz._mqtt_session_async(False, [publish]))
    connack, _ = codec.decode(bytes(transport.out))
    assert isinstance(connack, codec.Connack) and connack.return_code in (4, 5)
    assert hub.router.messages == []
