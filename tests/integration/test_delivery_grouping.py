"""Recipients of one email at one domain share one SMTP transaction, each with its own outcome.

The real worker against a real SMTP sink, DNS server and inbound listener, on both databases.
"""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from posthorn.services.container import Services
from posthorn.services.intake import SendRequest
from posthorn.settings import Settings
from posthorn.store import queue
from posthorn.store import suppressions as suppression_list
from posthorn.store.database import Database
from posthorn.store.tables import deliveries, events, suppressions, utcnow
from tests.integration.test_inbound import Inbound
from tests.support.delivery import delivery_states, run_worker
from tests.support.dkim_check import dkim_verifies
from tests.support.dns import DnsServer
from tests.support.domains import verified_domain
from tests.support.sink import SmtpSink
from tests.unit.samples import load_sample

ANN, BOB, CID = "ann@example.test", "bob@example.test", "cid@example.test"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        for domain in ("example.test", "other.test"):
            server.add(domain, "MX", f"mx.{domain}", priority=10)
            server.add(f"mx.{domain}", "A", "127.0.0.1")
        yield server


@pytest.fixture
def worker_settings(settings: Settings, sink: SmtpSink) -> Settings:
    return settings.model_copy(update={"mx_port": sink.port})


@pytest.fixture
async def account_id(services: Services, dns: DnsServer) -> str:
    account = await services.accounts.create_account("acme")
    await verified_domain(services, dns, account.id)
    return account.id


@pytest.fixture
async def inbound(settings: Settings, db: Database) -> AsyncIterator[Inbound]:
    server = Inbound(settings, db)
    await server.start()
    yield server
    await server.stop()


async def send(services: Services, account_id: str, to: Sequence[str], **options: Any) -> str:
    accepted = await services.intake.submit(
        SendRequest(
            account_id=account_id,
            source="api",
            from_="hello@acme.test",
            to=list(to),
            subject="hello",
            text="hello there",
            html="<p>hello <a href='https://acme.test/x'>there</a></p>",
            **options,
        )
    )
    return accepted.id


