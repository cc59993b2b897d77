"""simulate's bad inputs: one clear error line, exit 2, no traceback (nothing is started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enginehub.simulator import app
from enginehub.simulator.cli import build_parser, main, options_from_args

GROUP = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
CS = f"HostName=hub.local;SharedAccessKeyName=iothubowner;SharedAccessKey={GROUP}"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINEHUB_IOTHUB_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("ENGINEHUB_DEVICE_GROUP_KEY", raising=False)


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--units", "0"], "--units: must be >= 1"),
        (["--rate", "fast"], "--rate: expected a number"),
        (["--rate", "-5"], "--rate: must be a finite number > 0"),
        (["--duration", "0"], "--duration: must be a finite number > 0"),
        (["--payload", "xml"], "invalid choice"),
        (["--duplicate-rate", "1.5"], "--duplicate-rate: must be within 0..1"),
        (["--disconnect-every", "-1"], "--disconnect-every: must be >= 0"),
        (["--iothub-connection-string", CS], "needs --group-key"),
        (["--gateway-host", "127.0.0.5"], "--gateway-host needs --iothub-connection-string"),
        (["--iothub-connection-string", "garbage", "--group-key", GROUP], "expected Key=Value"),
        (["--iothub-connection-string", "HostName=h;Foo=1", "--group-key", GROUP], "unknown key 'Foo'"),
        (["--iothub-connection-string", CS, "--group-key", "not base64!"], "--group-key is not valid base64"),
        (
            ["--iothub-connection-string", CS, "--group-key", GROUP, "--ca-cert", "/nonexistent/ca.pem"],
            "--ca-cert /nonexistent/ca.pem: cannot read it",
        ),
        (["--devices-file", "/nonexistent/devices.txt"], "cannot read devices file"),
        (
            ["--dataset", "FD009", "--iothub-connection-string", CS, "--group-key", GROUP],
            "not FD001..FD004, 'synthetic', or an existing C-MAPSS file",
        ),
        (["--devices-file", "x", "--iothub-connection-string", CS, "--group-key", GROUP], "not both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, err = _run(
        capsys, [*argv, "--no-progress", "--duration", "1"] if "--duration" not in argv else argv
    )
    assert code == app.EXIT_USAGE, err
    lines = [line for line in err.splitlines() if line.startswith("simulate: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_bad_file_content_names_the_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "devices.txt"
    f.write_text("# ok\nHostName=h;DeviceId=engine-0001\n")
    code, err = _run(capsys, ["--devices-file", str(f), "--no-progress"])
    assert code == app.EXIT_USAGE and f"{f}:2: missing SharedAccessKey" in err and "Traceback" not in err
    ca = tmp_path / "ca.pem"
    ca.write_text("hello")
    code, err = _run(capsys, ["--iothub-connection-string", CS, "--group-key", GROUP, "--ca-cert", str(ca)])
    assert code == app.EXIT_USAGE and "not a PEM certificate" in err


def test_bad_input_with_json_still_prints_the_summary_line_last(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--dataset", "/nonexistent.txt", "--iothub-connection-string", CS, "--group-key", GROUP,
                 "--json", "--units", "3", "--rate", "7"])  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert code == app.EXIT_USAGE
    summary = json.loads(out[-1])
    assert summary["units"] == 3 and summary["rate_target"] == 7.0 and summary["sent"] == 0


def test_options_defaults_and_rate_per_unit() -> None:
    opts = options_from_args(build_parser().parse_args(["--units", "4"]))
    assert opts.rate == 4.0 and opts.payload == "seed" and opts.workers == 1 and not opts.faults.any
    assert opts.iothub_connection_string is None  # self-hosted


def test_capacity_warnings() -> None:
    assert app.capacity_warnings(500, 1, 2) == []
    w = app.capacity_warnings(2000, 1, 2)
    assert any("--workers 3" in x for x in w) and any("has 2" in x for x in w)
    assert app.capacity_warnings(1500, 2, 2) == []


def test_workers_are_raised_to_keep_each_process_under_the_client_limit() -> None:
    assert app.workers_needed(100, 1) == 1
    assert app.workers_needed(301, 1) == 2
    assert app.workers_needed(1000, 2) == 4
    assert app.workers_needed(1000, 6) == 6
