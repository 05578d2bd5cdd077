"""The SMTP submission server: real listeners in this loop, real clients, both databases.

Each test starts ``run_smtp`` on free loopback ports with a test certificate, sets up an
account with the verified domain acme.test, and talks to the server with ``smtplib`` (in a
thread) or a raw line client. What was accepted is looked up in the database, and delivered
by the real worker into an SMTP sink, where DKIM is checked by an independent verifier.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select

from posthorn.smtp import server as smtp_server_module
from posthorn.store.database import Database
from posthorn.store.tables import domains, emails
from tests.support.dkim_check import dkim_verifies
from tests.support.dns import DnsServer
from tests.support.domains import owner
from tests.support.sink import SmtpSink
from tests.support.submission import (
    PASSWORD,
    RECIPIENT,
    SENDER,
    RawClient,
    Start,
    SubmissionServer,
    Tenant,
    deliver,
    dns_with_mx,
    email_count,
    free_port,
    queued_id,
    stored_message,
    submit,
)

pytest_plugins = ["tests.support.submission_fixtures"]


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with dns_with_mx() as server:
        yield server


def make_message(
    *, from_: str = SENDER, to: str = RECIPIENT, message_id: bool = True, **headers: str
) -> bytes:
    message = EmailMessage()
    message["From"] = f"Acme <{from_}>"
    message["To"] = to
    message["Subject"] = "Your receipt"
    if message_id:
        message["Message-ID"] = "<receipt-1@acme.test>"
    for name, value in headers.items():
        message[name] = value
    message.set_content("Thank you for your order.\n.\n..a line with dots\nÀ bientôt\n")
    message.add_attachment(
        bytes(range(256)) * 8, maintype="application", subtype="octet-stream", filename="r.bin"
    )
    return message.as_bytes(policy=email.policy.SMTP)


async def send(smtp_server: SubmissionServer, **kwargs: Any) -> tuple[int, str]:
    values: dict[str, Any] = {
        "user": SENDER,
        "password": PASSWORD,
        "mail_from": SENDER,
        "recipients": [RECIPIENT],
        "message": make_message(),
    }
    values.update(kwargs)
    return await asyncio.to_thread(submit, smtp_server.port, **values)


# ── accepted mail ──────────────────────────────────────────────────────────────────────────


async def test_sender_credential_mail_is_queued_delivered_intact_and_signed(
    smtp_server: SubmissionServer,
    smtp_tenant: Tenant,
    db: Database,
    mx_sink: SmtpSink,
    dns: DnsServer,
) -> None:
    sent = make_message()
    code, reply = await send(smtp_server, message=sent)
    assert code == 250
    email_id = queued_id(reply)

    detail = await smtp_server.services.emails.get(smtp_tenant.account_id, email_id)
    assert detail.email["source"] == "smtp"
    assert detail.email["from_email"] == SENDER
    raw = await stored_message(db, email_id)
    assert raw.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby posthorn.test")
    assert b"with ESMTPSA\r\n\t(using TLSv1." in raw
    assert f"for <{RECIPIENT}>;".encode() in raw

    await deliver(smtp_server, db)
    (delivered,) = mx_sink.wait_for(1)
    assert delivered.rcpt_tos == (RECIPIENT,)
    assert delivered.data.endswith(sent), "the message reaches the recipient as it was written"
    assert dkim_verifies(delivered.data, dns)
    parsed = email.message_from_bytes(delivered.data, policy=email.policy.default)
    (attachment,) = list(parsed.iter_attachments())  # type: ignore[attr-defined]
    assert attachment.get_content() == bytes(range(256)) * 8


async def test_a_domain_that_forces_unsubscribe_gets_it_on_smtp_mail_too(
    start_smtp: Start,
    smtp_tenant: Tenant,
    db: Database,
    mx_sink: SmtpSink,
    dns: DnsServer,
) -> None:
    server = await start_smtp(public_url="https://mail.posthorn.test")
    async with db.read() as conn:
        domain_id = (
            await conn.execute(select(domains.c.id).where(domains.c.name == "acme.test"))
        ).scalar_one()
    await server.services.domains.update(
        owner(smtp_tenant.account_id), domain_id, {"force_unsubscribe": True}
    )
    sent = make_message(**{"List-Unsubscribe": "<mailto:old-list@acme.test>"})
    second = "second@example.test"
    code, _ = await send(server, message=sent, recipients=[RECIPIENT, second])
    assert code == 250

    await deliver(server, db)
    received = {m.rcpt_tos: m.data for m in mx_sink.wait_for(2)}
    assert set(received) == {(RECIPIENT,), (second,)}  # a copy each: the URLs are personal
    urls = set()
    original_body = sent.split(b"\r\n\r\n", 1)[1]
    for data in received.values():
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        (field,) = parsed.get_all("List-Unsubscribe")  # the client's own was replaced
        https_url = str(field).split(">")[0].lstrip("<")
        assert https_url.startswith("https://mail.posthorn.test/u/")
        assert "<mailto:" in str(field) and "old-list" not in str(field)
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert data.split(b"\r\n\r\n", 1)[1] == original_body  # the bodies as written
        assert dkim_verifies(data, dns)
        urls.add(https_url)
    assert len(urls) == 2


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("permission", ["sending_access", "full_access"])
async def test_api_key_as_password(
    smtp_server: SubmissionServer, smtp_tenant: Tenant, mechanism: str, permission: str
) -> None:
    code, reply = await send(
        smtp_server,
        user="apikey",
        password=smtp_tenant.keys[permission],
        mechanism=mechanism,
        mail_from="billing@acme.test",
        message=make_message(from_="billing@acme.test"),
    )
    assert code == 250
    detail = await smtp_server.services.emails.get(smtp_tenant.account_id, queued_id(reply))
    assert detail.email["source"] == "smtp"
    assert detail.email["api_key_id"] is not None


async def test_portal_user_credentials(smtp_server: SubmissionServer, smtp_tenant: Tenant) -> None:
    """BizMail's "SMTP with your portal credentials": a dashboard user may log in and send
    from any address on the account's verified domains, and nowhere else."""
    await smtp_server.services.users.create_user(
        smtp_tenant.account_id, username="portal-user", password="portal password"
    )
    code, reply = await send(
        smtp_server,
        user="portal-user",
        password="portal password",
        mail_from="news@acme.test",
        message=make_message(from_="news@acme.test"),
    )
    assert code == 250, reply
    detail = await smtp_server.services.emails.get(smtp_tenant.account_id, queued_id(reply))
    assert detail.email["from_email"] == "news@acme.test"
    code, _ = await send(smtp_server, user="portal-user", password="wrong password")
    assert code == 535
    code, _ = await send(
        smtp_server,
        user="portal-user",
        password="portal password",
        mail_from="ceo@other.test",
        message=make_message(from_="ceo@other.test"),
    )
    assert code == 553


