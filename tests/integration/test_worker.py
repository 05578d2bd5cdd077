"""The worker against a real SMTP sink and DNS server, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from posthorn.services.container import Services
from posthorn.services.intake import SendRequest
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.tables import deliveries, emails, events, utcnow
from tests.support.delivery import delivery_states, run_worker
from tests.support.dkim_check import dkim_verifies
from tests.support.dns import DnsServer
from tests.support.domains import verified_domain
from tests.support.sink import SmtpSink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.add("example.test", "MX", "mx.example.test", priority=10)
        server.add("mx.example.test", "A", "127.0.0.1")
        yield server


@pytest.fixture
def worker_settings(settings: Settings, sink: SmtpSink) -> Settings:
    return settings.model_copy(update={"mx_port": sink.port})


async def queue_one(services: Services, to: list[str], dns: DnsServer) -> str:
    account = await services.accounts.create_account("acme")
    await verified_domain(services, dns, account.id)
    accepted = await services.intake.submit(
        SendRequest(
            account_id=account.id,
            source="api",
            from_="hello@acme.test",
            to=to,
            subject="hello",
            text="hello there",
        )
    )
    return accepted.id


async def test_delivers_and_records(
    services: Services, dns: DnsServer, db: Database, worker_settings: Settings, sink: SmtpSink
) -> None:
    email_id = await queue_one(services, ["a@example.test", "b@example.test"], dns)
    await run_worker(db, worker_settings)
    # One domain, one message: both recipients in one transaction.
    assert [sorted(m.rcpt_tos) for m in sink.messages] == [["a@example.test", "b@example.test"]]
    for message in sink.messages:
        assert message.data.startswith(b"DKIM-Signature:")
        assert dkim_verifies(message.data, dns), "an independent verifier must accept it"
    assert await delivery_states(db) == {
        "a@example.test": ("delivered", 1),
        "b@example.test": ("delivered", 1),
    }
    async with db.read() as conn:
        status = (
            await conn.execute(select(emails.c.status).where(emails.c.id == email_id))
        ).scalar_one()
        kinds = (await conn.execute(select(events.c.type).order_by(events.c.id))).scalars().all()
    assert status == "delivered"
    assert sorted(kinds) == ["delivered", "delivered", "queued", "queued"]


async def test_a_temporary_failure_is_deferred_then_retried(
    services: Services, dns: DnsServer, db: Database, worker_settings: Settings, sink: SmtpSink
) -> None:
    await queue_one(services, ["grey@example.test"], dns)
    sink.fail_next(stage="rcpt", code=451, message="4.7.1 greylisted, try again later")
    await run_worker(db, worker_settings)
    assert await delivery_states(db) == {"grey@example.test": ("deferred", 1)}
    async with db.read() as conn:
        row = (await conn.execute(select(deliveries))).one()
        event = (
            await conn.execute(select(events.c.data).where(events.c.type == "deferred"))
        ).scalar_one()
    assert row.last_code == 451 and "greylisted" in row.last_reply
    assert row.next_attempt_at > utcnow() + timedelta(seconds=30)  # backoff, not a hot loop
    assert event["code"] == 451
    # Time passes: the retry is due, and this time the sink accepts.
    async with db.write() as conn:
        await conn.execute(update(deliveries).values(next_attempt_at=utcnow()))
    await run_worker(db, worker_settings)
    assert await delivery_states(db) == {"grey@example.test": ("delivered", 2)}
    assert len(sink.messages) == 1


async def test_a_permanent_failure_bounces(
    services: Services, dns: DnsServer, db: Database, worker_settings: Settings, sink: SmtpSink
) -> None:
    await queue_one(services, ["gone@example.test"], dns)
    sink.fail_next(stage="rcpt", code=550, message="5.1.1 user unknown")
    await run_worker(db, worker_settings)
    assert await delivery_states(db) == {"gone@example.test": ("bounced", 1)}
    async with db.read() as conn:
        row = (await conn.execute(select(deliveries))).one()
    assert row.next_attempt_at is None and row.last_code == 550
    assert sink.messages == []


async def test_unreachable_destination_defers(
    services: Services, db: Database, worker_settings: Settings, dns: DnsServer
) -> None:
    dns.add("down.test", "MX", "mx.down.test")
    dns.add("mx.down.test", "A", "127.0.0.1")
    await queue_one(services, ["x@down.test"], dns)
    closed = worker_settings.model_copy(update={"mx_port": 1})  # nothing listens on port 1
    await run_worker(db, closed)
    assert await delivery_states(db) == {"x@down.test": ("deferred", 1)}


async def test_private_destinations_are_refused_by_default(
    services: Services, dns: DnsServer, db: Database, worker_settings: Settings, sink: SmtpSink
) -> None:
    await queue_one(services, ["user@example.test"], dns)
    strict = worker_settings.model_copy(update={"mx_allow_private": False})
    await run_worker(db, strict)
    status, _ = (await delivery_states(db))["user@example.test"]
    assert status in ("bounced", "deferred")
    assert sink.messages == []


async def test_relay_mode_reports_sent(
    services: Services, dns: DnsServer, db: Database, settings: Settings, tmp_path: Path
) -> None:
    with SmtpSink(starttls=True, auth={"relayuser": "relay pass"}) as relay:
        ca_file = tmp_path / "relay-ca.pem"
        ca_file.write_bytes(relay.ca_pem)
        relay_settings = settings.model_copy(
            update={
                "relay_url": f"smtp://relayuser:relay%20pass@127.0.0.1:{relay.port}",
                "relay_ca_file": ca_file,
            }
        )
        await queue_one(services, ["someone@anywhere.test"], dns)
        await run_worker(db, relay_settings)
        assert await delivery_states(db) == {"someone@anywhere.test": ("sent", 1)}
        (message,) = relay.messages
        assert message.authenticated_as == "relayuser" and message.tls
