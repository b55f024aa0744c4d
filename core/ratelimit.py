"""Token buckets kept in Redis, so every process of a service shares the same limits."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math

import redis.asyncio as aioredis

from core.errors import TooManyRequests
from core.streams import RedisScript, ScriptCaller

__all__ = ["LeasedLimit", "Limit", "take_token"]

# Refill by the time elapsed since the last call (Redis' own clock, so processes with
# skewed clocks agree), take `cost` tokens if there are enough, and return
# {allowed, milliseconds until enough tokens}.
_TOKEN_BUCKET = RedisScript(
    """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
local allowed = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait_ms}
"""
)


class Limit:
    """`burst` requests at once, refilled at `per_s` requests per second."""

    __slots__ = ("burst", "name", "per_s")

    def __init__(self, name: str, *, per_s: float, burst: int) -> None:
        self.name = name
        self.per_s = per_s
        self.burst = burst


async def take_token(redis: aioredis.Redis, limit: Limit, subject: str, *, what: str) -> None:
    """Take one token for `subject`, or raise 429 `rate_limited` with Retry-After."""
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    allowed, wait_ms = await _TOKEN_BUCKET(
        redis, (f"sa:rate:{limit.name}:{digest}",), (limit.per_s, limit.burst, 1)
    )
    if not int(allowed):
        retry_after_s = max(1, math.ceil(int(wait_ms) / 1000))
        raise TooManyRequests(
            f"Too many {what}; retry after {retry_after_s} s", retry_after_s=retry_after_s
        )


class LeasedLimit:
    """A token bucket in Redis that each process draws from in leases of several tokens.

    Taking one token per request from Redis would cost a round trip on the hot path.
    A process takes `lease` tokens at once and spends them locally, so it goes to
    Redis once per `lease` requests. Tokens leased by a process that then goes idle
    are lost to the others for that while, so the shared rate is exact within
    `lease` requests per process.
    """

    def __init__(self, limit: Limit, *, lease: int) -> None:
        self.limit = limit
        self.lease = max(1, min(lease, limit.burst))
        self._local: dict[str, int] = {}
        self._leasing: dict[str, asyncio.Future[None]] = {}

    async def take(self, scripts: ScriptCaller, subject: str, *, what: str) -> None:
        """Spend one token of `subject`, or raise 429 `rate_limited` with Retry-After.

        A failed lease (Redis down, say) fails every request waiting for it at once,
        so each fails within one Redis timeout instead of leasing again in turn.
        """
        while not self._spend_local(subject):
            # One lease at a time per subject: concurrent requests wait for it and share
            # its tokens instead of each leasing (and wasting) a batch of their own.
            leasing = self._leasing.get(subject)
            if leasing is None:
                leasing = asyncio.ensure_future(self._lease(scripts, subject, what=what))
                self._leasing[subject] = leasing
                leasing.add_done_callback(functools.partial(self._leased, subject))
            await asyncio.shield(leasing)

    def _leased(self, subject: str, leasing: asyncio.Future[None]) -> None:
        del self._leasing[subject]
        if not leasing.cancelled():
            leasing.exception()  # retrieved, even when every waiter was cancelled

    def _spend_local(self, subject: str) -> bool:
        local = self._local.get(subject, 0)
        if local <= 0:
            return False
        self._local[subject] = local - 1
        return True

    async def _lease(self, scripts: ScriptCaller, subject: str, *, what: str) -> None:
        key = f"sa:rate:{self.limit.name}:{subject}"
        args = (self.limit.per_s, self.limit.burst)
        allowed, wait_ms = await scripts(_TOKEN_BUCKET, (key,), (*args, self.lease))
        granted = self.lease
        if not int(allowed) and self.lease > 1:
            allowed, wait_ms = await scripts(_TOKEN_BUCKET, (key,), (*args, 1))
            granted = 1
        if not int(allowed):
            retry_after_s = max(1, math.ceil(int(wait_ms) / 1000))
            raise TooManyRequests(
                f"Too many {what}; retry after {retry_after_s} s", retry_after_s=retry_after_s
            )
        if len(self._local) > 10_000:
            self._local.clear()
        self._local[subject] = self._local.get(subject, 0) + granted