async def test_sender_login_mechanism(smtp_server: SubmissionServer, smtp_tenant: Tenant) -> None:
    code, reply = await send(smtp_server, mechanism="LOGIN")
    assert code == 250, reply


async def test_implicit_tls_port_offers_auth(
    start_smtp: Start, smtp_tenant: Tenant, db: Database
) -> None:
    smtp_server = await start_smtp(smtps_port=free_port())
    port = smtp_server.settings.smtps_port
    assert port is not None
    code, reply = await asyncio.to_thread(
        submit,
        port,
        user=SENDER,
        password=PASSWORD,
        mail_from=SENDER,
        recipients=[RECIPIENT],
        message=make_message(),
        implicit_tls=True,
    )
    assert code == 250, reply
    raw = await stored_message(db, queued_id(reply))
    assert b"with ESMTPSA\r\n\t(using TLSv1." in raw
    client = await RawClient.connect(port, implicit_tls=True)
    code, lines = await client.command("EHLO client.test")
    assert "AUTH PLAIN LOGIN" in lines and "STARTTLS" not in lines
    assert (await client.command("STARTTLS"))[0] in (454, 503)  # TLS is already on
    await client.close()
    assert await email_count(db) == 1


async def test_message_id_is_added_when_missing(
    smtp_server: SubmissionServer, smtp_tenant: Tenant
) -> None:
    code, reply = await send(smtp_server, message=make_message(message_id=False))
    assert code == 250
    detail = await smtp_server.services.emails.get(smtp_tenant.account_id, queued_id(reply))
    message_id = detail.email["message_id"]
    assert message_id.endswith("@posthorn.test")
    raw = await stored_message(smtp_server.services.db, detail.email["id"])
    assert f"Message-ID: <{message_id}>".encode() in raw


