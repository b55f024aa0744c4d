"""Public ids, agent keys, password hashes and user tokens.

Every random value comes from `secrets`. Agent keys are stored only as an
HMAC-SHA256 keyed with the agent-key secret, so a database dump cannot be replayed
as keys. Passwords are hashed with argon2id, and user tokens are HS256 JWTs.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time

import argon2
import jwt

__all__ = [
    "AGENT_KEY_PREFIX",
    "ID_PREFIXES",
    "InvalidToken",
    "PasswordHasher",
    "TokenService",
    "hash_agent_key",
    "is_public_id",
    "new_agent_key",
    "new_id",
]

ID_PREFIXES = frozenset({"usr", "prj", "agt", "run", "evt", "rpt"})
AGENT_KEY_PREFIX = "sa_agent_key_"
_PUBLIC_ID = re.compile(r"^(usr|prj|agt|run|evt|rpt)_[0-9a-f]{32}$")


def new_id(prefix: str) -> str:
    """Return a public id such as `run_<32 lowercase hex>`."""
    if prefix not in ID_PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}; use one of {sorted(ID_PREFIXES)}")
    return f"{prefix}_{secrets.token_hex(16)}"


def is_public_id(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "_") and _PUBLIC_ID.match(value) is not None


def new_agent_key() -> str:
    return AGENT_KEY_PREFIX + secrets.token_hex(16)


def hash_agent_key(key: str, *, secret: str) -> str:
    """Return the hex HMAC-SHA256 of an agent key, the only form that is stored."""
    if not secret:
        raise ValueError("agent key secret is empty")
    return hmac.digest(secret.encode(), key.encode(), "sha256").hex()


class PasswordHasher:
    """argon2id with the library's default cost (about 50 ms of CPU per hash)."""

    def __init__(self) -> None:
        self._hasher = argon2.PasswordHasher()

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False


class InvalidToken(Exception):
    """A bearer token is malformed, expired, or not signed with our secret."""


class TokenService:
    """Issue and verify HS256 JWTs for users; the subject is the user's public id."""

    algorithm = "HS256"

    def __init__(self, *, secret: str, issuer: str, ttl_s: int) -> None:
        if not secret:
            raise ValueError("JWT secret is empty")
        self._secret = secret
        self._issuer = issuer
        self._ttl_s = ttl_s

    def issue(self, user_id: str, *, now: float | None = None) -> str:
        issued_at = int(time.time() if now is None else now)
        claims = {
            "sub": user_id,
            "iss": self._issuer,
            "iat": issued_at,
            "exp": issued_at + self._ttl_s,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self._secret, algorithm=self.algorithm)

    def verify(self, token: str) -> str:
        """Return the user id of a valid token, or raise `InvalidToken`."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[self.algorithm],
                issuer=self._issuer,
                options={"require": ["sub", "exp", "iat", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not is_public_id(subject, "usr"):
            raise InvalidToken("token subject is not a user id")
        return subject
