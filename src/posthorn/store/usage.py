"""Quota counters: fixed windows per scope, incremented in the transaction that queues mail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import usage_counters

Key = tuple[str, str]  # (scope, window)


async def read_counts(
    conn: AsyncConnection, keys: Sequence[Key], *, lock: bool = False
) -> dict[Key, int]:
    """Current counts; ``lock`` holds the rows until commit (PostgreSQL), so two processes
    checking the same quota at once take turns instead of both seeing room for one more."""
    if not keys:
        return {}
    if lock and conn.dialect.name == "postgresql":
        # Rows must exist to be locked: create missing ones at zero first.
        stmt = postgresql.insert(usage_counters).values(
            [{"scope": s, "window": w, "count": 0} for s, w in sorted(set(keys))]
        )
        await conn.execute(stmt.on_conflict_do_nothing())
    query = _LOCKED if lock and conn.dialect.name == "postgresql" else _COUNTS
    rows = await conn.execute(query, {"keys": sorted(set(keys))})
    return {(r.scope, r.window): int(r._mapping["count"]) for r in rows}


async def increment(conn: AsyncConnection, amounts: Mapping[Key, int]) -> None:
    if not amounts:
        return
    values = [{"scope": s, "window": w, "count": n} for (s, w), n in sorted(amounts.items())]
    # One statement, many parameter sets: it compiles once and stays in the statement cache
    # (a multi-row VALUES would compile anew for every batch size).
    await conn.execute(_ADD[conn.dialect.name], values)


def _upsert_adding(insert: postgresql.Insert | sqlite.Insert) -> Any:
    return insert.on_conflict_do_update(
        index_elements=["scope", "window"],
        set_={"count": usage_counters.c.count + insert.excluded.count},
    )


# Built once: intake reads the counters in every group commit.
_COUNTS = select(usage_counters).where(
    tuple_(usage_counters.c.scope, usage_counters.c.window).in_(bindparam("keys", expanding=True))
)
_LOCKED = _COUNTS.order_by(usage_counters.c.scope, usage_counters.c.window).with_for_update()

_ADD = {
    "postgresql": _upsert_adding(postgresql.insert(usage_counters)),
    "sqlite": _upsert_adding(sqlite.insert(usage_counters)),
}
