"""enginehub's pytest plugin (entry point ``pytest11: enginehub``; also usable as ``-p enginehub...``).

Registers the project's markers, ``--run-slow``, the provider switches, and fixtures for the real services.
Which provider serves each service is chosen once per session (``enginehub.harness.providers.base``),
logged, and listed in the terminal summary (``enginehub providers: ...``); an unavailable service skips
the tests that need it with a reason that says how to enable it.

Options: ``--enginehub-target {auto,local,process,container,external}`` (env ``ENGINEHUB_TEST_TARGET``)
for all services; ``--eventhubs-provider``, ``--iothub-provider``, ``--azurite-provider``,
``--cratedb-provider`` (env ``ENGINEHUB_<SERVICE>_PROVIDER``) per service; ``--eventhubs-hub-pool N``.

Fixtures:

- ``eventhubs`` (session): an :class:`EventHubsNamespace` (``connection_string``, ``default_hub``,
  ``connection_string_for(hub)``); ``eventhub`` (function): a fresh hub of it, unused by other tests.
- ``eventhubs_process`` (function): factory of our emulator as a child process with a data dir, which
  the test can ``kill()`` (SIGKILL) and ``restart()`` on the same port.
- ``azurite`` (session): a blob service for checkpoint stores; ``checkpoint_container`` (function): a
  fresh, uniquely named container on it (deleted afterwards).
- ``cratedb`` (session): a :class:`CrateDBServer` (``CRATEDB_URL`` or a testcontainers container);
  ``cratedb_schema`` (function): a fresh schema, its tables dropped afterwards.
- ``sink_url`` (function, parametrised): a fresh SQLite file, and a fresh CrateDB schema (``cratedb``
  marker: skipped with the reason without CrateDB): the same test runs against both sinks.
- ``ingest_node`` (function): factory that starts ``ingest`` consumer processes; each can ``kill()``
  (SIGKILL) or ``terminate()`` (SIGTERM, graceful); all are stopped at teardown.
- ``iothub`` (session): an :class:`IotHubEndpoint` (hub + ``device_connection_string(id)`` factory and its
  built-in Event Hubs endpoint); ``fleet`` (function): factory running ``simulate`` for N units at R msg/s.
- ``iothub_service`` (session): an ``azure.iot.hub.IoTHubRegistryManager`` on the ``iothub`` fixture's hub,
  ready to use (device identities, twins, direct methods); skipped when azure-iot-hub is not installed.

Taxonomy (enforced): a test collected from a ``tests/integration`` folder must carry the ``integration``
marker, and a ``cratedb`` test must carry ``integration`` too; a test that does not fails with a message
saying so.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enginehub.harness.providers.base import CHOICES, SERVICES, Choice, ProviderUnavailable, choose
from enginehub.harness.testing.processes import FleetRun, IngestNode, start_fleet, start_ingest_node

LOG = logging.getLogger(__name__)

MARKERS = {
    "integration": "real processes / servers on loopback (slower)",
    "cratedb": "needs a real CrateDB server (testcontainers or CRATEDB_URL); skipped otherwise",
    "slow": "long-running; opt in with --run-slow",
}
_TAXONOMY_KEY = pytest.StashKey[str]()
_CHOICES_KEY = pytest.StashKey[dict[str, Choice]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("enginehub")
    group.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")
    group.addoption(
        "--enginehub-target",
        choices=CHOICES,
        default=None,
        help="provider for every service (default: $ENGINEHUB_TEST_TARGET, else auto)",
    )
    for service in SERVICES:
        group.addoption(
            f"--{service}-provider",
            choices=CHOICES,
            default=None,
            help=f"provider for {service} (default: $ENGINEHUB_{service.upper()}_PROVIDER, else the target)",
        )
    group.addoption(
        "--eventhubs-hub-pool",
        type=int,
        default=None,
        help="spare event hubs the session namespace declares for the `eventhub` fixture "
        "(default $ENGINEHUB_EVENTHUBS_HUB_POOL, else 24)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def provider_choices(config: pytest.Config) -> dict[str, Choice]:
    """The provider chosen for each service this session (computed once, then cached)."""
    if _CHOICES_KEY not in config.stash:
        target = config.getoption("--enginehub-target", None)
        choices = {}
        for service in SERVICES:
            option = config.getoption(f"--{service}-provider", None)
            choices[service] = choose(service, option=option, target=target)
            LOG.info("provider %s", choices[service].describe())
        config.stash[_CHOICES_KEY] = choices
    return config.stash[_CHOICES_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    # only the cheap part here: probing Docker costs up to 3 s, so it happens when a fixture asks
    target = config.getoption("--enginehub-target", None) or os.environ.get("ENGINEHUB_TEST_TARGET") or "auto"
    return [f"enginehub: target {target}; providers are chosen per service on first use and logged"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow")
    skip = pytest.mark.skip(reason="slow: opt in with --run-slow")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip)
        problem = _taxonomy_problem(item)
        if problem:
            item.stash[_TAXONOMY_KEY] = problem


def _taxonomy_problem(item: pytest.Item) -> str | None:
    names = {m.name for m in item.iter_markers()}
    parts = Path(str(item.path)).parts
    in_integration = any(a == "tests" and b == "integration" for a, b in zip(parts, parts[1:], strict=False))
    if in_integration and "integration" not in names:
        return "lives under tests/integration but lacks @pytest.mark.integration (add pytestmark)"
    if "cratedb" in names and "integration" not in names:
        return "is marked cratedb but not integration (a real CrateDB is an integration dependency)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    problem = item.stash.get(_TAXONOMY_KEY, None)
    if problem:
        pytest.fail(f"test taxonomy: {item.nodeid} {problem}", pytrace=False)


def _need(request: pytest.FixtureRequest, service: str) -> str:
    choice = provider_choices(request.config)[service]
    if choice.provider is None:
        pytest.skip(f"no {service}: {choice.reason}")
    return choice.provider


# ------------------------------------------------------------------------------------------- Event Hubs
@pytest.fixture(scope="session")
def eventhubs(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's Event Hubs namespace (provider per ``--eventhubs-provider``)."""
    from enginehub.harness.providers.eventhubs import open_eventhubs

    provider = _need(request, "eventhubs")
    pool = request.config.getoption("--eventhubs-hub-pool") or os.environ.get("ENGINEHUB_EVENTHUBS_HUB_POOL")
    try:
        namespace, stop = open_eventhubs(provider, pool=int(pool or 24))
    except ProviderUnavailable as exc:
        pytest.skip(f"eventhubs ({provider}): {exc}")
    LOG.info(
        "eventhubs fixture: %s namespace with hubs %s", provider, ", ".join(namespace.hubs[:3]) + ", ..."
    )
    try:
        yield namespace
    finally:
        stop()


