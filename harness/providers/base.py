"""Provider selection: which implementation serves each service, chosen explicitly and logged.

Every service (``eventhubs``, ``iothub``, ``azurite``, ``cratedb``) has interchangeable providers:

- ``local``: our emulator in this process (Event Hubs, IoT Hub), Azurite from the npm package;
- ``process``: our emulator as a child process (server mode; the Event Hubs one can be killed and restarted);
- ``container``: testcontainers where a Docker engine answers (CrateDB, Azurite, Microsoft's Event Hubs
  emulator image as a cross-check);
- ``external``: connection strings / URLs from the environment (a real Azure namespace, ``CRATEDB_URL``).

One switch picks the target for all services (``--enginehub-target`` / ``ENGINEHUB_TEST_TARGET``); a
per-service option (``--eventhubs-provider`` ... / ``ENGINEHUB_EVENTHUBS_PROVIDER`` ...) overrides it.
``auto`` (the default) uses the external service when its variable is set, else the first provider of the
service's default chain whose dependency is present. :func:`choose` is pure: it gets the environment and
the probes as arguments, so the unit tests run it without Docker, Node or sockets.

When nothing can serve a service, :func:`choose` returns a :class:`Choice` with ``provider=None`` and a
``reason`` that says how to enable it; the pytest plugin turns that into a skip, never a silent pass.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

SERVICES = ("eventhubs", "iothub", "azurite", "cratedb")
PROVIDERS = ("local", "process", "container", "external")
CHOICES = ("auto", *PROVIDERS)
TARGET_ENV = "ENGINEHUB_TEST_TARGET"

# The variables that name an external service. Set one and ``auto`` uses it.
EXTERNAL_ENV: dict[str, tuple[str, ...]] = {
    "eventhubs": ("ENGINEHUB_EVENTHUBS_CONNECTION_STRING",),
    "iothub": ("ENGINEHUB_IOTHUB_CONNECTION_STRING",),
    "azurite": ("ENGINEHUB_STORAGE_CONNECTION_STRING",),
    "cratedb": ("CRATEDB_URL",),
}
# What each service can run on, in the order ``auto`` tries them (external first when configured).
SUPPORTED: dict[str, tuple[str, ...]] = {
    "eventhubs": ("local", "process", "container", "external"),
    "iothub": ("local", "process", "external"),
    "azurite": ("local", "container", "external"),
    "cratedb": ("container", "external"),
}
AUTO_CHAIN: dict[str, tuple[str, ...]] = {
    "eventhubs": ("local",),  # the container cross-check is opt-in: it is slow and needs Microsoft's EULA
    "iothub": ("local",),
    "azurite": ("local", "container"),
    "cratedb": ("container",),
}


def provider_env(service: str) -> str:
    """The variable that picks ``service``'s provider, e.g. ``ENGINEHUB_EVENTHUBS_PROVIDER``."""
    return f"ENGINEHUB_{service.upper()}_PROVIDER"


def provider_option(service: str) -> str:
    """The pytest option that picks ``service``'s provider, e.g. ``--eventhubs-provider``."""
    return f"--{service}-provider"


@dataclass(frozen=True)
class Probes:
    """What is installed here. Each probe answers None when present, else a sentence on how to get it."""

    docker: Callable[[], str | None]
    node_azurite: Callable[[], str | None]

    @classmethod
    def real(cls) -> Probes:
        return cls(docker=docker_missing, node_azurite=azurite_missing)


@dataclass(frozen=True)
class Choice:
    """The outcome of selection for one service: a provider, or None with the reason and how to enable."""

    service: str
    provider: str | None
    reason: str

    @property
    def available(self) -> bool:
        return self.provider is not None

    def describe(self) -> str:
        return f"{self.service}: {self.provider or 'unavailable'} ({self.reason})"


