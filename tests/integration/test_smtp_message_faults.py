"""Faults in a submitted message are permanent (5xx with an RFC 3463 code), so the client
stops and reports them instead of sending the same bytes again forever; a 4xx is kept for what
may pass later (quotas, our own failures). Real server, real smtplib client, on SQLite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from posthorn.store.database import Database
from tests.support.dns import DnsServer
from tests.support.submission import (
    PASSWORD,
    RECIPIENT,
    SENDER,
    Start,
    Tenant,
    dns_with_mx,
    email_count,
    submit,
)

pytest_plugins = ["tests.support.submission_fixtures"]

MALFORMED = (
    b"From: Acme <hello@acme.test>\r\n"
    b"To: user@example.test\r\n"
    b"Subject: receipt\r\n"
    b"this line is not a header field\r\n"
    b"\r\n"
    b"Thank you.\r\n"
)
FOLDED_FIRST = b" folded: before any field\r\nFrom: hello@acme.test\r\n\r\nbody\r\n"


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with dns_with_mx() as server:
        yield server


@pytest.mark.parametrize("message", [MALFORMED, FOLDED_FIRST], ids=["no-colon", "folded-first"])
@pytest.mark.parametrize("credential", ["sender", "api_key"])
async def test_a_malformed_header_is_refused_for_good(
    start_smtp: Start, smtp_tenant: Tenant, db: Database, message: bytes, credential: str
) -> None:
    server = await start_smtp()
    user, password = (
        (SENDER, PASSWORD)
        if credential == "sender"
        else ("apikey", smtp_tenant.keys["sending_access"])
    )
    code, reply = await asyncio.to_thread(
        submit,
        server.port,
        user=user,
        password=password,
        mail_from=SENDER,
        recipients=[RECIPIENT],
        message=message,
    )
    assert code == 550, reply
    assert reply.startswith("5.6.0 message: malformed header"), reply
    assert await email_count(db) == 0
