from __future__ import annotations

import asyncio
import functools

import asyncpg

from core.errors import Conflict, InvalidCredentials
from core.ratelimit import Limit
from core.repositories import users as users_repo
from core.security import PasswordHasher, TokenService, new_id
from schema.responses import LoginOut, RegisterOut, UserOut
from schema.structs import LoginIn, RegisterIn

__all__ = [
    "LOGIN_PER_ACCOUNT",
    "LOGIN_PER_ADDRESS",
    "REGISTER_REFILL_PER_S",
    "login",
    "register",
    "user_json",
]

# Enough for a person who mistypes, far too few to guess passwords: 10 attempts at
# once per account then one every 6 s; 30 at once per client address then one a second.
LOGIN_PER_ACCOUNT = Limit("login-account", per_s=1 / 6, burst=10)
LOGIN_PER_ADDRESS = Limit("login-address", per_s=1.0, burst=30)
# Each registration costs an argon2 hash: `CLOUD_REGISTER_BURST` at once per client
# address, then one a minute.
REGISTER_REFILL_PER_S = 1 / 60


@functools.cache
def _dummy_hash() -> str:
    """Return a hash to verify against when the email is unknown, so every login costs the same.

    Computed on first use: argon2 takes tens of megabytes for each hash, which ingest
    processes, importing this module without serving logins, should not pay.
    """
    return PasswordHasher().hash("not a real password")


def user_json(row: asyncpg.Record) -> UserOut:
    return UserOut(
        id=row["public_id"], email=row["email"], name=row["name"], created_at=row["created_at"]
    )


async def register(
    conn: asyncpg.Connection, *, body: RegisterIn, passwords: PasswordHasher, tokens: TokenService
) -> RegisterOut:
    # argon2 takes tens of milliseconds of CPU; keep it off the event loop.
    password_hash = await asyncio.to_thread(passwords.hash, body.password)
    row = await users_repo.insert_user(
        conn, public_id=new_id("usr"), email=body.email, name=body.name, password_hash=password_hash
    )
    if row is None:
        raise Conflict(f"Email {body.email!r} is already registered; log in instead")
    return RegisterOut(user=user_json(row), token=tokens.issue(row["public_id"]))


async def login(
    conn: asyncpg.Connection, *, body: LoginIn, passwords: PasswordHasher, tokens: TokenService
) -> LoginOut:
    row = await users_repo.get_user_by_email(conn, body.email)
    stored = row["password_hash"] if row is not None else _dummy_hash()
    valid = await asyncio.to_thread(passwords.verify, stored, body.password)
    if row is None or not valid:
        raise InvalidCredentials("Invalid email or password")
    return LoginOut(token=tokens.issue(row["public_id"]), user=user_json(row))
