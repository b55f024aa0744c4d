"""Settings read from the environment and an optional `.env` file.

Every setting has an environment variable; `Settings.from_env()` is the only reader,
so the rest of the code receives a frozen `Settings` and never touches `os.environ`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["ConfigError", "Settings", "load_dotenv"]

ENVIRONMENTS = ("development", "production", "test")
DEFAULT_SECRET_MARKERS = ("", "change-me", "changeme", "secret", "dev-secret")


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def load_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file of `NAME=value` lines; `#` starts a comment line."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use true or false")


def _parse_int(name: str, raw: str, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name}={value} is out of range; use at least {minimum}{upper}")
    return value


_TEXT_VARS = {
    "CLOUD_SERVICE_NAME": "service_name",
    "SERVER_HOST": "host",
    "CLOUD_CORS_ALLOWED_ORIGIN": "cors_allowed_origin",
    "CLOUD_JWT_SECRET": "jwt_secret",
    "CLOUD_AGENT_API_KEY_SECRET": "agent_api_key_secret",
    "CLOUD_DATABASE_URL": "database_url",
    "CLOUD_REDIS_URL": "redis_url",
    "CLOUD_LOG_LEVEL": "log_level",
}
# Variable -> (field, minimum, maximum or None).
_INT_VARS = {
    "SERVER_PORT": ("port", 1, 65535),
    "CLOUD_MAX_REQUEST_BODY_BYTES": ("max_request_body_bytes", 1024, None),
    "CLOUD_MAX_BULK_BODY_BYTES": ("max_bulk_body_bytes", 1024, None),
    "CLOUD_JWT_TTL_S": ("jwt_ttl_s", 60, None),
    "CLOUD_STREAM_SHARDS": ("stream_shards", 1, 1024),
    "CLOUD_STREAM_BATCH_SIZE": ("stream_batch_size", 1, 10_000),
    "CLOUD_STREAM_BLOCK_MS": ("stream_block_ms", 10, 10_000),
    "CLOUD_BACKLOG_LIMIT_EVENTS": ("backlog_limit_events", 1, None),
    "CLOUD_RECLAIM_IDLE_MS": ("reclaim_idle_ms", 1000, None),
    "CLOUD_MAX_DELIVERIES": ("max_deliveries", 1, 1000),
    "CLOUD_DEAD_LETTER_FLOOD_LIMIT": ("dead_letter_flood_limit", 1, 100_000),
    "CLOUD_WORKER_METRICS_PORT": ("worker_metrics_port", 0, 65535),
    "CLOUD_AGENT_RATE_PER_S": ("agent_rate_per_s", 0, 1_000_000),
    "CLOUD_AGENT_RATE_BURST": ("agent_rate_burst", 1, 1_000_000),
    "CLOUD_REGISTER_BURST": ("register_burst", 1, 1_000_000),
    "CLOUD_AGENT_CACHE_TTL_S": ("agent_cache_ttl_s", 0, 300),
}
_BOOL_VARS = {"CLOUD_ACCESS_LOG": "access_log", "CLOUD_AUTO_MIGRATE": "auto_migrate"}


def _typed_values(get: Callable[[str], str | None]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name, field in _TEXT_VARS.items():
        if (raw := get(name)) is not None:
            values[field] = raw
    for name, (field, minimum, maximum) in _INT_VARS.items():
        if (raw := get(name)) is not None:
            values[field] = _parse_int(name, raw, minimum=minimum, maximum=maximum)
    for name, field in _BOOL_VARS.items():
        if (raw := get(name)) is not None:
            values[field] = _parse_bool(name, raw)
    return values


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    service_name: str = "softadastra-cloud"
    environment: str = "development"
    host: str = "127.0.0.1"
    port: int = 8080
    cors_allowed_origin: str = "http://localhost:5173"
    dev_mode: bool = True
    auto_migrate: bool = True
    jwt_secret: str = ""
    jwt_ttl_s: int = 24 * 3600
    agent_api_key_secret: str = ""
    max_request_body_bytes: int = 1024 * 1024
    max_bulk_body_bytes: int = 5 * 1024 * 1024
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".softadastra")
    # Pipeline knobs.
    stream_shards: int = 4
    stream_batch_size: int = 200
    stream_block_ms: int = 1000
    backlog_limit_events: int = 2_000_000
    reclaim_idle_ms: int = 60_000
    max_deliveries: int = 5
    dead_letter_flood_limit: int = 100
    worker_metrics_port: int = 9091
    # Requests per second of one agent key across all ingest processes; 0 disables.
    agent_rate_per_s: int = 200
    agent_rate_burst: int = 400
    register_burst: int = 20
    agent_cache_ttl_s: float = 5.0
    log_level: str = "INFO"
    access_log: bool = True

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_env(
        cls, environ: dict[str, str] | None = None, *, dotenv: Path | None = None
    ) -> Settings:
        """Build settings from `environ` (default `os.environ`) over a `.env` file."""
        env = load_dotenv(dotenv or Path(".env"))
        env.update(os.environ if environ is None else environ)

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        values = _typed_values(get)
        environment = (get("CLOUD_ENVIRONMENT") or "development").lower()
        if environment not in ENVIRONMENTS:
            raise ConfigError(
                f"CLOUD_ENVIRONMENT={environment!r} is invalid; "
                f"use one of {', '.join(ENVIRONMENTS)}"
            )
        values["environment"] = environment
        dev_mode = get("CLOUD_DEV_MODE")
        values["dev_mode"] = (
            _parse_bool("CLOUD_DEV_MODE", dev_mode) if dev_mode else environment != "production"
        )
        if (raw := get("CLOUD_DATA_DIR")) is not None:
            values["data_dir"] = Path(raw)
        return cls(**values)  # type: ignore[arg-type]

    def with_secrets(self) -> Settings:
        """Return settings whose secrets are usable, or raise `ConfigError`.

        Production requires both secrets to be set to non-default values. Elsewhere a
        missing secret is generated once and kept in the data dir, so tokens and agent
        keys survive a restart.
        """
        names = {
            "jwt_secret": "CLOUD_JWT_SECRET",
            "agent_api_key_secret": "CLOUD_AGENT_API_KEY_SECRET",
        }
        updates: dict[str, str] = {}
        problems: list[str] = []
        for field, variable in names.items():
            value: str = getattr(self, field)
            if value.lower() not in DEFAULT_SECRET_MARKERS:
                if self.is_production and len(value) < 32:
                    problems.append(f"{variable} is shorter than 32 characters")
            elif self.is_production:
                problems.append(f"{variable} is missing or a default value")
            else:
                updates[field] = self._stored_secret(field)
        if problems:
            raise ConfigError(
                "; ".join(problems) + "; production requires random secrets of 32+ characters "
                "(for example: python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        return dataclasses.replace(self, **updates) if updates else self

    def _stored_secret(self, field: str) -> str:
        path = self.data_dir / "secrets" / field
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        value = secrets.token_hex(32)
        path.write_text(value, encoding="utf-8")
        path.chmod(0o600)
        return value
