"""Leases are short and renewed while their worker lives, on both databases: a send slower
than a lease keeps its deliveries, an abandoned lease runs out after one term, and a worker
that lost a lease can neither renew it nor record over the new holder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from posthorn.delivery.transport import SmtpDeliverer
from posthorn.services.container import Services
from posthorn.services.intake import SendRequest
from posthorn.services.signing import DkimSigner
from posthorn.settings import Settings
from posthorn.store import queue
from posthorn.store.database import Database
from posthorn.store.tables import deliveries, events, utcnow
from posthorn.worker import Worker
from tests.support.dns import DnsServer
from tests.support.domains import verified_domain
from tests.support.sink import SmtpSink

LEASE = 3  # seconds; the heartbeat renews every second
SLOW_REPLY = 1.0  # seconds per SMTP reply: one transaction takes ~7 s, more than two leases


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
def lease_settings(settings: Settings, sink: SmtpSink, dns: DnsServer) -> Settings:
    dns.add("example.test", "MX", "mx.example.test", priority=10)
    dns.add("mx.example.test", "A", "127.0.0.1")
    return settings.model_copy(
        update={"mx_port": sink.port, "worker_lease_seconds": LEASE, "smtp_timeout_scale": 0.1}
    )


async def queue_emails(services: Services, dns: DnsServer, count: int) -> list[int]:
    """``count`` emails to one recipient each; their delivery ids."""
    account = await services.accounts.create_account("acme")
    await verified_domain(services, dns, account.id)
    for n in range(count):
        await services.intake.submit(
            SendRequest(
                account_id=account.id,
                source="api",
                from_="hello@acme.test",
                to=[f"user{n}@example.test"],
                subject="leased",
                text="hello",
            )
        )
    async with services.db.read() as conn:
        return list((await conn.execute(select(deliveries.c.id).order_by("id"))).scalars())


async def claim(db: Database, token: str, *, at: timedelta, lease: timedelta) -> list[int]:
    now = utcnow() + at
    async with db.write() as conn:
        claimed = await queue.claim(
            conn,
            now=now,
            lease_until=now + lease,
            token=token,
            limit=10,
            for_update=not db.is_sqlite,
        )
    return sorted(c.id for c in claimed)


def make_worker(db: Database, settings: Settings) -> Worker:
    return Worker(db, settings, SmtpDeliverer(settings), DkimSigner(db, settings))


async def eventually(condition: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


# The store: renewal and expiry with explicit clocks.


async def test_a_renewed_lease_outlives_its_term_and_an_abandoned_one_expires(
    services: Services, db: Database, dns: DnsServer
) -> None:
    kept, abandoned = await queue_emails(services, dns, 2)
    lease = timedelta(seconds=30)
    assert await claim(db, "alive", at=timedelta(0), lease=lease) == [kept, abandoned]
    async with db.write() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.id == abandoned).values(lease_token="dead")
        )
        renewed = await queue.extend_leases(
            conn, [(kept, "alive")], utcnow() + timedelta(seconds=20) + lease
        )
    assert renewed == [kept]
    # One term later the dead worker's delivery is due again; the living worker's is not.
    assert await claim(db, "next", at=timedelta(seconds=31), lease=lease) == [abandoned]
    assert await claim(db, "later", at=timedelta(seconds=49), lease=lease) == []
    assert await claim(db, "last", at=timedelta(seconds=51), lease=lease) == [kept]


async def test_a_lost_lease_is_not_renewed(
    services: Services, db: Database, dns: DnsServer
) -> None:
    (delivery,) = await queue_emails(services, dns, 1)
    lease = timedelta(seconds=30)
    await claim(db, "old", at=timedelta(0), lease=lease)
    assert await claim(db, "new", at=timedelta(seconds=31), lease=lease) == [delivery]
    async with db.read() as conn:
        held_until = (await conn.execute(select(deliveries.c.next_attempt_at))).scalar_one()
    async with db.write() as conn:
        renewed = await queue.extend_leases(
            conn, [(delivery, "old")], utcnow() + timedelta(hours=1)
        )
    assert renewed == []
    async with db.read() as conn:
        row = (await conn.execute(select(deliveries))).one()
    assert (row.lease_token, row.next_attempt_at) == ("new", held_until)


# The worker: a real slow MX, a real heartbeat.


@pytest.mark.parametrize("mode", ["run", "run_until_idle"])
async def test_a_slow_mx_does_not_cost_the_worker_its_lease(
    services: Services,
    db: Database,
    dns: DnsServer,
    lease_settings: Settings,
    sink: SmtpSink,
    mode: str,
) -> None:
    (delivery,) = await queue_emails(services, dns, 1)
    sink.slow(SLOW_REPLY)
    worker = make_worker(db, lease_settings)
    if mode == "run":
        task = asyncio.create_task(worker.run())
    else:
        task = asyncio.create_task(worker.run_until_idle(within=60))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await eventually(lambda: sink.connections > 0, timeout=10)  # the worker holds it
    rival: list[int] = []
    # Another worker polls all along, with the same lease: it must never get the delivery.
    while sink.received == 0 and loop.time() - started < 30:
        rival += await claim(db, "rival", at=timedelta(0), lease=timedelta(seconds=LEASE))
        await asyncio.sleep(0.25)
    took = loop.time() - started
    if mode == "run":
        await eventually(lambda: not worker._in_flight, timeout=10)
        worker.stop()
    await asyncio.wait_for(task, 30)
    assert sink.received == 1 and took > 2 * LEASE, (sink.received, took)
    assert rival == [], "the lease ran out while the send was in flight"
    async with db.read() as conn:
        row = (await conn.execute(select(deliveries).where(deliveries.c.id == delivery))).one()
    assert (row.status, row.attempts, row.lease_token) == ("delivered", 1, None)


async def test_a_worker_that_lost_its_lease_neither_renews_nor_records_it(
    services: Services, db: Database, dns: DnsServer, lease_settings: Settings, sink: SmtpSink
) -> None:
    (delivery,) = await queue_emails(services, dns, 1)
    sink.slow(SLOW_REPLY)
    worker = make_worker(db, lease_settings)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: sink.connections > 0, timeout=10)
    # What another worker does once a lease has run out (e.g. the first one's host stalled).
    taken_until = utcnow() + timedelta(minutes=5)
    async with db.write() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery)
            .values(lease_token="new-holder", next_attempt_at=taken_until)
        )
    await eventually(lambda: sink.received == 1, timeout=30)
    await eventually(lambda: not worker._in_flight, timeout=10)
    worker.stop()
    await asyncio.wait_for(task, 30)
    async with db.read() as conn:
        row = (await conn.execute(select(deliveries))).one()
        kinds = list((await conn.execute(select(events.c.type))).scalars())
    assert (row.lease_token, row.status, row.attempts) == ("new-holder", "queued", 0)
    assert row.next_attempt_at == taken_until.replace(tzinfo=row.next_attempt_at.tzinfo)
    assert kinds == ["queued"]
