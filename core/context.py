"""What every request handler and consumer needs, built once per process."""

from __future__ import annotations

import dataclasses

import asyncpg
import redis.asyncio as aioredis

from core.auth import AgentKeyCache
from core.config import Settings
from core.security import PasswordHasher, TokenService

__all__ = ["AppContext"]


@dataclasses.dataclass(kw_only=True)
class AppContext:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    tokens: TokenService
    passwords: PasswordHasher
    agent_keys: AgentKeyCache

    @classmethod
    def build(cls, *, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> AppContext:
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
        )
