"""Event Hubs providers: one :class:`EventHubsNamespace` whichever serves it.

- :class:`LocalEventHubs`: our emulator on its own thread in this process (fast; the default).
- :class:`EventHubsProcess`: our emulator as a child process with a data dir, which a test can ``kill()``
  (SIGKILL) and ``restart()`` on the same port and with the same keys (server mode, persistence suites).
- :class:`ContainerEventHubs`: Microsoft's Event Hubs emulator image (with its Azurite) via testcontainers,
  as an optional cross-check of ours. Needs Docker and ``ACCEPT_EULA``; not exercised in this repo's CI.
- :func:`external_namespace`: a real namespace from ``ENGINEHUB_EVENTHUBS_CONNECTION_STRING``; its hubs
  (created beforehand: no management plane here) from ``ENGINEHUB_EVENTHUB_NAMES`` (comma separated).

"A fresh hub per test": emulators are configured with a pool of hubs up front (ours has no runtime
hub creation, Microsoft's neither), and :meth:`EventHubsNamespace.take_hub` hands out an unused one.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from enginehub.harness.providers.base import ProviderUnavailable

LOG = logging.getLogger(__name__)

DEFAULT_HUB = "eh1"
DEFAULT_PARTITIONS = 4
DEFAULT_POOL = 24
POLICY = "RootManageSharedAccessKey"
EXTERNAL_CS_ENV = "ENGINEHUB_EVENTHUBS_CONNECTION_STRING"
EXTERNAL_HUBS_ENV = "ENGINEHUB_EVENTHUB_NAMES"


def pool_names(pool: int) -> tuple[str, ...]:
    """The default hub followed by ``pool`` spare hubs (``t000``, ``t001``, ...)."""
    return (DEFAULT_HUB, *(f"t{i:03d}" for i in range(pool)))


def config_json(
    hubs: tuple[str, ...], partitions: int, key: str, consumer_groups: tuple[str, ...] = ()
) -> dict:
    """A Microsoft-format ``Config.json`` (read unchanged by both emulators) plus our fixed SAS key."""
    entities = [
        {
            "Name": hub,
            "PartitionCount": str(partitions),
            "ConsumerGroups": [{"Name": cg} for cg in consumer_groups],
        }
        for hub in hubs
    ]
    return {
        "UserConfig": {
            "NamespaceConfig": [{"Type": "EventHub", "Name": "emulatorNs1", "Entities": entities}],
            "LoggingConfig": {"Type": "File"},
        },
        "Enginehub": {"Policies": {POLICY: key}},
    }


def fresh_key() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


@dataclass
class EventHubsNamespace:
    """Where an Event Hubs namespace is and which hubs it has; ``take_hub()`` hands out unused ones."""

    provider: str
    connection_string: str  # namespace level, no EntityPath
    hubs: tuple[str, ...]
    partitions: int | None
    _taken: set[str] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def default_hub(self) -> str:
        return self.hubs[0]

    def connection_string_for(self, hub: str) -> str:
        return f"{self.connection_string};EntityPath={hub}"

    def take_hub(self) -> str:
        """An event hub no other test of this session has used (the default hub is never handed out)."""
        with self._lock:
            for hub in self.hubs[1:]:
                if hub not in self._taken:
                    self._taken.add(hub)
                    return hub
        raise ProviderUnavailable(
            f"all {len(self.hubs) - 1} spare event hubs of this {self.provider} namespace are used: raise "
            f"--eventhubs-hub-pool (or list more hubs in {EXTERNAL_HUBS_ENV} for an external namespace)"
        )


# ------------------------------------------------------------------------------------------------ local
class LocalEventHubs:
    """Our emulator on a background thread of this process, on a free loopback port."""

    provider = "local"

    def __init__(self, partitions: int = DEFAULT_PARTITIONS, pool: int = DEFAULT_POOL) -> None:
        self.partitions = partitions
        self.hubs = pool_names(pool)
        self._thread = None
        self.emulator = None

    def start(self) -> EventHubsNamespace:
        from enginehub.harness.eventhubs.config import EmulatorConfig
        from enginehub.harness.eventhubs.server import EmulatorThread, EventHubsEmulator

        config = EmulatorConfig.simple(hubs=self.hubs, partitions=self.partitions)
        self._thread = EmulatorThread(EventHubsEmulator(config, port=0, http_port=None))
        self.emulator = self._thread.start()
        LOG.info("local Event Hubs emulator on port %s (%d hubs)", self.emulator.port, len(self.hubs))
        return EventHubsNamespace("local", self.emulator.connection_string, self.hubs, self.partitions)

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None


# ---------------------------------------------------------------------------------------------- process
# Fallback child for builds without ``harness eventhubs``: our emulator, SIGTERM/SIGINT -> clean stop; one
# JSON line on stdout once it accepts connections.
_CHILD = r"""
import asyncio, json, os, signal, sys
from enginehub.harness.eventhubs.config import load_config
from enginehub.harness.eventhubs.server import EventHubsEmulator