async def attempt_events(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Each recipient's delivered/deferred/bounced events, oldest first."""
    async with db.read() as conn:
        rows = await conn.execute(
            select(events.c.recipient, events.c.type, events.c.data)
            .where(events.c.type.in_(["delivered", "deferred", "bounced"]))
            .order_by(events.c.id)
        )
        found: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            found.setdefault(row.recipient, []).append({"type": row.type, **row.data})
        return found


def envelopes(sink: SmtpSink) -> list[tuple[str, ...]]:
    return sorted(tuple(sorted(m.rcpt_tos)) for m in sink.messages)


async def test_recipients_at_one_domain_share_one_transaction(
    services: Services,
    db: Database,
    dns: DnsServer,
    account_id: str,
    worker_settings: Settings,
    sink: SmtpSink,
) -> None:
    await send(services, account_id, [ANN, BOB], cc=[CID])
    await run_worker(db, worker_settings)

    (message,) = sink.messages
    assert sorted(message.rcpt_tos) == [ANN, BOB, CID]
    # One reverse-path for the transaction: a VERP address naming the group.
    assert message.mail_from.startswith("bounce+g") and message.mail_from.endswith("@posthorn.test")
    assert dkim_verifies(message.data, dns), "an independent verifier must accept it"
    assert await delivery_states(db) == {
        ANN: ("delivered", 1),
        BOB: ("delivered", 1),
        CID: ("delivered", 1),
    }
    seen = await attempt_events(db)
    for recipient in (ANN, BOB, CID):
        (event,) = seen[recipient]
        assert event["type"] == "delivered" and event["code"] == 250
        rcpts = [line for line in event["transcript"] if line.startswith("> RCPT TO:")]
        # Each recipient's transcript shows its own RCPT, not the others'.
        assert rcpts == [f"> RCPT TO:<{recipient}>"]
        assert "> DATA" in event["transcript"]


async def test_a_permanent_refusal_bounces_that_recipient_only(
    services: Services, db: Database, account_id: str, worker_settings: Settings, sink: SmtpSink
) -> None:
    await send(services, account_id, [ANN, BOB, CID])
    sink.refuse_recipient(BOB, code=550, message="5.1.1 user unknown")
    await run_worker(db, worker_settings)

    assert envelopes(sink) == [(ANN, CID)]
    assert await delivery_states(db) == {
        ANN: ("delivered", 1),
        BOB: ("bounced", 1),
        CID: ("delivered", 1),
    }
    (bounced,) = (await attempt_events(db))[BOB]
    assert (bounced["type"], bounced["code"], bounced["enhanced_code"]) == ("bounced", 550, "5.1.1")
    async with db.read() as conn:
        suppressed = (await conn.execute(select(suppressions.c.address))).scalars().all()
    assert suppressed == [BOB]  # a mailbox error, and only for the mailbox it was about


async def test_a_temporary_refusal_defers_that_recipient_only_and_it_retries_alone(
    services: Services, db: Database, account_id: str, worker_settings: Settings, sink: SmtpSink
) -> None:
    await send(services, account_id, [ANN, BOB, CID])
    sink.refuse_recipient(BOB, code=451, message="4.7.1 greylisted, try again later")
    await run_worker(db, worker_settings)

    assert envelopes(sink) == [(ANN, CID)]
    assert await delivery_states(db) == {
        ANN: ("delivered", 1),
        BOB: ("deferred", 1),
        CID: ("delivered", 1),
    }
    (deferred,) = (await attempt_events(db))[BOB]
    assert deferred["code"] == 451 and "greylisted" in deferred["message"]

    # Time passes: the retry is due, and this time the sink accepts it.
    async with db.write() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.recipient == BOB).values(next_attempt_at=utcnow())
        )
    await run_worker(db, worker_settings)
    assert envelopes(sink) == [(ANN, CID), (BOB,)]
    retry = sink.messages[-1]
    # Alone, it goes with its own return path again.
    assert retry.mail_from.startswith("bounce+") and not retry.mail_from.startswith("bounce+g")
    assert await delivery_states(db) == {
        ANN: ("delivered", 1),
        BOB: ("delivered", 2),
        CID: ("delivered", 1),
    }


async def test_no_data_when_every_recipient_is_refused(
    services: Services, db: Database, account_id: str, worker_settings: Settings, sink: SmtpSink
) -> None:
    await send(services, account_id, [ANN, BOB])
    sink.refuse_recipient(ANN, code=550, message="5.1.1 user unknown")
    sink.refuse_recipient(BOB, code=452, message="4.2.2 mailbox full")
    await run_worker(db, worker_settings)

    assert sink.messages == []
    assert await delivery_states(db) == {ANN: ("bounced", 1), BOB: ("deferred", 1)}
    for event in [e for found in (await attempt_events(db)).values() for e in found]:
        assert "> DATA" not in event["transcript"]


async def test_a_refused_message_fails_every_recipient(
    services: Services, db: Database, account_id: str, worker_settings: Settings, sink: SmtpSink
) -> None:
    await send(services, account_id, [ANN, BOB])
    sink.fail_next(stage="data", code=554, message="5.7.1 message refused as spam")
    await run_worker(db, worker_settings)

    assert sink.messages == []
    assert await delivery_states(db) == {ANN: ("bounced", 1), BOB: ("bounced", 1)}
    for recipient in (ANN, BOB):
        (event,) = (await attempt_events(db))[recipient]
        assert event["code"] == 554
    async with db.read() as conn:
        assert (await conn.execute(select(suppressions))).all() == []  # policy: no suppression