@dataclass(frozen=True)
class EventHub:
    """One event hub for one test: its name and connection strings."""

    name: str
    namespace_connection_string: str
    partitions: int | None

    @property
    def connection_string(self) -> str:
        return f"{self.namespace_connection_string};EntityPath={self.name}"


@pytest.fixture
def eventhub(eventhubs: Any) -> EventHub:
    """A fresh event hub, used by no other test of this session."""
    try:
        name = eventhubs.take_hub()
    except ProviderUnavailable as exc:
        pytest.skip(str(exc))
    return EventHub(name, eventhubs.connection_string, eventhubs.partitions)


@pytest.fixture
def eventhubs_process(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: ``eventhubs_process(partitions=4, hubs=("eh1",))`` -> a started :class:`EventHubsProcess`
    (our emulator as a child process with a data dir: ``kill()``, ``terminate()``, ``restart()``)."""
    from enginehub.harness.providers.eventhubs import EventHubsProcess

    made: list[EventHubsProcess] = []

    def create(**kwargs: Any) -> EventHubsProcess:
        kwargs.setdefault("data_dir", tmp_path / f"eh-data-{len(made)}")
        server = EventHubsProcess(**kwargs)
        made.append(server)
        try:
            server.start()
        except ProviderUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        return server

    yield create
    for server in made:
        try:
            server.stop()
        except Exception:
            LOG.debug("could not stop the emulator process %s", server.pid, exc_info=True)


# ------------------------------------------------------------------------------------ blob (Azurite)
@dataclass(frozen=True)
class BlobService:
    """Where a blob service is: its connection string, and who provides it (local, container, external)."""

    connection_string: str
    provider: str

    def create_container(self, name: str) -> str:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            try:
                service.create_container(name)
            except ResourceExistsError:
                pass
        return name

    def delete_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.delete_container(name)

    def ownership(self, container: str) -> dict[str, str]:
        """``{partition id: owner id}`` from the SDK checkpoint store's ownership blobs ('' = released)."""
        from azure.storage.blob import BlobServiceClient

        owners: dict[str, str] = {}
        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            for blob in service.get_container_client(container).list_blobs(include=["metadata"]):
                if "/ownership/" in blob.name:
                    owners[blob.name.rsplit("/", 1)[1]] = (blob.metadata or {}).get("ownerid", "")
        return owners


@pytest.fixture(scope="session")
def azurite(request: pytest.FixtureRequest) -> Iterator[BlobService]:
    """A blob service for checkpoint stores: ``ENGINEHUB_STORAGE_CONNECTION_STRING``, else a local Azurite
    (npm), else the Azurite container; skipped with the reason when none is available."""
    from enginehub.harness.providers.blob import open_blob_service

    provider = _need(request, "azurite")
    try:
        cs, stop = open_blob_service(provider)
    except ProviderUnavailable as exc:
        pytest.skip(f"no blob service ({provider}): {exc} (or set ENGINEHUB_STORAGE_CONNECTION_STRING)")
    LOG.info("azurite fixture: %s blob service", provider)
    try:
        yield BlobService(cs, provider)
    finally:
        stop()


@pytest.fixture
def checkpoint_container(azurite: BlobService) -> Iterator[str]:
    """A fresh blob container for one test's checkpoints; deleted afterwards."""
    name = f"ckpt-{uuid.uuid4().hex[:20]}"
    azurite.create_container(name)
    yield name
    try:
        azurite.delete_container(name)
    except Exception:  # teardown must not mask the test's own result
        LOG.debug("could not delete container %s", name, exc_info=True)


# ------------------------------------------------------------------------------------------- CrateDB
@pytest.fixture(scope="session")
def cratedb(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A real CrateDB server for the session (``CRATEDB_URL``, else testcontainers); skip with the reason."""
    from enginehub.harness.providers.cratedb import open_cratedb

    provider = _need(request, "cratedb")
    try:
        server, stop = open_cratedb(provider)
    except ProviderUnavailable as exc:
        pytest.skip(f"no CrateDB ({provider}): {exc}")
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def cratedb_schema(cratedb: Any) -> Iterator[str]:
    """A fresh schema on the session's CrateDB; its tables are dropped afterwards."""
    schema = cratedb.new_schema()
    yield schema
    try:
        cratedb.drop_schema(schema)
    except Exception:
        LOG.debug("could not drop CrateDB schema %s", schema, exc_info=True)


@pytest.fixture(params=["sqlite", pytest.param("cratedb", marks=pytest.mark.cratedb)])
def sink_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An ``ingest --sink`` URL, twice: ``sqlite:///<tmp>/events.db``, then ``crate://...?schema=<fresh>``
    on the session's CrateDB (that variant carries the ``cratedb`` marker and skips with the reason when no
    CrateDB is available). A test taking ``sink_url`` runs the same assertions against both sinks."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    server = request.getfixturevalue("cratedb")
    return server.sink_url(request.getfixturevalue("cratedb_schema"))


# -------------------------------------------------------------------------------------------- ingest
@pytest.fixture
def ingest_node(tmp_path: Path) -> Iterator[Callable[..., IngestNode]]:
    """Factory: ``ingest_node(eventhub_connection_string=..., sink=..., eventhub=..., checkpoint_store=...,
    checkpoint_container=..., owner_id=..., load_balancing_interval=..., ownership_expiry=...)`` starts
    one ``ingest`` process and returns an :class:`IngestNode` (``kill()``, ``terminate()``, ``log_tail()``).
    Every node still running at teardown gets SIGTERM, then SIGKILL."""
    nodes: list[IngestNode] = []

    def create(name: str | None = None, **options: Any) -> IngestNode:
        node = start_ingest_node(tmp_path / "ingest", name=name or f"ingest-{len(nodes)}", **options)
        nodes.append(node)
        return node

    yield create
    for node in nodes:
        if node.running:
            try:
                node.terminate(timeout=20)
            except AssertionError:
                LOG.debug("ingest node %s needed SIGKILL", node.name)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    choices = config.stash.get(_CHOICES_KEY, None)
    if choices:
        terminalreporter.write_line(
            "enginehub providers: " + "; ".join(c.describe() for c in choices.values())
        )


# ------------------------------------------------------------------------------------ IoT Hub + fleet
@pytest.fixture(scope="session")
def iothub(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The session's IoT Hub: an :class:`IotHubEndpoint` (``device_connection_string(id)``, ``group_key``,
    ``gateway_host``, ``ca_cert``, and its built-in endpoint ``eventhub_connection_string``)."""
    from enginehub.harness.providers.iothub import open_iothub

    provider = _need(request, "iothub")
    try:
        endpoint, stop = open_iothub(provider)
    except ProviderUnavailable as exc:
        pytest.skip(f"iothub ({provider}): {exc}")
    try:
        yield endpoint
    finally:
        stop()


@pytest.fixture(scope="session")
def iothub_service(iothub: Any) -> Iterator[Any]:
    """``IoTHubRegistryManager`` for the session's hub (emulator: its service API, trusting its CA)."""
    try:
        import azure.iot.hub  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"iothub_service: azure-iot-hub is not installed ({exc}); pip install azure-iot-hub six")
    manager = iothub.registry_manager()
    yield manager
    if manager.amqp_svc_client is not None:  # close the C2D link now, not at garbage collection
        manager.amqp_svc_client.disconnect_sync()
        manager.amqp_svc_client = None


