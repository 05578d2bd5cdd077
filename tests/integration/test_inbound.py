"""The inbound listener on a real loopback port, fed real DSNs and ARF reports over SMTP by
smtplib, on both databases."""

from __future__ import annotations

import asyncio
import logging
import smtplib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from posthorn.domain import verp
from posthorn.inbound.server import MAX_MESSAGE_BYTES, run_inbound
from posthorn.services.container import Services
from posthorn.services.intake import SendRequest
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.tables import deliveries, emails, events, suppressions
from tests.conftest import free_port
from tests.support.dns import DnsServer
from tests.support.domains import verified_domain
from tests.unit.samples import load_sample

RECIPIENT = "nobody@example.net"


class Inbound:
    """``run_inbound`` as a task in the test's loop; ``send`` talks to it with smtplib."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings.model_copy(
            update={"inbound_port": free_port(), "inbound_greeting_delay": 0.0}
        )
        self.port = self.settings.inbound_port
        self._db = db
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(run_inbound(self.settings, self._db, stop=self._stop))
        for _ in range(200):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError("the inbound listener did not start")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 60)

    def return_path(self, delivery_id: int) -> str:
        return verp.return_path(
            self.settings.secret_key, delivery_id, self.settings.effective_bounce_domain
        )

    async def send(self, recipients: Sequence[str], data: bytes) -> dict[str, Any]:
        """What the listener refused (smtplib's answer to sendmail); raises when it refused
        every recipient or the message."""
        return await asyncio.to_thread(self._send, list(recipients), data)

    def _send(self, recipients: list[str], data: bytes) -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="mx.relay.example") as client:
            # MAIL FROM:<>, as bounces are sent (RFC 5321 §4.5.5).
            return dict(client.sendmail("", recipients, data))

    def ehlo(self) -> tuple[int, bytes, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", self.port) as client:
            code, features = client.ehlo("mx.relay.example")
            return code, features, client.docmd("AUTH", "PLAIN AGFAYg==")


@pytest.fixture
async def inbound(settings: Settings, db: Database) -> AsyncIterator[Inbound]:
    server = Inbound(settings, db)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def account_id(services: Services, dns: DnsServer) -> str:
    """An account with the verified domain acme.test."""
    account = await services.accounts.create_account("acme")
    await verified_domain(services, dns, account.id)
    return account.id


@dataclass(frozen=True)
class Sent:
    email_id: str
    delivery_id: int
    return_path: str


async def queue_email(
    services: Services, inbound: Inbound, account_id: str, to: Sequence[str] = (RECIPIENT,)
) -> list[Sent]:
    accepted = await services.intake.submit(
        SendRequest(
            account_id=account_id,
            source="api",
            from_="hello@acme.test",
            to=list(to),
            subject="hello",
            text="hello there",
        )
    )
    async with services.db.read() as conn:
        ids = (
            await conn.execute(
                select(deliveries.c.id)
                .where(deliveries.c.email_id == accepted.id)
                .order_by(deliveries.c.id)
            )
        ).scalars()
        return [Sent(accepted.id, i, inbound.return_path(i)) for i in ids]


async def history(db: Database) -> dict[str, Any]:
    async with db.read() as conn:
        return {
            "events": [
                dict(r._mapping)
                for r in await conn.execute(select(events).order_by(events.c.id))
                if r.type != "queued"
            ],
            "suppressions": [dict(r._mapping) for r in await conn.execute(select(suppressions))],
            "deliveries": {r.id: dict(r._mapping) for r in await conn.execute(select(deliveries))},
            "emails": {
                r.id: r.status for r in await conn.execute(select(emails.c.id, emails.c.status))
            },
        }


def report(name: str, sent: Sent, recipient: str = RECIPIENT) -> bytes:
    return load_sample(name, return_path=sent.return_path, recipient=recipient)


@pytest.mark.parametrize(
    ("sample", "status", "source"),
    [
        ("postfix_user_unknown", "5.1.1", "dsn"),
        ("gmail_no_such_user", "5.1.1", "dsn"),
        ("microsoft_recipient_not_found", "5.1.10", "dsn"),
        ("qmail_failure_notice", "5.1.1", "heuristic"),
    ],
)
async def test_an_unknown_user_bounces_and_is_suppressed(
    services: Services,
    db: Database,
    inbound: Inbound,
    account_id: str,
    sample: str,
    status: str,
    source: str,
) -> None:
    (sent,) = await queue_email(services, inbound, account_id)
    assert await inbound.send([sent.return_path], report(sample, sent)) == {}

    seen = await history(db)
    delivery = seen["deliveries"][sent.delivery_id]
    assert delivery["status"] == "bounced" and delivery["next_attempt_at"] is None
    assert delivery["last_code"] == 550 and status in delivery["last_reply"]
    assert seen["emails"][sent.email_id] == "bounced"
    bounced, created = seen["events"]
    assert bounced["type"] == "bounced" and bounced["delivery_id"] == sent.delivery_id
    assert (bounced["recipient"], bounced["sender"], bounced["source"]) == (
        RECIPIENT,
        "hello@acme.test",
        "api",
    )
    assert bounced["data"]["status"] == status
    assert bounced["data"]["action"] == "failed"
    assert bounced["data"]["source"] == source
    assert bounced["data"]["diagnostic"] == delivery["last_reply"]
    assert bounced["data"]["suppressed"] is True
    assert created["type"] == "suppression.created" and created["recipient"] == RECIPIENT
    assert created["data"]["reason"] == "bounce"
    (suppression,) = seen["suppressions"]
    assert suppression["account_id"] == account_id
    assert (suppression["address"], suppression["reason"]) == (RECIPIENT, "bounce")
    assert suppression["email_id"] == sent.email_id
    assert status in suppression["detail"]


async def test_a_policy_block_bounces_without_suppressing(
    services: Services, db: Database, inbound: Inbound, account_id: str
) -> None:
    (sent,) = await queue_email(services, inbound, account_id)
    await inbound.send([sent.return_path], report("postfix_policy_block", sent))
    seen = await history(db)
    assert seen["deliveries"][sent.delivery_id]["status"] == "bounced"
    (bounced,) = seen["events"]
    assert bounced["type"] == "bounced"
    assert bounced["data"]["status"] == "5.7.1" and "spamhaus" in bounced["data"]["diagnostic"]
    assert bounced["data"]["suppressed"] is False
    assert seen["suppressions"] == []


async def test_a_complaint_is_recorded_and_suppressed(
    services: Services, db: Database, inbound: Inbound, account_id: str
) -> None:
    (sent,) = await queue_email(services, inbound, account_id)
    # Feedback loops send from an ordinary address, not a null reverse-path; either works.
    await inbound.send([sent.return_path], report("arf_abuse", sent))
    seen = await history(db)
    assert seen["deliveries"][sent.delivery_id]["status"] == "queued"  # as it was
    complained, created = seen["events"]
    assert complained["type"] == "complained" and complained["recipient"] == RECIPIENT
    assert complained["data"]["feedback_type"] == "abuse"
    assert (complained["sender"], complained["source"]) == ("hello@acme.test", "api")
    assert created["type"] == "suppression.created"
    (suppression,) = seen["suppressions"]
    assert (suppression["address"], suppression["reason"]) == (RECIPIENT, "complaint")


@pytest.mark.parametrize(
    "address",
    [
        "forged",  # the right shape, a MAC that is not ours
        "postmaster@posthorn.test",
        "someone@example.net",  # relaying
        "other-domain",  # a real token, for another domain
    ],
)
async def test_other_recipients_are_refused(
    services: Services, db: Database, inbound: Inbound, account_id: str, address: str
) -> None:
    (sent,) = await queue_email(services, inbound, account_id)
    if address == "forged":
        address = f"bounce+{sent.delivery_id}.aaaaaaaaaaaaaaaa@posthorn.test"
    elif address == "other-domain":
        address = sent.return_path.replace("@posthorn.test", "@example.net")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await inbound.send([address], report("postfix_user_unknown", sent))
    assert refused.value.recipients[address][0] == 550
    assert refused.value.recipients[address][1].startswith(b"5.1.1")
    seen = await history(db)
    assert seen["events"] == [] and seen["suppressions"] == []
    assert seen["deliveries"][sent.delivery_id]["status"] == "queued"


async def test_one_refused_recipient_does_not_stop_the_others(
    services: Services, db: Database, inbound: Inbound, account_id: str
) -> None:
    (sent,) = await queue_email(services, inbound, account_id)
    forged = f"bounce+{sent.delivery_id + 1}.aaaaaaaaaaaaaaaa@posthorn.test"
    refused = await inbound.send([forged, sent.return_path], report("postfix_user_unknown", sent))
    assert list(refused) == [forged]
    assert (await history(db))["deliveries"][sent.delivery_id]["status"] == "bounced"


async def test_one_report_for_two_deliveries(
    services: Services, db: Database, inbound: Inbound, account_id: str
) -> None:
    first, second = await queue_email(
        services, inbound, account_id, to=[RECIPIENT, "other@example.net"]
    )
    await inbound.send(
        [first.return_path, second.return_path], report("postfix_policy_block", first)
    )
    seen = await history(db)
    assert [e["delivery_id"] for e in seen["events"]] == [first.delivery_id, second.delivery_id]
    assert seen["emails"][first.email_id] == "bounced"


@pytest.mark.parametrize("sample", ["vacation_auto_reply", "exchange_automatic_reply"])
async def test_an_auto_reply_is_accepted_and_ignored(
    services: Services,
    db: Database,
    inbound: Inbound,
    account_id: str,
    sample: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="posthorn.inbound")
    (sent,) = await queue_email(services, inbound, account_id)
    assert await inbound.send([sent.return_path], report(sample, sent)) == {}
    seen = await history(db)
    assert seen["events"] == [] and seen["suppressions"] == []
    assert seen["deliveries"][sent.delivery_id]["status"] == "queued"
    assert f"delivery {sent.delivery_id}: ignored (auto-reply" in caplog.text


async def test_a_delay_warning_records_nothing(
    services: Services,
    db: Database,
    inbound: Inbound,
    account_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="posthorn.inbound")
    (sent,) = await queue_email(services, inbound, account_id)
    assert await inbound.send([sent.return_path], report("postfix_delayed", sent)) == {}
    seen = await history(db)
    assert seen["events"] == [] and seen["suppressions"] == []
    assert seen["deliveries"][sent.delivery_id]["status"] == "queued"
    assert f"delivery {sent.delivery_id}: delayed" in caplog.text


async def test_a_report_sent_twice_is_recorded_once(
    services: Services, db: Database, inbound: Inbound, account_id: str
) -> None:
    (sent,) = await queue_email(services, inbound, account_id)
    for _ in range(2):
        await inbound.send([sent.return_path], report("postfix_user_unknown", sent))
        await inbound.send([sent.return_path], report("arf_abuse", sent))
    types = [e["type"] for e in (await history(db))["events"]]
    assert types == ["bounced", "suppression.created", "complained"]


async def test_a_report_for_a_delivery_that_is_gone_is_dropped(
    services: Services, db: Database, inbound: Inbound, account_id: str
) -> None:
    (sent,) = await queue_email(services, inbound, account_id)
    gone = Sent(sent.email_id, 987654321, inbound.return_path(987654321))
    assert await inbound.send([gone.return_path], report("postfix_user_unknown", gone)) == {}
    seen = await history(db)
    assert seen["events"] == [] and seen["suppressions"] == []


async def test_no_auth_and_a_size_limit(inbound: Inbound) -> None:
    code, features, auth = await asyncio.to_thread(inbound.ehlo)
    assert code == 250
    assert b"AUTH" not in features
    assert f"SIZE {MAX_MESSAGE_BYTES}".encode() in features
    assert auth[0] == 500


async def test_a_message_over_the_size_limit_is_refused(
    services: Services, db: Database, inbound: Inbound, account_id: str
) -> None:
    (sent,) = await queue_email(services, inbound, account_id)
    padding = b"x" * 998 + b"\r\n"
    data = report("postfix_user_unknown", sent) + padding * (MAX_MESSAGE_BYTES // 1000 + 10)
    with pytest.raises(smtplib.SMTPException):
        await inbound.send([sent.return_path], data)
    assert (await history(db))["events"] == []