async def test_trusted_network_submits_without_auth(
    start_smtp: Start, smtp_tenant: Tenant, db: Database
) -> None:
    smtp_server = await start_smtp(
        smtp_trusted_networks=["127.0.0.0/8"], smtp_trusted_account=smtp_tenant.account_id
    )
    client = await RawClient.connect(smtp_server.port)
    assert (await client.command("EHLO relay.test"))[0] == 250
    assert (await client.command("MAIL FROM:<alerts@acme.test>"))[0] == 250
    assert (await client.command("MAIL FROM:<x@acme.test>"))[0] == 503  # nested MAIL
    assert (await client.command(f"RCPT TO:<{RECIPIENT}>"))[0] == 250
    assert (await client.command("DATA"))[0] == 354
    await client.send(make_message(from_="alerts@acme.test") + b".\r\n")
    code, lines = await client.reply()
    assert code == 250, lines
    await client.close()
    detail = await smtp_server.services.emails.get(smtp_tenant.account_id, queued_id(lines[0]))
    raw = await stored_message(db, detail.email["id"])
    assert b"with ESMTP\r\n" in raw  # neither TLS nor AUTH


# ── the session ────────────────────────────────────────────────────────────────────────────


async def test_ehlo_advertises_auth_only_after_tls(smtp_server: SubmissionServer) -> None:
    client = await RawClient.connect(smtp_server.port)
    code, lines = await client.command("EHLO client.test")
    assert code == 250 and lines[0] == "posthorn.test"
    size_limit = smtp_server.settings.max_message_bytes - 1024
    for keyword in (
        f"SIZE {size_limit}",
        "8BITMIME",
        "SMTPUTF8",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ):
        assert keyword in lines
    assert not any(line.startswith("AUTH") for line in lines)
    assert (await client.command("AUTH PLAIN AGhlbGxvAHg="))[0] == 538  # RFC 4954: 5.7.11
    code, lines = await client.command(f"MAIL FROM:<{SENDER}>")
    assert (code, lines[0]) == (530, "5.7.0 Authentication required")
    await client.starttls()
    code, lines = await client.command("EHLO client.test")
    assert "AUTH PLAIN LOGIN" in lines and "STARTTLS" not in lines
    assert (await client.command("STARTTLS"))[0] == 503
    code, lines = await client.command("NOOP")
    assert (code, lines[0]) == (250, "2.0.0 OK")  # RFC 2034: enhanced codes everywhere
    await client.close()


async def test_mail_before_auth_is_refused(smtp_server: SubmissionServer, db: Database) -> None:
    code, reply = await send(smtp_server, user=None, password=None)
    assert (code, reply) == (530, "5.7.0 Authentication required")
    assert await email_count(db) == 0


