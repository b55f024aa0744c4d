"""`softadastra-cloud`: run the services, migrate, and try the service with a demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from core.config import ConfigError, Settings
from core.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError
from core.logs import configure_logging
from core.processes import die_with_parent
from core.status import read_urls_file, write_urls_file

__all__ = ["main"]

log = logging.getLogger("softadastra")


async def _migrate(database_url: str) -> list[str]:
    import asyncpg

    from schema.migrate import apply_migrations

    conn = await asyncpg.connect(database_url)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


def _require_urls(settings: Settings, command: str) -> None:
    missing = [
        name
        for name, value in (
            ("CLOUD_DATABASE_URL", settings.database_url),
            ("CLOUD_REDIS_URL", settings.redis_url),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"`{command}` needs {' and '.join(missing)}; set them, or use `softadastra-cloud up` "
            "for embedded servers"
        )


def _serve(app_factory_name: str, settings: Settings) -> None:
    from api.app import build_all_in_one_app, build_api_app
    from ingest.app import build_ingest_app

    factories = {"ingest": build_ingest_app, "api": build_api_app, "all": build_all_in_one_app}
    app = factories[app_factory_name](settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "up.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another `softadastra-cloud up` is using {data_dir}; stop it or set CLOUD_DATA_DIR"
            ) from None
        yield


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    # Next to the HTTP port unless set: the all-in-one /metrics shows only ingest and
    # api, and a fixed default would clash between two `up` on one machine.
    env.setdefault("CLOUD_WORKER_METRICS_PORT", str(settings.port + 1))
    env.update(
        CLOUD_DATABASE_URL=settings.database_url or "",
        CLOUD_REDIS_URL=settings.redis_url or "",
        CLOUD_JWT_SECRET=settings.jwt_secret,
        CLOUD_AGENT_API_KEY_SECRET=settings.agent_api_key_secret,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "core.cli", "worker"], env=env, preexec_fn=die_with_parent
    )


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=40)
    except subprocess.TimeoutExpired:
        log.error("worker did not stop within 40 s; killing it")
        worker.kill()
        worker.wait()


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _check_port_free(settings: Settings) -> None:
    """Raise ConfigError if the HTTP port is taken, before anything else starts."""
    with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); "
                "stop what uses it or set SERVER_PORT to a free port"
            ) from None


def command_up(settings: Settings) -> None:
    """Run everything in one command, on embedded servers unless URLs are set."""
    _check_port_free(settings)
    # uvicorn re-raises the signal that stopped it; with the default SIGTERM action
    # that would kill the process before the embedded servers are stopped below.
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    postgres = (
        EmbeddedPostgres(settings.data_dir / "postgres") if not settings.database_url else None
    )
    redis = EmbeddedRedis(settings.data_dir / "redis") if not settings.redis_url else None
    with _data_dir_lock(settings.data_dir):
        try:
            if postgres is not None:
                settings = dataclasses.replace(settings, database_url=postgres.start())
            if redis is not None:
                settings = dataclasses.replace(settings, redis_url=redis.start())
            assert settings.database_url
            write_urls_file(settings)
            applied = asyncio.run(_migrate(settings.database_url))
            log.info("migrations applied: %s", ", ".join(applied) or "none pending")
            worker = _start_worker(settings)
            try:
                log.info("serving ingest and api on http://%s:%d", settings.host, settings.port)
                _serve("all", settings)
            finally:
                _stop_worker(worker)
        finally:
            if redis is not None:
                redis.stop()
            if postgres is not None:
                postgres.stop()


def command_worker(settings: Settings) -> None:
    from workers.worker import Worker, worker_settings

    _require_urls(settings, "worker")
    Worker(**worker_settings(settings)).run()


def command_migrate(settings: Settings) -> None:
    _require_urls(settings, "migrate")
    assert settings.database_url
    applied = asyncio.run(_migrate(settings.database_url))
    print(f"applied {len(applied)} migrations: {', '.join(applied) or 'none pending'}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="softadastra-cloud", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "up", help="run ingest, api and a worker on one port (embedded servers by default)"
    )
    commands.add_parser(
        "ingest", help="serve the agent write routes (needs CLOUD_DATABASE_URL, CLOUD_REDIS_URL)"
    )
    commands.add_parser("api", help="serve the management and read routes")
    commands.add_parser("worker", help="persist streamed events and run maintenance jobs")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    demo = commands.add_parser(
        "demo",
        help="sign up, stream a realistic run to a server and print its score",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--url", default="http://127.0.0.1:8080", help="base URL of a running server")
    demo.add_argument("--events", type=int, default=300, help="number of events to stream")
    demo.add_argument(
        "--seed", type=int, default=None, help="random seed; the same seed sends the same events"
    )
    commands.add_parser(
        "status", help="print backlog, pending entries, dead letters and consumers per shard"
    )
    dead = commands.add_parser("dead-letters", help="list or replay entries that failed to persist")
    dead.add_argument("action", choices=("list", "replay"), help="list them, or put them back")
    dead.add_argument("ids", nargs="*", help="dead-letter entry ids to replay")
    dead.add_argument("--all", action="store_true", help="replay every dead-letter entry")
    dead.add_argument("--limit", type=int, default=50, help="entries to list per shard")
    return parser


def _known_urls(settings: Settings, command: str) -> Settings:
    """Fill missing URLs from the servers that `up` recorded in the data dir."""
    recorded = read_urls_file(settings.data_dir)
    settings = dataclasses.replace(
        settings,
        database_url=settings.database_url or recorded.get("database_url"),
        redis_url=settings.redis_url or recorded.get("redis_url"),
    )
    if not (settings.database_url and settings.redis_url):
        raise ConfigError(
            f"`{command}` found no servers: set CLOUD_DATABASE_URL and CLOUD_REDIS_URL, or run "
            f"it with the CLOUD_DATA_DIR of a running `softadastra-cloud up` "
            f"(now {settings.data_dir})"
        )
    return settings


def command_status(settings: Settings) -> int:
    from core.status import print_status

    return asyncio.run(print_status(_known_urls(settings, "status")))


def command_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    from workers.deadletters import print_dead_letters, replay_command

    settings = _known_urls(settings, "dead-letters")
    if args.action == "replay":
        if not args.all and not args.ids:
            raise ConfigError("`dead-letters replay` needs entry ids or --all")
        return asyncio.run(replay_command(settings, None if args.all else args.ids))
    return asyncio.run(print_dead_letters(settings, limit=args.limit))


def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "demo":
        from core.demo import run_demo

        return run_demo(args.url, events=args.events, seed=args.seed)
    if args.command == "status":
        return command_status(settings)
    if args.command == "dead-letters":
        return command_dead_letters(settings, args)
    settings = settings.with_secrets()
    if args.command == "up":
        command_up(settings)
    elif args.command in ("ingest", "api"):
        _require_urls(settings, args.command)
        _check_port_free(settings)
        _serve(args.command, settings)
    elif args.command == "worker":
        command_worker(settings)
    elif args.command == "migrate":
        command_migrate(settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level, access_log=settings.access_log)
        code = _run_command(args, settings)
        sys.stdout.flush()  # inside the try, so a closed stdout is handled below
        return code
    except (ConfigError, EmbeddedServerError) as exc:
        print(f"softadastra-cloud: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`status | head`): stop quietly, as Unix tools
        # do, and point stdout at /dev/null so the exit flush fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
