"""The queue's lock protocol and group commit, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.services.container import Services
from posthorn.services.intake import SendRequest
from posthorn.store import queue
from posthorn.store.database import Database
from posthorn.store.group_commit import GroupCommitter
from posthorn.store.tables import accounts, deliveries, emails, events, utcnow
from tests.support.dns import DnsServer
from tests.support.domains import verified_domain


async def verified_account(services: Services, dns: DnsServer) -> str:
    account = await services.accounts.create_account("acme")
    await verified_domain(services, dns, account.id)
    return account.id


def request(account_id: str, n: int) -> SendRequest:
    return SendRequest(
        account_id=account_id,
        source="api",
        from_="hello@acme.test",
        to=[f"user{n}@example.test"],
        subject=f"message {n}",
        text="hello",
    )


async def test_concurrent_submissions_share_commits_and_all_land(
    services: Services, db: Database, dns: DnsServer
) -> None:
    account_id = await verified_account(services, dns)
    accepted = await asyncio.gather(
        *(services.intake.submit(request(account_id, n)) for n in range(300))
    )
    assert len({a.id for a in accepted}) == 300
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(emails))).scalar_one() == 300
        assert (
            await conn.execute(select(func.count()).select_from(deliveries))
        ).scalar_one() == 300
        assert (await conn.execute(select(func.count()).select_from(events))).scalar_one() == 300


async def insert_accounts(conn: AsyncConnection, names: Sequence[str]) -> list[None]:
    """A flush for the group-commit tests: one account per name."""
    await conn.execute(
        insert(accounts), [{"id": n, "name": n, "created_at": utcnow()} for n in names]
    )
    return [None] * len(names)


async def test_a_bad_item_fails_alone_in_its_batch(db: Database) -> None:
    committer: GroupCommitter[str, None] = GroupCommitter(db, insert_accounts, max_wait=0.05)
    names = [f"acct-{i}" for i in range(20)]
    # The duplicate id violates the primary key: its whole batch fails at first, then
    # every item is retried alone and only the duplicate fails.
    results = await asyncio.gather(
        *(committer.submit(n) for n in [*names, "acct-3"]), return_exceptions=True
    )
    await committer.close()
    assert sum(isinstance(r, Exception) for r in results) == 1
    async with db.read() as conn:
        stored = (await conn.execute(select(accounts.c.id))).scalars().all()
    assert sorted(stored) == sorted(names)


async def test_what_arrives_during_a_commit_shares_the_next_one(db: Database) -> None:
    sizes: list[int] = []

    async def flush(conn: AsyncConnection, names: Sequence[str]) -> list[None]:
        sizes.append(len(names))
        return await insert_accounts(conn, names)

    committer: GroupCommitter[str, None] = GroupCommitter(db, flush, max_wait=0)
    first = asyncio.create_task(committer.submit("first"))
    while not sizes:  # the first transaction has started
        await asyncio.sleep(0)
    rest = [f"acct-{i}" for i in range(50)]
    await asyncio.gather(first, *(committer.submit(n) for n in rest))
    await committer.close()
    assert sizes[0] == 1
    assert sum(sizes) == 51 and len(sizes) <= 3  # not one transaction each
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(accounts))).scalar_one() == 51


async def test_close_commits_what_is_waiting(db: Database) -> None:
    committer: GroupCommitter[str, None] = GroupCommitter(db, insert_accounts, max_wait=5.0)
    waiting = [asyncio.create_task(committer.submit(f"a{i}")) for i in range(3)]
    await asyncio.sleep(0)
    await asyncio.wait_for(committer.close(), 2.0)  # does not sit out the 5 s wait
    await asyncio.gather(*waiting)
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(accounts))).scalar_one() == 3


async def _claim(
    db: Database, token: str, *, now_offset: timedelta = timedelta(0)
) -> list[queue.ClaimedDelivery]:
    now = utcnow() + now_offset
    async with db.write() as conn:
        return await queue.claim(
            conn,
            now=now,
            lease_until=now + timedelta(seconds=60),
            token=token,
            limit=10,
            for_update=not db.is_sqlite,
        )


async def test_a_lease_hides_a_delivery_until_it_expires(
    services: Services, db: Database, dns: DnsServer
) -> None:
    account_id = await verified_account(services, dns)
    await services.intake.submit(request(account_id, 1))
    first = await _claim(db, "token-a")
    assert [c.recipient for c in first] == ["user1@example.test"]
    assert await _claim(db, "token-b") == []  # leased: nobody else gets it
    # A worker that crashed never records; once the lease runs out the delivery is due again.
    again = await _claim(db, "token-c", now_offset=timedelta(seconds=61))
    assert [c.id for c in again] == [first[0].id]
    assert again[0].lease_token == "token-c"


async def test_a_lost_lease_cannot_overwrite_newer_state(
    services: Services, db: Database, dns: DnsServer
) -> None:
    account_id = await verified_account(services, dns)
    accepted = await services.intake.submit(request(account_id, 1))
    stale = (await _claim(db, "old"))[0]
    await _claim(db, "new", now_offset=timedelta(seconds=61))
    now = utcnow()
    outcome = queue.RecordedOutcome(
        delivery_id=stale.id,
        lease_token="old",
        email_id=accepted.id,
        account_id=account_id,
        recipient=stale.recipient,
        sender="hello@acme.test",
        source="api",
        status="delivered",
        attempts=1,
        next_attempt_at=None,
        last_code=250,
        last_reply="ok",
        remote_host="mx",
        delivered_at=now,
        event_type="delivered",
        event_data={},
        now=now,
    )
    async with db.write() as conn:
        assert await queue.record_outcomes(conn, [outcome]) == [False]
    async with db.read() as conn:
        status = (await conn.execute(select(deliveries.c.status))).scalar_one()
    assert status == "queued"


async def test_concurrent_claims_never_hand_out_a_delivery_twice(
    services: Services, db: Database, dns: DnsServer
) -> None:
    account_id = await verified_account(services, dns)
    await asyncio.gather(*(services.intake.submit(request(account_id, n)) for n in range(60)))
    batches = await asyncio.gather(*(_claim(db, f"t{i}") for i in range(8)))
    ids = [c.id for batch in batches for c in batch]
    assert len(ids) == len(set(ids))
    assert len(ids) <= 60
