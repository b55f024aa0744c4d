from __future__ import annotations

import re

import asyncpg

from core.errors import NotFound
from core.repositories import projects as projects_repo
from core.security import new_id
from core.services.ids import require_public_id
from schema.responses import ProjectOut
from schema.structs import ProjectIn

__all__ = ["create_project", "load_project", "project_json", "slugify"]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_MAX_SLUG_CHARS = 80


def slugify(name: str) -> str:
    """`PulseGrid API` -> `pulsegrid-api`; a name with no ASCII letters or digits -> `project`."""
    slug = _NON_ALNUM.sub("-", name.lower()).strip("-")[:_MAX_SLUG_CHARS].strip("-")
    return slug or "project"


def project_json(row: asyncpg.Record) -> ProjectOut:
    return ProjectOut(
        id=row["public_id"],
        name=row["name"],
        slug=row["slug"],
        description=row["description"],
        base_url=row["base_url"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _next_free_slug(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    suffix = 2
    while f"{base}-{suffix}" in taken:
        suffix += 1
    return f"{base}-{suffix}"


async def create_project(
    conn: asyncpg.Connection, *, user_key: int, body: ProjectIn
) -> asyncpg.Record:
    base = slugify(body.name)
    while True:
        taken = await projects_repo.taken_slugs(conn, user_key=user_key, base=base)
        row = await projects_repo.insert_project(
            conn,
            public_id=new_id("prj"),
            user_key=user_key,
            name=body.name,
            slug=_next_free_slug(base, taken),
            description=body.description,
            base_url=body.base_url,
        )
        if row is not None:
            return row
        # Another request took the same slug between the two statements; pick again.


async def load_project(
    conn: asyncpg.Connection, *, user_key: int, public_id: str
) -> asyncpg.Record:
    require_public_id("project", public_id)
    row = await projects_repo.get_project(conn, user_key=user_key, public_id=public_id)
    if row is None:
        raise NotFound("project", public_id)
    return row