def choose(
    service: str,
    *,
    option: str | None = None,
    target: str | None = None,
    env: Mapping[str, str] | None = None,
    probes: Probes | None = None,
) -> Choice:
    """Pick the provider of ``service``.

    Precedence: the per-service pytest option, the per-service variable, the global target (option, then
    ``ENGINEHUB_TEST_TARGET``), then ``auto``. A global target the service does not support falls back to
    ``auto`` for that service (``--enginehub-target process`` still runs CrateDB in a container); an
    explicit per-service request that cannot be served is unavailable, with the reason.
    """
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    env = os.environ if env is None else env
    probes = probes or Probes.real()
    requested, source = _requested(service, option, target, env)
    if requested not in CHOICES:
        raise ValueError(f"{source}={requested!r}: expected one of {', '.join(CHOICES)}")
    if requested != "auto" and requested not in SUPPORTED[service]:
        if source.startswith(("--enginehub-target", TARGET_ENV)):
            requested, source = "auto", f"{source}={requested} does not apply to {service}"
        else:
            return Choice(
                service,
                None,
                f"{source}={requested}, but {service} supports only {', '.join(SUPPORTED[service])}",
            )
    if requested == "auto":
        return _auto(service, source, env, probes)
    missing = _missing(service, requested, env, probes)
    if missing:
        return Choice(service, None, f"{source}={requested}, but {missing}")
    return Choice(service, requested, f"{source}={requested}")


def _requested(
    service: str, option: str | None, target: str | None, env: Mapping[str, str]
) -> tuple[str, str]:
    if option and option != "auto":
        return option, provider_option(service)
    if env.get(provider_env(service)):
        return env[provider_env(service)].strip().lower(), provider_env(service)
    if target and target != "auto":
        return target, "--enginehub-target"
    if env.get(TARGET_ENV):
        return env[TARGET_ENV].strip().lower(), TARGET_ENV
    return "auto", "auto"


def _auto(service: str, source: str, env: Mapping[str, str], probes: Probes) -> Choice:
    names = [n for n in EXTERNAL_ENV[service] if env.get(n)]
    if names:
        return Choice(service, "external", f"{source}: {names[0]} is set")
    problems = []
    for provider in AUTO_CHAIN[service]:
        missing = _missing(service, provider, env, probes)
        if missing is None:
            return Choice(service, provider, f"{source}: default {provider}")
        problems.append(f"{provider}: {missing}")
    how = f"set {' or '.join(EXTERNAL_ENV[service])}"
    return Choice(service, None, f"{source}: no provider ({'; '.join(problems)}); or {how}")


def _missing(service: str, provider: str, env: Mapping[str, str], probes: Probes) -> str | None:
    """None when ``provider`` can serve ``service`` here, else what is missing and how to get it."""
    if provider == "external":
        if not any(env.get(n) for n in EXTERNAL_ENV[service]):
            return f"{' or '.join(EXTERNAL_ENV[service])} is not set"
        return None
    if provider == "container":
        return probes.docker()
    if provider == "local" and service == "azurite":
        return probes.node_azurite()
    return None  # our emulators: always importable


# ---------------------------------------------------------------------------------------------- probes
def docker_missing() -> str | None:
    """None when a Docker engine answers a ping, else why not (bounded: 3 s)."""
    try:
        import docker  # the Docker SDK testcontainers uses
    except ImportError:
        return "the docker package is not installed (pip install testcontainers)"
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return "no Docker engine (no DOCKER_HOST, no /var/run/docker.sock): start Docker"
    try:
        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"the Docker engine does not answer ({type(exc).__name__}): start Docker"
    return None


def azurite_missing() -> str | None:
    """None when the npm Azurite can start here, else how to install it."""
    from enginehub.harness.providers.azurite import find_azurite_blob

    if find_azurite_blob() is None:
        return "azurite-blob not found: run `make azurite` (npm install azurite) or set ENGINEHUB_AZURITE"
    if shutil.which("node") is None:
        return "Node.js is not installed (apt-get install nodejs npm)"
    return None


class ProviderUnavailable(RuntimeError):
    """A chosen provider could not start; the message says what was observed and how to fix it."""
