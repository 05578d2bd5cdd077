"""Database.run_write: one committed transaction, on the writer thread or on the loop."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.services.container import Services
from posthorn.store.database import Database
from posthorn.store.tables import accounts


async def rename(db: Database, account_id: str, name: str, *, fail: bool = False) -> str:
    async def work(conn: AsyncConnection) -> str:
        await conn.execute(accounts.update().where(accounts.c.id == account_id).values(name=name))
        if fail:
            raise RuntimeError("changed my mind")
        return threading.current_thread().name

    return await db.run_write(work)


async def stored_name(db: Database, account_id: str) -> str:
    async with db.read() as conn:
        return str(
            (await conn.execute(select(accounts.c.name).where(accounts.c.id == account_id))).one()[
                0
            ]
        )


@pytest.mark.parametrize("on_loop", [False, True], ids=["writer-thread", "on-loop"])
async def test_run_write_commits_what_returns_and_nothing_of_what_raises(
    db: Database, services: Services, on_loop: bool
) -> None:
    account_id = (await services.accounts.create_account("before")).id
    if on_loop:
        db.write_on_loop()
    ran_on = await rename(db, account_id, "after")
    assert await stored_name(db, account_id) == "after"
    with pytest.raises(RuntimeError, match="changed my mind"):
        await rename(db, account_id, "never", fail=True)
    assert await stored_name(db, account_id) == "after"
    if db.is_sqlite:  # PostgreSQL's transactions always run on the loop
        assert (ran_on == threading.current_thread().name) == on_loop
