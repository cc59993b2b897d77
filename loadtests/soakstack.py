"""The chaos soak's hub process: the Event Hubs emulator (persistent data dir) and the IoT Hub emulator that
routes device telemetry into it, on one event loop, as ``harness up`` runs them, but restartable.

``harness up`` draws a fresh SAS key at every start, so a restart would break every client's connection
string. This child takes the key from ``ENGINEHUB_SOAK_EVENTHUBS_KEY`` (the environment, not argv) and
fixed ports, so after ``kill -9`` and a start on the same ``--data-dir`` the nodes, the producer and the
devices reach the same namespace again, with its partition logs, device registry (group key) and CA
certificate as they were. It prints one JSON line once everything listens, and runs until SIGTERM.

:class:`SoakStack` (the parent's side): ``start()``, ``kill()``, ``restart()``, ``stop()``,
``drop_devices()``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

KEY_ENV = "ENGINEHUB_SOAK_EVENTHUBS_KEY"


# ----------------------------------------------------------------------------------------------- child
async def serve(args: argparse.Namespace, key: str) -> int:
    from enginehub.harness.bridge import EventHubsRouter
    from enginehub.harness.eventhubs.config import DEFAULT_POLICY, EmulatorConfig
    from enginehub.harness.eventhubs.server import EventHubsEmulator
    from enginehub.harness.iothub.admin import AdminServer
    from enginehub.harness.iothub.server import IotHubEmulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    root = Path(args.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    config = EmulatorConfig.simple(
        hubs=[args.hub_name], partitions=args.partitions, policies={DEFAULT_POLICY: key}
    )
    eventhubs = EventHubsEmulator(
        config, data_dir=root / "eventhubs", host="127.0.0.1", port=args.eventhubs_port, http_port=None
    )
    iothub = IotHubEmulator(
        EventHubsRouter(eventhubs, args.hub_name),
        hostname=f"{args.hub_name}.azure-devices.net",
        host=args.host,
        data_dir=root / "iothub",
        service_port=None,
        amqp_port=None,  # no C2D in the soak
    )
    admin = AdminServer(iothub, port=args.admin_port)
    started: list[Any] = []
    try:
        for thing in (eventhubs, iothub, admin):
            await thing.start()
            started.append(thing)
        info = {
            "eventhub_connection_string": eventhubs.connection_string,
            "eventhub_name": args.hub_name,
            "iothub_hostname": iothub.hostname,
            "iothub_gateway_host": iothub.gateway_host,
            "device_group_key": iothub.registry.group_key,
            "ca_cert": str(iothub.ca_cert_path),
            "admin_url": admin.url,
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        await stop.wait()
        return 0
    finally:
        for thing in reversed(started):
            await thing.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m enginehub.loadtests.soakstack", description=__doc__)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--host", required=True, help="IoT Hub bind address (port 8883)")
    p.add_argument("--eventhubs-port", type=int, required=True)
    p.add_argument("--admin-port", type=int, required=True)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--hub-name", default="soak")
    args = p.parse_args(argv)
    key = os.environ.get(KEY_ENV, "")
    if not key:
        p.error(f"{KEY_ENV} must hold the namespace's SAS key")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(args, key))


# ---------------------------------------------------------------------------------------------- parent
class SoakStack:
    """The child above, on a free 127.x.y.z (IoT Hub) and fixed free ports, restartable."""

    def __init__(self, workdir: Path, partitions: int = 4, startup_timeout: float = 60.0) -> None:
        from enginehub.harness.eventhubs.config import random_key
        from enginehub.harness.iothub.testing import free_loopback_ip
        from enginehub.harness.providers.eventhubs import free_port

        self.workdir = workdir
        self.partitions = partitions
        self.startup_timeout = startup_timeout
        self.host = free_loopback_ip()
        self.eventhubs_port = free_port()
        self.admin_port = free_port()
        self.key = random_key()
        self.log_path = workdir / "stack.log"
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "enginehub.loadtests.soakstack", "--data-dir", str(self.workdir / "hub")]
        cmd += ["--host", self.host, "--eventhubs-port", str(self.eventhubs_port)]
        cmd += ["--admin-port", str(self.admin_port), "--partitions", str(self.partitions)]
        env = {**os.environ, KEY_ENV: self.key}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, env=env
            )
        self.starts += 1
        box: list[str] = []
        out = self.proc.stdout
        assert out is not None
        reader = threading.Thread(target=lambda: box.append(out.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        if not box or not box[0].startswith("{"):
            self.kill()
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError("the soak's hub process did not report ready:\n" + "\n".join(tail))
        info = json.loads(box[0])
        if self.info and info["eventhub_connection_string"] != self.info["eventhub_connection_string"]:
            raise RuntimeError("the hub came back with another connection string")
        self.info = info
        LOG.info("soak hub process pid %d (start #%d)", self.proc.pid, self.starts)
        return info

    def kill(self) -> None:
        """SIGKILL to the hub process's pid (a crash; acked events are on disk)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(15)
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self) -> dict[str, Any]:
        self.kill()
        return self.start()

    def stop(self, timeout: float = 20.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("hub process %d ignored SIGTERM for %.0f s; killing it", proc.pid, timeout)
        self.kill()

    def drop_devices(self) -> int:
        """``POST /disconnect-all`` on the IoT Hub's admin API: how many device connections it dropped."""
        req = urllib.request.Request(self.info["admin_url"] + "/disconnect-all", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback admin API
            return int(json.loads(resp.read())["disconnected"])


if __name__ == "__main__":
    sys.exit(main())
