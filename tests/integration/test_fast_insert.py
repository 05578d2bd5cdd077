"""FastInsert stores exactly what SQLAlchemy's own insert() stores, column for column."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Table, insert, select, text

from posthorn.services.container import Services
from posthorn.store.database import Database
from posthorn.store.fast_insert import FastInsert
from posthorn.store.tables import deliveries, emails, events

NOW = datetime(2026, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)


def email_row(email_id: str, account_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": email_id,
        "account_id": account_id,
        "api_key_id": None,
        "source": "smtp",
        "message_id": f"{email_id}@h.test",
        "from_header": "Ann <ann@acme.test>",
        "from_email": "ann@acme.test",
        "to_addrs": ["bob@example.test", "ünï@example.test"],
        "cc_addrs": [],
        "bcc_addrs": [],
        "reply_to": None,
        "subject": "Hello \u2603",
        "html": None,
        "text": "hi",
        "headers": {"X-A": "1"},
        "tags": [{"name": "t", "value": "v"}],
        "attachments": [],
        "status": "queued",
        "size": 7,
        "raw": b"\x00\xffraw",
        "scheduled_at": None,
        "metadata": None,  # left out of the statement by neither path: stored the same way
        "template_id": None,
        "created_at": NOW,
        "updated_at": NOW,
        **changes,  # track_opens/track_clicks left out: their defaults apply
    }


async def stored(db: Database, table: Table, column: str, value: str) -> list[tuple[Any, ...]]:
    """The row as the database holds it, read without SQLAlchemy's type conversions."""
    async with db.read() as conn:
        result = await conn.execute(
            text(f"SELECT * FROM {table.name} WHERE {column} = :v"), {"v": value}
        )
        return [tuple(row) for row in result]


@pytest.fixture
async def account_id(services: Services) -> str:
    return (await services.accounts.create_account("fast")).id


async def test_an_email_row_is_stored_as_insert_stores_it(db: Database, account_id: str) -> None:
    async with db.write() as conn:
        await conn.execute(insert(emails), [email_row("core", account_id)])
        await FastInsert(emails).run(
            conn, [email_row("fast", account_id), email_row("fast2", account_id, size=9)]
        )
    core = (await stored(db, emails, "id", "core"))[0]
    fast = (await stored(db, emails, "id", "fast"))[0]
    differing = [i for i, (a, b) in enumerate(zip(core, fast, strict=True)) if a != b]
    names = [c.name for c in emails.columns]
    # Only the columns that name the email differ.
    assert sorted(names[i] for i in differing) == ["id", "message_id"]
    async with db.read() as conn:
        row = (await conn.execute(select(emails).where(emails.c.id == "fast2"))).one()
    assert row.size == 9 and row.track_opens == 0 and row.raw == b"\x00\xffraw"
    assert row.to_addrs == ["bob@example.test", "ünï@example.test"]
    assert row.created_at == NOW and row.metadata is None


async def test_deliveries_and_events_get_their_keys_and_defaults(
    db: Database, account_id: str
) -> None:
    async with db.write() as conn:
        await FastInsert(emails).run(conn, [email_row("e1", account_id)])
        delivery = {
            "email_id": "e1",
            "account_id": account_id,
            "recipient": "bob@example.test",
            "kind": "to",
            "status": "queued",
            "next_attempt_at": NOW,
            "raw": None,
            "created_at": NOW,
            "updated_at": NOW,
        }
        await FastInsert(deliveries).run(conn, [delivery, {**delivery, "recipient": "c@x.test"}])
        event = {
            "account_id": account_id,
            "email_id": "e1",
            "type": "queued",
            "recipient": "bob@example.test",
            "sender": "ann@acme.test",
            "source": "smtp",
            "data": {"source": "smtp"},
            "created_at": NOW,
        }
        await FastInsert(events).run(conn, [event])
    async with db.read() as conn:
        rows = (await conn.execute(select(deliveries).order_by(deliveries.c.id))).all()
        logged = (await conn.execute(select(events))).one()
    assert [r.recipient for r in rows] == ["bob@example.test", "c@x.test"]
    assert rows[1].id == rows[0].id + 1 and all(r.attempts == 0 for r in rows)
    assert rows[0].next_attempt_at == NOW
    assert logged.data == {"source": "smtp"} and logged.created_at == NOW


async def test_an_unknown_column_is_an_error_on_sqlite(db: Database, account_id: str) -> None:
    if not db.is_sqlite:
        pytest.skip("other databases take the Core statement, which ignores extra keys")
    with pytest.raises(KeyError, match="colour"):
        async with db.write() as conn:
            await FastInsert(emails).run(conn, [email_row("x", account_id, colour="red")])


@pytest.mark.parametrize("count", [1, 13, 16, 37])
async def test_every_row_of_a_large_call_is_stored_in_order(
    db: Database, account_id: str, count: int
) -> None:
    rows = [email_row(f"m{i:03}", account_id, size=i, subject=f"s{i}") for i in range(count)]
    async with db.write() as conn:
        await FastInsert(emails).run(conn, rows)
    async with db.read() as conn:
        got = (
            await conn.execute(
                select(emails.c.id, emails.c.size, emails.c.subject).order_by(text("rowid"))
                if db.is_sqlite
                else select(emails.c.id, emails.c.size, emails.c.subject).order_by(emails.c.id)
            )
        ).all()
    assert [tuple(r) for r in got] == [(f"m{i:03}", i, f"s{i}") for i in range(count)]
