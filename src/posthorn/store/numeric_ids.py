"""Numbers for the APIs that show numeric ids (the v2 form API).

One sequence serves every kind, so a number alone says what it names: ``resolve`` gives back
the kind and the internal id. Numbers are handed out on first use and never change.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import numeric_ids

KINDS = ("email", "list", "bulk", "template")
CHUNK = 500  # ids per statement: well inside SQLite's bound-parameter limit


async def ensure(conn: AsyncConnection, kind: str, ref_id: str) -> int:
    """The number of ``ref_id``, allocated now if it has none."""
    return (await ensure_many(conn, kind, [ref_id]))[ref_id]


async def ensure_many(conn: AsyncConnection, kind: str, ref_ids: Sequence[str]) -> dict[str, int]:
    """Numbers for many ids of one kind, allocating the missing ones."""
    if kind not in KINDS:
        raise ValueError(f"unknown numeric id kind {kind!r}")
    wanted = list(dict.fromkeys(ref_ids))
    found = await numbers(conn, kind, wanted)
    missing = [ref for ref in wanted if ref not in found]
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for start in range(0, len(missing), CHUNK):
        part = missing[start : start + CHUNK]
        # Two processes may allocate the same id at once: the unique (kind, ref_id) keeps
        # one row, and the second reads it back below.
        await conn.execute(
            insert(numeric_ids)
            .values([{"kind": kind, "ref_id": ref} for ref in part])
            .on_conflict_do_nothing(index_elements=["kind", "ref_id"])
        )
    if missing:
        found |= await numbers(conn, kind, missing)
    return found


async def numbers(conn: AsyncConnection, kind: str, ref_ids: Sequence[str]) -> dict[str, int]:
    """The numbers already allocated to ``ref_ids`` (none are created)."""
    found: dict[str, int] = {}
    for start in range(0, len(ref_ids), CHUNK):
        rows = await conn.execute(
            select(numeric_ids.c.ref_id, numeric_ids.c.num_id).where(
                numeric_ids.c.kind == kind,
                numeric_ids.c.ref_id.in_(ref_ids[start : start + CHUNK]),
            )
        )
        found.update({ref: int(num) for ref, num in rows})
    return found


async def resolve(conn: AsyncConnection, num_id: int) -> tuple[str, str] | None:
    """(kind, internal id) of a number, or None when it was never handed out."""
    row = (
        await conn.execute(
            select(numeric_ids.c.kind, numeric_ids.c.ref_id).where(numeric_ids.c.num_id == num_id)
        )
    ).first()
    return (str(row.kind), str(row.ref_id)) if row else None
