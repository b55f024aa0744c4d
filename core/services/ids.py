from __future__ import annotations

from core.errors import NotFound
from core.security import is_public_id

__all__ = ["require_public_id"]

_PREFIXES = {
    "user": "usr",
    "project": "prj",
    "agent": "agt",
    "run": "run",
    "event": "evt",
    "report": "rpt",
}


def require_public_id(noun: str, value: str) -> None:
    """Raise `NotFound` for a value that cannot be an id of `noun`, before any query.

    Such a value is not found by definition; checking the shape first also keeps
    bytes PostgreSQL rejects (U+0000) out of queries.
    """
    if not is_public_id(value, _PREFIXES[noun]):
        raise NotFound(noun, value)
