"""AzuriteServer against the real npm azurite package."""

from __future__ import annotations

import socket

import pytest
from azure.storage.blob import BlobServiceClient

from enginehub.harness.providers.azurite import AzuriteServer, AzuriteUnavailable, find_azurite_blob

pytestmark = pytest.mark.integration


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@pytest.fixture
def azurite_exe() -> str:
    exe = find_azurite_blob()
    if exe is None:
        pytest.skip("azurite-blob not installed: run `make azurite`")
    return exe


def test_start_roundtrip_blob_and_stop(azurite_exe: str) -> None:
    server = AzuriteServer(executable=azurite_exe).start()
    try:
        assert server.running and server.blob_port and server.blob_port > 0
        container = server.create_container("checkpoints")
        assert server.create_container("checkpoints") == container  # idempotent
        with BlobServiceClient.from_connection_string(server.connection_string) as svc:
            blob = svc.get_blob_client(container, "a/b.txt")
            blob.upload_blob(b"hello", overwrite=True)
            assert blob.download_blob().readall() == b"hello"
        port = server.blob_port
    finally:
        server.stop()
    assert not server.running
    assert not _port_open("127.0.0.1", port)


def test_two_instances_get_distinct_free_ports(azurite_exe: str) -> None:
    with AzuriteServer(executable=azurite_exe) as a, AzuriteServer(executable=azurite_exe) as b:
        assert a.blob_port != b.blob_port


def test_missing_executable_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(AzuriteUnavailable, match="cannot run .*nope"):
        AzuriteServer(executable=str(tmp_path / "nope"), startup_timeout=5).start()


def test_process_that_exits_early_reports_its_output(tmp_path) -> None:
    fake = tmp_path / "azurite-blob"
    fake.write_text("#!/bin/sh\necho 'boom: bad option'\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(AzuriteUnavailable, match="boom: bad option"):
        AzuriteServer(executable=str(fake), startup_timeout=5).start()


def test_plugin_fixture_gives_a_fresh_container(azurite, checkpoint_container: str) -> None:
    with BlobServiceClient.from_connection_string(azurite.connection_string) as svc:
        names = [c.name for c in svc.list_containers()]
        assert checkpoint_container in names
        assert not list(svc.get_container_client(checkpoint_container).list_blobs())
