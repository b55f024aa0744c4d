"""What can be checked of docker-compose.yml and the Dockerfile without a Docker engine."""

from __future__ import annotations

from pathlib import Path

import yaml

from core.cli import _parser

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def cli_commands() -> set[str]:
    parser = _parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return set(subparsers.choices)  # type: ignore[arg-type]


def test_compose_has_production_services() -> None:
    assert set(compose()["services"]) == {"postgres", "redis", "migrate", "ingest", "api", "worker"}


def test_compose_commands_exist() -> None:
    commands = cli_commands()
    for name in ("migrate", "ingest", "api", "worker"):
        command = compose()["services"][name]["command"]
        assert command[0] == "softadastra-cloud"
        assert command[1] in commands


def test_compose_redis_keeps_stream() -> None:
    command = compose()["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_compose_services_wait_for_migration() -> None:
    services = compose()["services"]
    for name in ("ingest", "api", "worker"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("core", "schema", "ingest", "workers", "api", "agent"):
        assert f"COPY {package} {package}" in dockerfile
    assert "uv sync --locked --no-dev" in dockerfile


def test_script_entry_point_matches_cli() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'softadastra-cloud = "core.cli:main"' in pyproject
