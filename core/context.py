"""Per-process dependencies of request handlers: settings, pools, token and key services."""

from __future__ import annotations

import dataclasses

import asyncpg
import redis.asyncio as aioredis

from core import streams
from core.auth import AgentKeyCache
from core.config import Settings
from core.connections import redis_socket_timeout_s
from core.ratelimit import LeasedLimit, Limit
from core.security import PasswordHasher, TokenService

__all__ = ["AGENT_RATE_LEASE", "AppContext"]

AGENT_RATE_LEASE = 10


@dataclasses.dataclass(kw_only=True)
class AppContext:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    tokens: TokenService
    passwords: PasswordHasher
    agent_keys: AgentKeyCache
    agent_rate: LeasedLimit | None
    # Sends the script calls of ingest's hot path: appends and rate-limit leases.
    scripts: streams.ScriptCaller

    @classmethod
    def build(
        cls,
        *,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        scripts: streams.ScriptCaller | None = None,
    ) -> AppContext:
        """Build the context; `scripts` defaults to a `ScriptPipeline` on `redis`."""
        return cls(
            settings=settings,
            pool=pool,
            redis=redis,
            tokens=TokenService(
                secret=settings.jwt_secret, issuer=settings.service_name, ttl_s=settings.jwt_ttl_s
            ),
            passwords=PasswordHasher(),
            agent_keys=AgentKeyCache(
                secret=settings.agent_api_key_secret, ttl_s=settings.agent_cache_ttl_s
            ),
            agent_rate=LeasedLimit(
                Limit("agent", per_s=settings.agent_rate_per_s, burst=settings.agent_rate_burst),
                lease=AGENT_RATE_LEASE,
            )
            if settings.agent_rate_per_s
            else None,
            scripts=scripts
            or streams.ScriptPipeline(redis, timeout_s=redis_socket_timeout_s(settings)),
        )
