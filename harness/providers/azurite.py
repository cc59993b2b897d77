"""Azurite (the npm ``azurite`` package) as a local blob service for checkpoint stores.

``AzuriteServer`` starts ``azurite-blob`` on a loopback port (0 = let Azurite pick a free one; the port is
read back from its start-up line), in memory by default, and stops it by PID. It runs in its own session
(signals to its owner's process group are for the owner, which stops it) and dies with its owner. Used
by ``harness up``, the pytest plugin and the load tests.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from enginehub.harness.procutil import pdeathsig_preexec

LOG = logging.getLogger(__name__)

ACCOUNT_NAME = "devstoreaccount1"
# Azurite's well-known development account key (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTEN_RE = re.compile(r"Blob service successfully listens on https?://([^:/\s]+):(\d+)")


class AzuriteUnavailable(RuntimeError):
    """Azurite cannot be started here (no Node, package not installed, or it failed to start)."""


def find_azurite_blob() -> str | None:
    """Locate the ``azurite-blob`` launcher.

    Order: ``$ENGINEHUB_AZURITE`` (path to azurite-blob), ``node_modules/.bin`` in the current directory or
    any parent, the source checkout this package lives in, then ``PATH``.
    """
    env = os.environ.get("ENGINEHUB_AZURITE")
    if env:
        return env if os.access(env, os.X_OK) else None
    candidates = [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]]
    for base in candidates:
        exe = base / "node_modules" / ".bin" / "azurite-blob"
        if os.access(exe, os.X_OK):
            return str(exe)
    return shutil.which("azurite-blob")


class AzuriteServer:
    """A local Azurite blob service: ``start()`` returns once it accepts connections; ``stop()`` ends it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        location: str | os.PathLike[str] | None = None,
        executable: str | None = None,
        startup_timeout: float = 30.0,
        die_with_parent: bool = True,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.location = Path(location) if location else None
        self.executable = executable
        self.startup_timeout = startup_timeout
        #: Azurite gets SIGTERM when the thread that called start() exits (Linux ``PR_SET_PDEATHSIG``): no
        #: Azurite left running after a ``kill -9`` of its owner; call start() from a long-lived thread
        self.die_with_parent = die_with_parent
        self.blob_port: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=50)
        self._reader: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> AzuriteServer:
        if self._proc is not None:
            raise RuntimeError("AzuriteServer already started")
        exe = self.executable or find_azurite_blob()
        if not exe:
            raise AzuriteUnavailable(
                "azurite-blob not found: run `make azurite` (npm install) "
                "or set ENGINEHUB_AZURITE to its path"
            )
        if shutil.which("node") is None:
            raise AzuriteUnavailable(
                "Node.js is not installed (azurite needs it): apt-get install nodejs npm"
            )
        cmd = [exe, "--blobHost", self.host, "--blobPort", str(self.requested_port)]
        cmd += ["--skipApiVersionCheck", "--disableTelemetry", "--loose"]
        if self.location:
            self.location.mkdir(parents=True, exist_ok=True)
            cmd += ["--location", str(self.location)]
        else:
            cmd += ["--inMemoryPersistence"]
        LOG.info("starting Azurite: %s", " ".join(cmd))
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec(signal.SIGTERM) if self.die_with_parent else None,
            )
        except OSError as exc:
            raise AzuriteUnavailable(f"cannot run {exe}: {exc}") from exc
        ready = threading.Event()
        self._reader = threading.Thread(
            target=self._read_output, args=(ready,), name="azurite-output", daemon=True
        )
        self._reader.start()
        if not ready.wait(self.startup_timeout) or self.blob_port is None:
            tail = "\n".join(self._output)
            self.stop()
            raise AzuriteUnavailable(
                f"Azurite did not start within {self.startup_timeout:.0f} s; output:\n{tail}"
            )
        LOG.info("Azurite blob service on %s:%d (pid %d)", self.host, self.blob_port, self._proc.pid)
        return self

    def _read_output(self, ready: threading.Event) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip()
            self._output.append(line)
            match = _LISTEN_RE.search(line)
            if match and not ready.is_set():
                self.blob_port = int(match.group(2))
                ready.set()
        ready.set()  # process ended: unblock start(), which then reports the output

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("Azurite (pid %d) ignored SIGTERM for %.0f s; killing it", proc.pid, timeout)
                proc.kill()
                proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def output_tail(self) -> str:
        return "\n".join(self._output)

    def __enter__(self) -> AzuriteServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------------------------
    @property
    def blob_endpoint(self) -> str:
        if self.blob_port is None:
            raise RuntimeError("AzuriteServer is not started")
        return f"http://{self.host}:{self.blob_port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def create_container(self, name: str, timeout: float = 10.0) -> str:
        """Create a blob container (idempotent) and return its name."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        deadline = time.monotonic() + timeout
        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            while True:
                try:
                    service.create_container(name)
                    return name
                except ResourceExistsError:
                    return name
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