async def test_a_connection_lost_after_the_dot_flags_every_recipient(
    services: Services, db: Database, account_id: str, worker_settings: Settings, sink: SmtpSink
) -> None:
    await send(services, account_id, [ANN, BOB])
    sink.drop_next(stage="after_dot")
    await run_worker(db, worker_settings)

    assert await delivery_states(db) == {ANN: ("deferred", 1), BOB: ("deferred", 1)}
    for recipient in (ANN, BOB):
        (event,) = (await attempt_events(db))[recipient]
        assert event["possible_duplicate"] is True
    # Nothing is lost: the retry sends both again, together.
    async with db.write() as conn:
        await conn.execute(update(deliveries).values(next_attempt_at=utcnow()))
    await run_worker(db, worker_settings)
    assert envelopes(sink) == [(ANN, BOB)]
    assert await delivery_states(db) == {ANN: ("delivered", 2), BOB: ("delivered", 2)}


async def test_with_tracking_each_recipient_gets_its_own_message(
    services: Services, db: Database, account_id: str, worker_settings: Settings, sink: SmtpSink
) -> None:
    await send(services, account_id, [ANN, BOB, CID], track_opens=True, track_clicks=True)
    await run_worker(db, worker_settings)

    assert envelopes(sink) == [(ANN,), (BOB,), (CID,)]
    bodies = {m.data for m in sink.messages}
    assert len(bodies) == 3  # each with its own tracking links
    assert all(not m.mail_from.startswith("bounce+g") for m in sink.messages)


async def test_two_domains_make_two_transactions(
    services: Services,
    db: Database,
    dns: DnsServer,
    account_id: str,
    worker_settings: Settings,
    sink: SmtpSink,
) -> None:
    await send(services, account_id, [ANN, "dan@other.test", BOB, "eve@Other.test"])
    await run_worker(db, worker_settings)

    # Domains are case-insensitive (and go on the wire in lower case).
    assert envelopes(sink) == [(ANN, BOB), ("dan@other.test", "eve@other.test")]
    assert all(dkim_verifies(m.data, dns) for m in sink.messages)
    assert {status for status, _ in (await delivery_states(db)).values()} == {"delivered"}


async def test_the_recipient_limit_splits_a_transaction(
    services: Services, db: Database, account_id: str, worker_settings: Settings, sink: SmtpSink
) -> None:
    await send(services, account_id, [ANN, BOB, CID])
    await run_worker(db, worker_settings.model_copy(update={"destination_recipient_limit": 2}))
    assert sorted(len(m.rcpt_tos) for m in sink.messages) == [1, 2]
    assert envelopes(sink)[0] + envelopes(sink)[1] in ((ANN, BOB, CID), (CID, ANN, BOB))


async def test_a_suppressed_recipient_is_left_out_of_the_transaction(
    services: Services, db: Database, account_id: str, worker_settings: Settings, sink: SmtpSink
) -> None:
    await send(services, account_id, [ANN, BOB, CID])
    async with db.write() as conn:  # suppressed after intake, before the send
        await suppression_list.add(
            conn, account_id=account_id, address=BOB, reason="manual", now=utcnow()
        )
    await run_worker(db, worker_settings)
    assert envelopes(sink) == [(ANN, CID)]
    status, _ = (await delivery_states(db))[BOB]
    assert status == "rejected"


async def test_companions_are_leased_together_and_come_back_together(
    services: Services, db: Database, account_id: str
) -> None:
    """A worker that dies mid-transaction loses nobody: every recipient it took is leased
    under its token and returns to the queue when the lease runs out."""
    await send(services, account_id, [ANN, BOB, CID])

    async def claim(token: str, offset: timedelta) -> list[queue.ClaimedDelivery]:
        now = utcnow() + offset
        lease_until = now + timedelta(seconds=60)
        async with db.write() as conn:
            first = await queue.claim(
                conn,
                now=now,
                lease_until=lease_until,
                token=token,
                limit=1,
                for_update=not db.is_sqlite,
            )
            return first + await queue.claim_companions(
                conn,
                first,
                now=now,
                lease_until=lease_until,
                token=token,
                per_transaction=50,
                for_update=not db.is_sqlite,
            )

    taken = await claim("crashed", timedelta(0))
    assert sorted(c.recipient for c in taken) == [ANN, BOB, CID]
    assert {c.lease_token for c in taken} == {"crashed"}
    assert await claim("other", timedelta(0)) == []
    again = await claim("next", timedelta(seconds=61))
    assert sorted(c.id for c in again) == sorted(c.id for c in taken)


