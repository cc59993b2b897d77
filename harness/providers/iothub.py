"""IoT Hub providers: one :class:`IotHubEndpoint` (device side + its built-in Event Hubs endpoint).

- ``local``: ``enginehub.harness.bridge.LocalIotHub`` (IoT Hub emulator + Event Hubs emulator on one event
  loop) on a background thread of this process, bound to a free 127.x.y.z:8883 (the SDK's fixed port).
- ``process``: ``harness up --json --no-azurite`` as a child process (the contract outside scripts use).
- ``external``: a real hub: ``ENGINEHUB_IOTHUB_CONNECTION_STRING`` (service),
  ``ENGINEHUB_DEVICE_GROUP_KEY`` (devices' keys derive from it, as with a DPS group enrollment) and
  ``ENGINEHUB_IOTHUB_EVENTHUB_CONNECTION_STRING`` (the built-in endpoint, with ``EntityPath``).

Device connection strings come from :meth:`IotHubEndpoint.device_connection_string` (group-key derivation),
so any number of unique device ids can connect without registry calls.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginehub.harness.providers.base import ProviderUnavailable
from enginehub.harness.runtime import LoopThread

LOG = logging.getLogger(__name__)

EXTERNAL_ENV = (
    "ENGINEHUB_IOTHUB_CONNECTION_STRING",
    "ENGINEHUB_DEVICE_GROUP_KEY",
    "ENGINEHUB_IOTHUB_EVENTHUB_CONNECTION_STRING",
)


@dataclass(frozen=True)
class IotHubEndpoint:
    """Everything a device fleet and a consumer need to use one IoT Hub."""

    provider: str
    hostname: str
    connection_string: str  # service side (iothubowner)
    group_key: str
    eventhub_connection_string: str  # built-in endpoint, with EntityPath
    eventhub_name: str
    gateway_host: str | None = None  # the address devices dial (emulator); None for a real hub
    ca_cert: str | None = None  # PEM file devices trust (emulator); None for a real hub
    #: the owner connection string azure-iot-hub dials (emulator: HostName=<gateway>:<service port>);
    #: a real hub's is ``connection_string`` itself
    service_connection_string: str | None = None

    @classmethod
    def of_local(cls, stack: Any) -> IotHubEndpoint:
        """The endpoint of a running in-process ``harness.bridge.LocalIotHub`` and its built-in endpoint."""
        hub = stack.iothub
        return cls(
            provider="local",
            hostname=hub.hostname,
            connection_string=hub.connection_string,
            group_key=hub.registry.group_key,
            eventhub_connection_string=stack.iothub_eventhub_connection_string,
            eventhub_name=stack.eventhub_name,
            gateway_host=hub.gateway_host,
            ca_cert=str(hub.ca_cert_path),
            service_connection_string=hub.service_connection_string,
        )

    def registry_manager(self) -> Any:
        """An ``azure.iot.hub.IoTHubRegistryManager`` for this hub (emulator: see :func:`trust_ca`)."""
        from azure.iot.hub import IoTHubRegistryManager

        if self.ca_cert is not None:
            trust_ca(self.ca_cert)
        return IoTHubRegistryManager.from_connection_string(
            self.service_connection_string or self.connection_string
        )

    def device_connection_string(self, device_id: str) -> str:
        """A device connection string whose key derives from the group key (with GatewayHostName if any)."""
        from enginehub.harness.iothub.auth import derive_device_key, device_connection_string

        return device_connection_string(
            self.hostname, device_id, derive_device_key(self.group_key, device_id), self.gateway_host
        )

    def new_device_id(self, prefix: str = "dev") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"


def trust_ca(ca_cert: str) -> str:
    """Make ``requests`` (so azure-iot-hub) in this process trust ``ca_cert`` as well as what it trusted
    before: ``REQUESTS_CA_BUNDLE`` is pointed at a bundle = the previous one (``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE`` or certifi's) + the emulator's CA, written next to ``ca_cert``. Returns its path.
    OpenSSL's default file (``SSL_CERT_FILE``, which uamqp, so ``send_c2d_message``, reads) gets the CA
    too (:func:`trust_ca_openssl`)."""
    trust_ca_openssl(ca_cert)
    current = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return _extend_bundle("REQUESTS_CA_BUNDLE", current, ca_cert, "requests-ca-bundle.pem")


def trust_ca_openssl(ca_cert: str) -> str:
    """Point ``SSL_CERT_FILE`` at a bundle = the file it named before (or OpenSSL's default file, or
    certifi's) + ``ca_cert``, written next to ``ca_cert``: uamqp (C2D sends) trusts certifi's bundle and
    OpenSSL's default verify paths only, and OpenSSL reads ``SSL_CERT_FILE`` when a connection is made.
    Python's own default contexts read it too, so nothing they trusted before is lost. Returns its path."""
    import ssl

    current = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile
    if current and not Path(current).is_file():
        current = None
    return _extend_bundle("SSL_CERT_FILE", current, ca_cert, "openssl-ca-bundle.pem")


def _extend_bundle(var: str, current: str | None, ca_cert: str, name: str) -> str:
    """Set ``var`` to a bundle ``name`` next to ``ca_cert`` = ``current`` (certifi's when None) + the CA;
    ``current`` itself when it already holds the CA. Returns the path ``var`` now names."""
    if not current:
        import certifi

        current = certifi.where()
    ca = Path(ca_cert).read_text()
    try:
        base = Path(current).read_text()
    except OSError as exc:
        LOG.warning("CA bundle %s unreadable (%s): %s trusts the emulator's CA only", current, exc, var)
        base = ""
    if ca.strip() in base:
        return current
    bundle = Path(ca_cert).with_name(name)
    bundle.write_text(base.rstrip("\n") + "\n" + ca)
    os.environ[var] = str(bundle)
    LOG.info("%s=%s (%s + the emulator's CA)", var, bundle, current)
    return str(bundle)


def _local(partitions: int) -> tuple[IotHubEndpoint, Callable[[], None]]:
    from enginehub.harness.bridge import LocalIotHub
    from enginehub.harness.iothub.testing import free_loopback_ip

    host = free_loopback_ip()
    runner = LoopThread(lambda: LocalIotHub(host=host, partitions=partitions), name="iothub-local")
    try:
        stack = runner.start()
    except Exception as exc:
        raise ProviderUnavailable(f"the service did not start: {exc!r}") from exc
    endpoint = IotHubEndpoint.of_local(stack)
    LOG.info(
        "local IoT Hub %s on %s:8883, built-in endpoint %s", endpoint.hostname, host, stack.eventhub_name
    )
    return endpoint, runner.stop


def from_up_json(info: dict[str, Any], provider: str = "process") -> IotHubEndpoint:
    """The endpoint described by one ``harness up --json`` line (keys per docs/architecture.md)."""
    return IotHubEndpoint(
        provider=provider,
        hostname=info["iothub_hostname"],
        connection_string=info["iothub_connection_string"],
        group_key=info["device_group_key"],
        eventhub_connection_string=info["iothub_eventhub_connection_string"],
        eventhub_name=info["eventhub_name"],
        gateway_host=info["iothub_gateway_host"],
        ca_cert=info["ca_cert"],
        service_connection_string=info.get("iothub_service_connection_string"),
    )


def harness_up_available() -> str | None:
    """None when ``harness up`` is in this build, else why not."""
    import importlib.util

    if importlib.util.find_spec("enginehub.harness.up") is None:
        return "`harness up` is not in this build (enginehub.harness.up missing)"
    return None


class HarnessUp:
    """``harness up --json`` as a child process: ``start()`` returns its JSON line; ``stop()`` = SIGTERM."""

    def __init__(self, *args: str, startup_timeout: float = 60.0) -> None:
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="enginehub-up-")
        self.log_path = Path(self._tmp.name) / "harness-up.log"
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "enginehub.harness", "up", "--json", *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True
            )
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.startup_timeout)
        if not box or not box[0].strip():
            code = self.proc.poll()
            self.stop()
            raise ProviderUnavailable(
                f"`harness up --json` printed no line within {self.startup_timeout:.0f} s (exit {code}); "
                f"stderr:\n{self.log_tail()}"
            )
        self.info = json.loads(box[0])
        return self.info

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"

    def stop(self, timeout: float = 30.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("harness up (pid %d) ignored SIGTERM for %.0f s; killing it", proc.pid, timeout)
                proc.kill()
                proc.wait(15)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode


def _process(partitions: int) -> tuple[IotHubEndpoint, Callable[[], None]]:
    missing = harness_up_available()
    if missing:
        raise ProviderUnavailable(missing + ": use --iothub-provider local")
    from enginehub.harness.iothub.testing import free_loopback_ip

    up = HarnessUp(
        "--no-azurite", "--host", free_loopback_ip(), "--partitions", str(partitions), "--eventhubs-port", "0"
    )
    info = up.start()
    return from_up_json(info), up.stop


def _external(env: dict[str, str]) -> tuple[IotHubEndpoint, Callable[[], None]]:
    missing = [n for n in EXTERNAL_ENV if not env.get(n)]
    if missing:
        raise ProviderUnavailable(f"set {', '.join(missing)} for an external IoT Hub")
    cs = env["ENGINEHUB_IOTHUB_CONNECTION_STRING"]
    fields = dict(p.split("=", 1) for p in cs.split(";") if "=" in p)
    eh_cs = env["ENGINEHUB_IOTHUB_EVENTHUB_CONNECTION_STRING"]
    eh_fields = dict(p.split("=", 1) for p in eh_cs.split(";") if "=" in p)
    if "EntityPath" not in eh_fields:
        raise ProviderUnavailable(
            "ENGINEHUB_IOTHUB_EVENTHUB_CONNECTION_STRING needs EntityPath=<built-in hub>"
        )
    endpoint = IotHubEndpoint(
        "external", fields["HostName"], cs, env["ENGINEHUB_DEVICE_GROUP_KEY"], eh_cs, eh_fields["EntityPath"]
    )
    return endpoint, lambda: None


def open_iothub(provider: str, *, partitions: int = 4) -> tuple[IotHubEndpoint, Callable[[], None]]:
    """(endpoint, stop) for the chosen provider; raises ProviderUnavailable with the reason."""
    if provider == "local":
        return _local(partitions)
    if provider == "process":
        return _process(partitions)
    if provider == "external":
        return _external(dict(os.environ))
    raise ValueError(f"unknown IoT Hub provider {provider!r}")