async def test_wrong_password(
    smtp_server: SubmissionServer, smtp_tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not the password 123"
    code, reply = await send(smtp_server, password=wrong)
    assert (code, reply) == (535, "5.7.8 Authentication credentials invalid")
    code, reply = await send(smtp_server, user="nobody@acme.test", password=wrong)
    assert (code, reply) == (535, "5.7.8 Authentication credentials invalid")
    code, reply = await send(smtp_server, user="apikey", password="phk_not-a-key")
    assert code == 535
    assert wrong not in caplog.text and "phk_not-a-key" not in caplog.text
    assert "smtp auth failed" in caplog.text


async def test_read_only_key_may_not_send(
    smtp_server: SubmissionServer, smtp_tenant: Tenant, db: Database
) -> None:
    code, reply = await send(smtp_server, user="apikey", password=smtp_tenant.keys["read_only"])
    assert code == 535 and "read_only" in reply
    assert await email_count(db) == 0


async def test_repeated_failures_are_throttled(
    smtp_server: SubmissionServer, smtp_tenant: Tenant
) -> None:
    client = await RawClient.connect(smtp_server.port)
    await client.command("EHLO client.test")
    await client.starttls()
    await client.command("EHLO client.test")
    bad = "AUTH PLAIN AG5vYm9keUBhY21lLnRlc3QAd3Jvbmc="  # nobody@acme.test / wrong
    for _ in range(10):
        code, lines = await client.command(bad)
        assert code == 535, lines
    code, lines = await client.command(bad)
    assert code == 421 and lines[0].startswith("4.7.0")
    assert await client.closed()
    # The right password does not help from this address now, and says nothing about it.
    code, _ = await send(smtp_server)
    assert code == 421


async def test_parallel_guesses_cannot_get_past_the_limit(
    start_smtp: Start, smtp_tenant: Tenant
) -> None:
    server = await start_smtp(smtp_auth_failure_limit=3)
    clients = [await RawClient.connect(server.port) for _ in range(8)]
    for client in clients:
        await client.command("EHLO client.test")
        await client.starttls()
        await client.command("EHLO client.test")
    bad = "AUTH PLAIN AG5vYm9keUBhY21lLnRlc3QAd3Jvbmc="  # nobody@acme.test / wrong
    codes = [code for code, _ in await asyncio.gather(*(c.command(bad) for c in clients))]
    assert sorted(codes) == [421] * 5 + [535] * 3


async def test_foreign_domain_is_refused(
    smtp_server: SubmissionServer, smtp_tenant: Tenant, db: Database
) -> None:
    key = smtp_tenant.keys["sending_access"]
    code, reply = await send(smtp_server, user="apikey", password=key, mail_from="ceo@other.test")
    assert code == 553 and reply.startswith("5.7.1") and "other.test" in reply
    # An allowed envelope sender does not make a foreign From header acceptable.
    code, reply = await send(
        smtp_server, user="apikey", password=key, message=make_message(from_="ceo@other.test")
    )
    assert code == 553 and reply.startswith("5.7.1") and "other.test" in reply
    assert await email_count(db) == 0


async def test_sender_may_use_only_its_own_address(
    smtp_server: SubmissionServer, smtp_tenant: Tenant, db: Database
) -> None:
    code, reply = await send(smtp_server, mail_from="billing@acme.test")
    assert code == 553 and reply.startswith("5.7.1"), reply
    code, reply = await send(smtp_server, message=make_message(from_="billing@acme.test"))
    assert code == 553 and reply.startswith("5.7.1"), reply
    assert await email_count(db) == 0


async def test_declared_size_over_the_limit(
    start_smtp: Start, smtp_tenant: Tenant, db: Database
) -> None:
    smtp_server = await start_smtp(max_message_bytes=20_000)
    code, reply = await send(smtp_server, mail_options=("SIZE=50000",))
    assert code == 552 and reply.startswith("5.3.4"), reply
    assert await email_count(db) == 0


async def test_streamed_data_over_the_limit(
    start_smtp: Start, smtp_tenant: Tenant, db: Database
) -> None:
    smtp_server = await start_smtp(max_message_bytes=20_000)
    big = make_message(**{"X-Padding": "x"}).replace(
        b"\r\n\r\n", b"\r\n\r\n" + (b"y" * 76 + b"\r\n") * 400, 1
    )
    code, reply = await send(smtp_server, message=big)
    assert code == 552 and reply.startswith("5.3.4"), reply
    assert await email_count(db) == 0
    code, reply = await send(smtp_server)  # the limit is for size, not for the sender
    assert code == 250


async def test_overlong_line_is_refused(smtp_server: SubmissionServer, db: Database) -> None:
    message = make_message().replace(b"\r\n\r\n", b"\r\n\r\n" + b"z" * 5000 + b"\r\n", 1)
    code, reply = await send(smtp_server, message=message)
    assert code == 500, reply
    assert await email_count(db) == 0


async def test_too_many_recipients(start_smtp: Start, smtp_tenant: Tenant, db: Database) -> None:
    smtp_server = await start_smtp(max_recipients=3)
    client = await RawClient.connect(smtp_server.port)
    await client.command("EHLO client.test")
    await client.starttls()
    await client.command("EHLO client.test")
    assert (
        await client.command("AUTH PLAIN AGhlbGxvQGFjbWUudGVzdABjb3JyZWN0IGhvcnNlIGJhdHRlcnk=")
    )[0] == 235
    assert (await client.command(f"MAIL FROM:<{SENDER}>"))[0] == 250
    for n in range(3):
        assert (await client.command(f"RCPT TO:<r{n}@example.test>"))[0] == 250
    code, lines = await client.command("RCPT TO:<r3@example.test>")
    assert code == 452 and lines[0].startswith("4.5.3")
    assert (await client.command("DATA"))[0] == 354
    await client.send(make_message() + b".\r\n")
    assert (await client.reply())[0] == 250  # the first three are sent
    await client.close()
    async with db.read() as conn:
        row = (await conn.execute(select(emails.c.to_addrs, emails.c.bcc_addrs))).one()
    assert len(row.to_addrs) + len(row.bcc_addrs) == 3


async def test_quota_exhaustion_asks_to_retry_later(
    smtp_server: SubmissionServer, smtp_tenant: Tenant, db: Database
) -> None:
    await smtp_server.services.senders.update(
        owner(smtp_tenant.account_id), smtp_tenant.sender_id, {"hourly_limit": 1}
    )
    assert (await send(smtp_server))[0] == 250
    code, reply = await send(smtp_server)
    assert code == 452 and reply.startswith("4.7.1") and "hourly limit" in reply, reply
    assert await email_count(db) == 1


SMUGGLED = (
    b"MAIL FROM:<hello@acme.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
    b"From: hello@acme.test\r\nTo: victim@example.test\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
)


@pytest.mark.parametrize("end", [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"])
async def test_smuggled_end_of_data_never_makes_two_messages(
    smtp_server: SubmissionServer, smtp_tenant: Tenant, db: Database, end: bytes
) -> None:
    client = await RawClient.connect(smtp_server.port)
    await client.command("EHLO client.test")
    await client.starttls()
    await client.command("EHLO client.test")
    assert (
        await client.command("AUTH PLAIN AGhlbGxvQGFjbWUudGVzdABjb3JyZWN0IGhvcnNlIGJhdHRlcnk=")
    )[0] == 235
    assert (await client.command(f"MAIL FROM:<{SENDER}>"))[0] == 250
    assert (await client.command(f"RCPT TO:<{RECIPIENT}>"))[0] == 250
    assert (await client.command("DATA"))[0] == 354
    first = b"From: hello@acme.test\r\nTo: user@example.test\r\nSubject: first\r\n\r\nfirst"
    await client.send(first + end + SMUGGLED + b".\r\n")
    replies = [await client.reply()]
    # Whatever else the smtp_server answers, it is never a second acceptance.
    await client.send(b"QUIT\r\n")
    for _ in range(6):
        try:
            replies.append(await client.reply())
        except (ConnectionError, TimeoutError):
            break
        if replies[-1][0] == 221:
            break
    await client.close()
    assert replies[0][0] == 550 and replies[0][1][0].startswith("5.6.0"), replies
    assert sum(1 for code, lines in replies if code == 250 and "queued" in lines[0]) == 0
    assert await email_count(db) == 0


async def test_stop_closes_open_sessions(start_smtp: Start, smtp_tenant: Tenant) -> None:
    smtp_server = await start_smtp()
    client = await RawClient.connect(smtp_server.port)
    await client.command("EHLO client.test")
    await asyncio.wait_for(smtp_server.stop(), 30)
    code, lines = await client.reply()
    assert code == 421 and lines[0].startswith("4.3.2")
    assert await client.closed()
    await client.close()


async def test_connections_over_the_cap_are_told_to_come_back(
    smtp_server: SubmissionServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smtp_server_module, "MAX_SESSIONS", 2)
    open_clients = [await RawClient.connect(smtp_server.port) for _ in range(2)]
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp_server.port)
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"421 4.7.0")
    writer.close()
    for client in open_clients:
        assert (await client.command("NOOP"))[0] == 250
        await client.close()
