"""Caller identities: a user with a bearer token, or an agent with its key.

Agent keys are resolved through a per-process cache, so the hot ingest path does not
query PostgreSQL on every request. An entry lives `ttl_s` seconds, which bounds how
long a deleted or rotated key keeps working on a process that had cached it. The
cache is keyed by the key itself, which the process holds for every request anyway,
so a cached key costs no HMAC; only the HMAC is ever stored or sent to PostgreSQL.
"""

from __future__ import annotations

import logging
import time

import asyncpg
import msgspec
from starlette.requests import Request

from core.errors import Unauthorized
from core.repositories import agents as agents_repo
from core.repositories import users as users_repo
from core.security import InvalidToken, TokenService, hash_agent_key

__all__ = [
    "AGENT_KEY_HEADERS",
    "AgentIdentity",
    "AgentKeyCache",
    "UserIdentity",
    "agent_key_from",
    "resolve_user",
]

AGENT_KEY_HEADERS = ("x-agent-key", "x-agent-api-key")
_MAX_CACHED_KEYS = 10_000
# How long past its TTL a cached key is still accepted while PostgreSQL is unreachable.
MAX_STALE_S = 3600.0
DATABASE_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
)

log = logging.getLogger(__name__)


class AgentIdentity(msgspec.Struct, frozen=True):
    agent_key: int
    agent_id: str
    project_key: int
    project_id: str


class UserIdentity(msgspec.Struct, frozen=True):
    user_key: int
    user_id: str


def agent_key_from(request: Request) -> str | None:
    for header in AGENT_KEY_HEADERS:
        value = request.headers.get(header)
        if value:
            return value.strip()
    return None


class AgentKeyCache:
    def __init__(self, *, secret: str, ttl_s: float) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, AgentIdentity]] = {}
        self._invalid: dict[str, float] = {}
        self._last_stale_warning = 0.0

    def forget(self) -> None:
        self._entries.clear()
        self._invalid.clear()

    def _warn_stale(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_stale_warning > 30:
            self._last_stale_warning = now
            log.warning("PostgreSQL unreachable (%r); accepting cached agent keys", exc)

    async def resolve(self, pool: asyncpg.Pool, key: str) -> AgentIdentity:
        """Return the agent owning `key`, or raise `Unauthorized`."""
        if len(key) > 200:
            raise Unauthorized(
                "Invalid agent key; send the key returned when the agent was created"
            )
        now = time.monotonic()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        if self._invalid.get(key, 0.0) > now:
            raise Unauthorized("Invalid agent key; it may have been rotated or its agent deleted")
        key_hash = hash_agent_key(key, secret=self._secret)
        try:
            async with pool.acquire() as conn:
                row = await agents_repo.get_identity_by_key_hash(conn, key_hash)
        except DATABASE_DOWN as exc:
            # The stream keeps accepting while PostgreSQL is down; a key seen recently
            # stays valid for that time rather than turning every agent away.
            if cached is not None and cached[0] + MAX_STALE_S > now:
                self._warn_stale(exc)
                return cached[1]
            raise
        if row is None:
            self._entries.pop(key, None)
            # Remembered for a TTL too, so a client retrying a wrong key in a loop does
            # not cost a query each time.
            if len(self._invalid) >= _MAX_CACHED_KEYS:
                self._invalid.clear()
            self._invalid[key] = now + self._ttl_s
            raise Unauthorized("Invalid agent key; it may have been rotated or its agent deleted")
        identity = AgentIdentity(
            agent_key=row["agent_key"],
            agent_id=row["agent_id"],
            project_key=row["project_key"],
            project_id=row["project_id"],
        )
        if len(self._entries) >= _MAX_CACHED_KEYS:
            self._entries.clear()
        self._entries[key] = (now + self._ttl_s, identity)
        return identity


async def resolve_user(request: Request, pool: asyncpg.Pool, tokens: TokenService) -> UserIdentity:
    """Return the user of the request's bearer token, or raise `Unauthorized`."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "Missing bearer token; send Authorization: Bearer <token> from /api/auth/login"
        )
    try:
        user_id = tokens.verify(token.strip())
    except InvalidToken as exc:
        raise Unauthorized(f"Invalid bearer token ({exc}); log in again for a new one") from None
    async with pool.acquire() as conn:
        row = await users_repo.get_user_by_public_id(conn, user_id)
    if row is None:
        raise Unauthorized("The token's user no longer exists; register or log in again")
    return UserIdentity(user_key=row["id"], user_id=user_id)