async def main():
    config_path, data_dir, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    emu = EventHubsEmulator(load_config(config_path), data_dir=data_dir or None, host=host, port=port,
                            http_port=None)
    await emu.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"eventhubs_connection_string": emu.connection_string, "port": emu.port,
                      "pid": os.getpid()}), flush=True)
    await stop.wait()
    await emu.stop()

asyncio.run(main())
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EventHubsProcess:
    """Our Event Hubs emulator as a child process: ``start()``, ``kill()`` (SIGKILL), ``terminate()``,
    ``restart()`` (same port, same data dir, same keys, so clients' connection strings stay valid)."""

    provider = "process"

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        hubs: tuple[str, ...] = (DEFAULT_HUB,),
        partitions: int = DEFAULT_PARTITIONS,
        consumer_groups: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        persistent: bool = True,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="enginehub-eh-")
        work = Path(self._tmp.name)
        self.data_dir = Path(data_dir) if data_dir else (work / "data" if persistent else None)
        self.hubs = hubs
        self.partitions = partitions
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.key = fresh_key()
        self.config_path = work / "Config.json"
        self.config_path.write_text(json.dumps(config_json(hubs, partitions, self.key, consumer_groups)))
        self.log_path = work / "emulator.log"
        self.connection_string = ""
        self.starts = 0
        self._proc: subprocess.Popen[str] | None = None
        self._log = None
        self._output: collections.deque[str] = collections.deque(maxlen=40)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def namespace(self) -> EventHubsNamespace:
        return EventHubsNamespace("process", self.connection_string, self.hubs, self.partitions)

    def command(self) -> list[str]:
        """``harness eventhubs`` (the server-mode CLI) when this build has it, else a minimal bootstrap."""
        import importlib.util

        if importlib.util.find_spec("enginehub.harness.eventhubs.cli") is not None:
            cmd = [sys.executable, "-m", "enginehub.harness", "eventhubs", "--config", str(self.config_path)]
            cmd += ["--host", self.host, "--port", str(self.port), "--http-port", "-1"]
            return cmd + (["--data-dir", str(self.data_dir)] if self.data_dir else [])
        return [sys.executable, "-c", _CHILD, str(self.config_path), str(self.data_dir or ""), self.host,
                str(self.port)]  # fmt: skip

    def start(self) -> EventHubsNamespace:
        if self.running:
            raise RuntimeError("the emulator process is already running")
        cmd = self.command()
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in _reap
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, text=True
        )
        self.starts += 1
        line = self._read_ready_line()
        info = json.loads(line)
        self.connection_string = info["eventhubs_connection_string"]
        LOG.info(
            "Event Hubs emulator process pid %d on port %d (start #%d)", self.pid, self.port, self.starts
        )
        return self.namespace()

    def _read_ready_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self._proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        if not box or not box[0].strip():
            state = "still running" if self.running else f"exited with {self._proc.poll()}"
            self.kill()
            raise ProviderUnavailable(
                f"the Event Hubs emulator process did not report ready within {self.startup_timeout:.0f} s "
                f"({state}); its log:\n{self.log_tail()}"
            )
        return box[0]

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed or closed."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        self._reap()

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit code."""
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    LOG.warning(
                        "emulator pid %d ignored SIGTERM for %.0f s; killing", self._proc.pid, timeout
                    )
            code = self._proc.poll()
        self._reap()
        return code

    def restart(self) -> EventHubsNamespace:
        """Start again on the same port with the same data dir and keys (after kill() or terminate())."""
        if self.running:
            raise RuntimeError("stop the emulator before restarting it")
        return self.start()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(15)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        self.terminate()
        with contextlib.suppress(OSError):
            self._tmp.cleanup()


# -------------------------------------------------------------------------------------------- container
MS_IMAGE = "mcr.microsoft.com/azure-messaging/eventhubs-emulator:latest"
MS_AZURITE_IMAGE = "mcr.microsoft.com/azure-storage/azurite:latest"
MS_KEY = "SAS_KEY_VALUE"  # the fixed key of Microsoft's emulator


class ContainerEventHubs:
    """Microsoft's Event Hubs emulator image with the Azurite it needs, via testcontainers.

    Optional cross-check of our emulator: the same tests run with ``--eventhubs-provider container``.
    Accepting Microsoft's EULA is required (``ENGINEHUB_ACCEPT_EULA=Y``). Not exercised where no Docker
    engine runs (this repository's CI), so treat failures here as reports, not regressions.
    """

    provider = "container"

    def __init__(self, partitions: int = DEFAULT_PARTITIONS, pool: int = DEFAULT_POOL) -> None:
        self.partitions = partitions
        self.hubs = pool_names(min(pool, 9))  # Microsoft's emulator allows at most 10 hubs
        self._stack = contextlib.ExitStack()

    def start(self) -> EventHubsNamespace:
        if os.environ.get("ENGINEHUB_ACCEPT_EULA", "").upper() != "Y":
            raise ProviderUnavailable(
                "Microsoft's Event Hubs emulator image needs its EULA accepted: set ENGINEHUB_ACCEPT_EULA=Y"
            )
        try:
            from testcontainers.core.container import DockerContainer
            from testcontainers.core.network import Network
            from testcontainers.core.wait_strategies import LogMessageWaitStrategy
        except ImportError as exc:
            raise ProviderUnavailable(f"testcontainers is not importable ({exc}): pip install testcontainers")
        tmp = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="enginehub-mseh-")))
        config = config_json(self.hubs, self.partitions, MS_KEY)
        del config["Enginehub"]
        (tmp / "Config.json").write_text(json.dumps(config))
        try:
            network = self._stack.enter_context(Network())
            azurite = DockerContainer(MS_AZURITE_IMAGE).with_network(network).with_network_aliases("azurite")
            self._stack.enter_context(azurite)
            emulator = (
                DockerContainer(MS_IMAGE)
                .with_network(network)
                .with_env("ACCEPT_EULA", "Y")
                .with_env("BLOB_SERVER", "azurite")
                .with_env("METADATA_SERVER", "azurite")
                .with_volume_mapping(str(tmp / "Config.json"), "/Eventhubs_Emulator/ConfigFiles/Config.json")
                .with_exposed_ports(5672)
                .waiting_for(
                    LogMessageWaitStrategy("Emulator Service is Successfully Up").with_startup_timeout(180)
                )
            )
            self._stack.enter_context(emulator)
            host, port = emulator.get_container_host_ip(), emulator.get_exposed_port(5672)
        except Exception as exc:
            self._stack.close()
            raise ProviderUnavailable(
                f"Microsoft's Event Hubs emulator container did not start: {exc}"
            ) from exc
        cs = f"Endpoint=sb://{host}:{port};SharedAccessKeyName={POLICY};SharedAccessKey={MS_KEY};UseDevelopmentEmulator=true"
        return EventHubsNamespace("container", cs, self.hubs, self.partitions)

    def stop(self) -> None:
        self._stack.close()


# --------------------------------------------------------------------------------------------- external
def external_namespace(env: dict[str, str] | None = None) -> EventHubsNamespace:
    """A real namespace: ``ENGINEHUB_EVENTHUBS_CONNECTION_STRING`` and ``ENGINEHUB_EVENTHUB_NAMES``."""
    env = dict(os.environ if env is None else env)
    cs = env.get(EXTERNAL_CS_ENV, "").strip().rstrip(";")
    if not cs:
        raise ProviderUnavailable(f"{EXTERNAL_CS_ENV} is not set")
    parts = [p for p in cs.split(";") if p and not p.lower().startswith("entitypath=")]
    entity = [p.split("=", 1)[1] for p in cs.split(";") if p.lower().startswith("entitypath=")]
    hubs = tuple(h.strip() for h in env.get(EXTERNAL_HUBS_ENV, "").split(",") if h.strip()) or tuple(entity)
    if not hubs:
        raise ProviderUnavailable(
            f"{EXTERNAL_HUBS_ENV} is not set: list the event hubs the tests may use (the first is the "
            "default hub, the others are handed out one per test)"
        )
    return EventHubsNamespace("external", ";".join(parts), hubs, None)


def open_eventhubs(provider: str, *, partitions: int = DEFAULT_PARTITIONS, pool: int = DEFAULT_POOL):
    """(namespace, stop) for the chosen provider; raises ProviderUnavailable with the reason."""
    if provider == "external":
        return external_namespace(), lambda: None
    if provider == "local":
        server = LocalEventHubs(partitions, pool)
    elif provider == "process":
        server = EventHubsProcess(hubs=pool_names(pool), partitions=partitions, persistent=False)
    elif provider == "container":
        server = ContainerEventHubs(partitions, pool)
    else:
        raise ValueError(f"unknown Event Hubs provider {provider!r}")
    namespace = server.start()
    return namespace, server.stop
