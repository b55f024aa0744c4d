from __future__ import annotations

import asyncpg

from core.errors import NotFound
from core.repositories import agents as agents_repo
from core.security import hash_agent_key, new_agent_key, new_id
from core.services.ids import require_public_id
from schema.responses import AgentOut, AgentWithKey

__all__ = ["KEY_WARNING", "agent_json", "create_agent", "load_agent", "rotate_agent_key"]

KEY_WARNING = "Store this key now; it is shown only once and cannot be recovered."


def agent_json(row: asyncpg.Record) -> AgentOut:
    return AgentOut(
        id=row["public_id"],
        project_id=row["project_id"],
        name=row["name"],
        last_seen_at=row["last_seen_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def create_agent(
    conn: asyncpg.Connection, *, project_key: int, name: str, key_secret: str
) -> AgentWithKey:
    api_key = new_agent_key()
    row = await agents_repo.insert_agent(
        conn,
        public_id=new_id("agt"),
        project_key=project_key,
        name=name,
        key_hash=hash_agent_key(api_key, secret=key_secret),
    )
    return AgentWithKey(agent=agent_json(row), api_key=api_key, api_key_warning=KEY_WARNING)


async def load_agent(conn: asyncpg.Connection, *, user_key: int, public_id: str) -> asyncpg.Record:
    require_public_id("agent", public_id)
    row = await agents_repo.get_agent(conn, user_key=user_key, public_id=public_id)
    if row is None:
        raise NotFound("agent", public_id)
    return row


async def rotate_agent_key(
    conn: asyncpg.Connection, *, agent_key: int, key_secret: str
) -> AgentWithKey:
    api_key = new_agent_key()
    row = await agents_repo.update_agent_key(
        conn, agent_key=agent_key, key_hash=hash_agent_key(api_key, secret=key_secret)
    )
    return AgentWithKey(agent=agent_json(row), api_key=api_key, api_key_warning=KEY_WARNING)
