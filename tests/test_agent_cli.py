"""The softadastra-agent command line: usage errors, listings and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import DEFAULT_FAIL_UNDER, main
from agent.scenarios import SCENARIOS
from tests.agent_support import free_port, run_agent_cli, sample_service

pytestmark = pytest.mark.timeout(120)

BODY = ["--body", '{"title": "{{marker}}"}']


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--target", "https://api.example.com/items", *BODY], "cannot inject faults"),
        (["run", "--target", "ftp://host/items", *BODY], "absolute http URL"),
        (["run", "--target", "http://127.0.0.1:1/items", "--body", "{}"], "{{marker}}"),
        (
            ["run", "--target", "http://127.0.0.1:1/items", *BODY, "--header", "NoColon"],
            "use 'Name: value'",
        ),
        (
            ["run", "--target", "http://127.0.0.1:1/items", *BODY, "--scenario", "earthquake"],
            "invalid choice",
        ),
        (
            ["run", "--target", "http://127.0.0.1:1/items", *BODY, "--fail-under", "101"],
            "between 0 and 100",
        ),
        (
            ["run", "--target", "http://127.0.0.1:1/items", *BODY, "--timeout", "0"],
            "greater than 0",
        ),
        (
            ["run", "--target", "http://127.0.0.1:1/items", *BODY, "--cloud-url", "http://x"],
            "--agent-key",
        ),
        (["upload", "spool.jsonl"], "upload needs --cloud-url"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SOFTADASTRA_CLOUD_URL", raising=False)
    monkeypatch.delenv("SOFTADASTRA_AGENT_KEY", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_scenarios_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == sorted(SCENARIOS)
    assert {
        "timeout_retry",
        "connection_reset",
        "unstable_network",
        "network_partition",
        "slow_network",
    } <= set(listed)


def test_default_fail_under_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert f"default: {DEFAULT_FAIL_UNDER}" in capsys.readouterr().out


async def test_unreachable_target_exits_1(tmp_path: Path) -> None:
    target = f"http://127.0.0.1:{free_port()}/items"
    result = await run_agent_cli(["run", "--target", target, *BODY, "--spool", str(tmp_path / "s")])
    assert result.returncode == 1
    assert "not readable before the run" in result.stdout
    assert not (tmp_path / "s").exists()


async def test_fail_under_sets_exit_code(tmp_path: Path) -> None:
    common = [*BODY, "--writes", "5", "--timeout", "0.3", "--settle", "0.2"]
    common += ["--idempotency-header", "Idempotency-Key", "--spool", str(tmp_path / "spool")]
    async with sample_service("idempotent", tmp_path) as target:
        passing = await run_agent_cli(
            ["run", "--target", target, *common, "--fail-under", "0"], ledger=tmp_path / "a.json"
        )
        failing = await run_agent_cli(
            ["run", "--target", target, *common, "--fail-under", "100"],
            ledger=tmp_path / "b.json",
        )
    assert passing.ledger is not None and failing.ledger is not None
    assert passing.returncode == 0
    # Seed 1 delays some responses past the timeout, so timeouts cost points and
    # 100 is out of reach.
    assert failing.ledger["score"]["score"] < 100
    assert failing.returncode == 1
    assert "writes  acknowledged  lost  duplicated  unknown  score  grade  flags" in (
        passing.stdout
    )


async def test_header_values_stay_out_of_output(tmp_path: Path) -> None:
    secret = "Bearer top-secret-token-123"
    async with sample_service("idempotent", tmp_path) as target:
        result = await run_agent_cli(
            ["run", "--target", target, *BODY, "--writes", "3", "--timeout", "0.3"]
            + ["--header", f"Authorization: {secret}", "--spool", str(tmp_path / "spool"), "-vv"],
            ledger=tmp_path / "ledger.json",
        )
    assert result.ledger is not None, result.stderr
    assert result.ledger["target"]["header_names"] == ["Authorization"]
    for text in (result.stdout, result.stderr, (tmp_path / "spool").read_text()):
        assert "top-secret-token" not in text
    assert "top-secret-token" not in (tmp_path / "ledger.json").read_text()