@pytest.fixture
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., FleetRun]]:
    """Factory: ``fleet(units=N, rate=R, duration=S, run_id=..., dataset="FD001", stop_at_end=False,
    iothub=<endpoint>)`` starts ``simulate --json`` against the hub (default: the ``iothub`` fixture) and
    returns a :class:`FleetRun`; ``run.result(timeout)`` waits and returns the JSON summary. Fleets still
    running at teardown get SIGTERM, then SIGKILL."""
    runs: list[FleetRun] = []

    def create(units: int, rate: float, *, iothub: Any = None, **options: Any) -> FleetRun:
        hub = iothub if iothub is not None else request.getfixturevalue("iothub")
        options.setdefault("cmapss_dir", os.environ.get("ENGINEHUB_CMAPSS_DIR") or None)
        run = start_fleet(
            tmp_path / "fleet",
            f"fleet-{len(runs)}",
            units=units,
            rate=rate,
            iothub_connection_string=hub.connection_string,
            group_key=hub.group_key,
            gateway_host=hub.gateway_host,
            ca_cert=hub.ca_cert,
            **options,
        )
        runs.append(run)
        return run

    yield create
    for run in runs:
        if run.running:
            try:
                run.terminate(timeout=20)
            except AssertionError:
                LOG.debug("fleet %s needed SIGKILL", run.name)
