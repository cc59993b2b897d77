"""The admin HTTP API (registry, twins, faults, disconnect-all, metrics), with bad input."""

from __future__ import annotations

import aiohttp
import pytest

from enginehub.harness.iothub.admin import AdminServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(hub):
    admin = await AdminServer(hub).start()
    async with aiohttp.ClientSession(admin.url) as session:
        yield session
    await admin.stop()


async def _json(resp):
    return resp.status, (await resp.json() if resp.content_type == "application/json" else None)


async def test_registry_crud(api, hub, raw):
    status, dev = await _json(await api.put("/devices/eng-1", json={}))
    assert status == 201
    assert dev["deviceId"] == "eng-1" and dev["status"] == "enabled"
    assert f"GatewayHostName={hub.gateway_host}" in dev["connectionString"]
    assert (await _json(await api.put("/devices/eng-1", json={})))[0] == 409
    status, listed = await _json(await api.get("/devices"))
    assert [d["deviceId"] for d in listed] == ["eng-1"]
    # disabling disconnects a connected device and refuses the next CONNECT
    d = raw("eng-1")
    assert await d.connect() == 0
    status, dev = await _json(await api.patch("/devices/eng-1", json={"status": "disabled"}))
    assert (status, dev["status"]) == (200, "disabled")
    await d.wait_closed_by_server(5)
    assert await raw("eng-1").connect() == 5
    assert (await api.delete("/devices/eng-1")).status == 204
    assert (await _json(await api.get("/devices/eng-1")))[0] == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "/devices/bad%20id", {}, 400),
        ("PUT", "/devices/x", {"primaryKey": "not base64!"}, 400),
        ("PUT", "/devices/x", {"colour": "red"}, 400),
        ("PATCH", "/devices/nobody", {"status": "disabled"}, 404),
        ("PATCH", "/faults", {"drop_pubacks": -1}, 400),
        ("PATCH", "/faults", {"unknown": 1}, 400),
        ("PATCH", "/faults", None, 400),
        ("PATCH", "/devices/nobody/twin/desired", {"a": 1}, 404),
    ],
)
async def test_bad_input_gives_clear_errors(api, method, path, body, status):
    resp = await api.request(method, path, json=body) if body is not None else await api.request(method, path)
    got, data = await _json(resp)
    assert got == status
    assert data["error"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/devices/x", {"colour": "red"}),
        ("POST", "/devices/x/methods/setRate", {"payload": 1, "timeoutSeconds": 5}),
        ("POST", "/devices/x/messages", {"body": "hi", "priority": "high"}),
    ],
)
async def test_unknown_fields_are_named_and_nothing_is_done(api, hub, method, path, body):
    status, data = await _json(await api.request(method, path, json=body))
    (unknown,) = set(body) - {"payload", "body"}
    assert status == 400 and f"unknown field(s) ['{unknown}']" in data["error"], data
    assert "x" not in hub.registry.devices


async def test_not_json_body(api):
    resp = await api.patch("/faults", data=b"{oops", headers={"Content-Type": "application/json"})
    status, data = await _json(resp)
    assert status == 400 and "not JSON" in data["error"]


async def test_faults_metrics_disconnect_all_and_info(api, hub, raw):
    status, faults = await _json(
        await api.patch("/faults", json={"throttle_per_s": 100, "refuse_connect": 3})
    )
    assert (faults["throttle_per_s"], faults["refuse_connect"]) == (100, 3)
    assert await raw("d1").connect() == 3
    status, faults = await _json(await api.delete("/faults"))
    assert faults["refuse_connect"] is None and faults["throttle_per_s"] is None
    devs = [raw(f"d{i}") for i in range(3)]
    for d in devs:
        assert await d.connect() == 0
    await devs[0].publish(b"x")
    assert (await _json(await api.post("/disconnect-all")))[1] == {"disconnected": 3}
    status, metrics = await _json(await api.get("/metrics"))
    assert metrics["messages"] == 1 and metrics["refused_connects"] == 1
    assert metrics["devices"]["d0"]["messages"] == 1
    status, info = await _json(await api.get("/info"))
    assert info["iothub_hostname"] == hub.hostname and info["device_group_key"] == hub.registry.group_key


async def test_twin_desired_push_via_api(api, hub, raw):
    from enginehub.harness.iothub import codec

    d = raw("eng-2")
    assert await d.connect() == 0
    assert await d.request(
        codec.Subscribe(1, (("$iothub/twin/PATCH/properties/desired/#", 1),))
    ) == codec.Suback(1, (1,))
    status, body = await _json(await api.patch("/devices/eng-2/twin/desired", json={"rate": 5}))
    assert (status, body) == (200, {"version": 2})
    pushed = await d.next_packet(5)
    assert pushed.topic == "$iothub/twin/PATCH/properties/desired/?$version=2"
    assert pushed.payload == b'{"rate":5,"$version":2}'
    status, twin = await _json(await api.get("/devices/eng-2/twin"))
    assert twin["desired"] == {"rate": 5, "$version": 2}
