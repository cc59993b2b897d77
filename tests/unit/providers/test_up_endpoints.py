"""``harness up``'s socket plan (pure): every service of one stack binds on ``--host``, and a bind failure
says which address, which service and the option that gets around it."""

from __future__ import annotations

import argparse
import errno

from enginehub.harness.up import Endpoint, add_stack_arguments, bind_error_message, plan_endpoints


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_stack_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_socket_of_the_stack_binds_on_the_given_host() -> None:
    plan = plan_endpoints(_args("--host", "127.0.0.3"))
    assert set(plan) == {"eventhubs", "iothub", "iothub_service", "admin", "azurite"}
    assert {e.host for e in plan.values()} == {"127.0.0.3"}
    assert plan["eventhubs"].port == 5672 and plan["iothub"].port == 8883
    assert plan["admin"].port == plan["azurite"].port == plan["iothub_service"].port == 0


def test_default_host_and_requested_ports_are_kept() -> None:
    plan = plan_endpoints(_args("--eventhubs-port", "0", "--admin-port", "9000"))
    assert {e.host for e in plan.values()} == {"127.0.0.1"}
    assert plan["eventhubs"].port == 0 and plan["admin"].port == 9000


def test_port_in_use_names_the_address_the_service_and_the_flag() -> None:
    plan = plan_endpoints(_args("--host", "127.0.0.3"))
    busy = OSError(errno.EADDRINUSE, "address already in use")
    msg = bind_error_message(plan["eventhubs"], busy)
    assert msg.startswith("127.0.0.3:5672 is already in use (Event Hubs AMQP)"), msg
    assert "--eventhubs-port 0" in msg and "--host" in msg
    # the MQTT port is fixed by the SDK: only another host helps
    msg = bind_error_message(plan["iothub"], busy)
    assert msg.startswith("127.0.0.3:8883 is already in use (IoT Hub MQTT"), msg
    assert "--host" in msg and "-port" not in msg


def test_other_bind_errors_are_named_too() -> None:
    ep = Endpoint("Azurite blob", "10.9.9.9", 0)
    msg = bind_error_message(ep, OSError(errno.EADDRNOTAVAIL, "cannot assign requested address"))
    assert (
        msg
        == "cannot bind a free port on 10.9.9.9 (Azurite blob): 10.9.9.9 is not an address of this machine"
    )
    msg = bind_error_message(
        Endpoint("IoT Hub admin API", "127.0.0.1", 80, "--admin-port"),
        PermissionError(errno.EACCES, "Permission denied"),
    )
    assert msg == "cannot bind 127.0.0.1:80 (IoT Hub admin API): Permission denied"