async def test_a_bounce_to_the_group_return_path_finds_its_recipient(
    services: Services,
    db: Database,
    account_id: str,
    worker_settings: Settings,
    sink: SmtpSink,
    inbound: Inbound,
) -> None:
    await send(services, account_id, [ANN, BOB, CID])
    await run_worker(db, worker_settings)
    (message,) = sink.messages
    return_path = message.mail_from

    report = load_sample("postfix_user_unknown", return_path=return_path, recipient=BOB)
    assert await inbound.send([return_path], report) == {}
    assert await delivery_states(db) == {
        ANN: ("delivered", 1),
        BOB: ("bounced", 1),
        CID: ("delivered", 1),
    }
    async with db.read() as conn:
        suppressed = (await conn.execute(select(suppressions.c.address))).scalars().all()
    assert suppressed == [BOB]

    # A complaint names its recipient too.
    complaint = load_sample("arf_abuse", return_path=return_path, recipient=CID.upper())
    await inbound.send([return_path], complaint)
    async with db.read() as conn:
        complained = (
            (await conn.execute(select(events.c.recipient).where(events.c.type == "complained")))
            .scalars()
            .all()
        )
    assert complained == [CID]

    # The group's MAC does not make a delivery's return path.
    forged = return_path.replace("bounce+g", "bounce+")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await inbound.send([forged], report)

    # A report about someone the email was not sent to changes nothing.
    stranger = load_sample("postfix_user_unknown", return_path=return_path, recipient="x@x.test")
    assert await inbound.send([return_path], stranger) == {}
    assert (await delivery_states(db))[ANN] == ("delivered", 1)


async def test_a_group_return_path_speaks_only_for_its_own_transaction(
    services: Services,
    db: Database,
    account_id: str,
    worker_settings: Settings,
    sink: SmtpSink,
    inbound: Inbound,
) -> None:
    """Every recipient's MX sees the group return path: a report sent to it must not reach
    recipients at another domain, nor guess which of several recipients complained."""
    dan = "dan@other.test"
    await send(services, account_id, [ANN, BOB, dan])
    await run_worker(db, worker_settings)
    (here,) = [m for m in sink.messages if m.rcpt_tos == (ANN, BOB)]
    return_path = here.mail_from

    # example.test's side names a recipient at other.test: nothing happens to dan.
    forged = load_sample("postfix_user_unknown", return_path=return_path, recipient=dan)
    assert await inbound.send([return_path], forged) == {}
    assert (await delivery_states(db))[dan] == ("delivered", 1)

    # A complaint whose Original-Rcpt-To was redacted: the returned message's To (ann) may
    # not be who complained (bob shared the transaction), so nobody is blamed.
    redacted = load_sample("arf_abuse", return_path=return_path, recipient=ANN)
    redacted = b"".join(
        line for line in redacted.splitlines(keepends=True) if b"Original-Rcpt-To" not in line
    )
    assert await inbound.send([return_path], redacted) == {}
    async with db.read() as conn:
        blamed = await conn.execute(select(events.c.recipient).where(events.c.type == "complained"))
        assert blamed.scalars().all() == []
        suppressed = (await conn.execute(select(suppressions.c.address))).scalars().all()
    assert suppressed == []

    # The same report naming its recipient is believed.
    named = load_sample("arf_abuse", return_path=return_path, recipient=BOB)
    await inbound.send([return_path], named)
    async with db.read() as conn:
        suppressed = (await conn.execute(select(suppressions.c.address))).scalars().all()
    assert suppressed == [BOB]
