"""Statistics query time over a million events on SQLite.

Run with ``.venv/bin/python bench/bench_stats.py [events]`` (default 1,000,000); it takes
about a minute, most of it loading. The load goes straight through sqlite3 in large batches
with fsync off (it is set-up, not what is measured); the queries then run through
``services.stats`` exactly as the API calls them. The events cover 30 days: every email is
queued, then delivered, deferred or bounced; about half are opened (a fifth of those by a
machine), some several times, and some clicked. One tenth of the events belong to a second
account. Each query is timed cold (first run) and warm (best of three), in wall-clock time
and in CPU time of this process (SQLite runs in-process; on a busy machine the CPU time is
the steadier figure).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from posthorn.services.stats import Stats
from posthorn.store.database import Database
from posthorn.store.migrate import migrate

END = datetime(2026, 11, 23, tzinfo=UTC)
DAYS = 30
BATCH = 50_000
DOMAINS = ("acme.test", "shop.acme.test", "other.test")
TAGS = (("campaign", "spring"), ("campaign", "autumn"), ("kind", "receipt"))
MACHINE = json.dumps({"machine": True})
HUMAN = json.dumps({"machine": False})


def stamp(moment: datetime) -> str:
    # The text form SQLAlchemy stores for DateTime on SQLite.
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def email_rows(
    accounts: tuple[str, str], first: int, n: int, total: int, rng: random.Random
) -> Iterator[tuple[tuple[Any, ...], datetime]]:
    """Emails ``first`` to ``first + n`` of ``total`` spread evenly over the days, in time
    order as a live system writes them; one in ten is the second account's."""
    spacing = DAYS * 86400 / total
    start = END - timedelta(days=DAYS)
    for serial in range(first, first + n):
        created = start + timedelta(seconds=serial * spacing + rng.uniform(0, spacing))
        account = accounts[1] if rng.random() < 0.1 else accounts[0]
        domain = rng.choice(DOMAINS)
        name, value = rng.choice(TAGS)
        email_id = f"{serial:032x}"
        row = (
            email_id,
            account,
            "api",
            f"<{email_id}@{domain}>",
            f"hello@{domain}",
            f"hello@{domain}",
            "[]",
            "[]",
            "[]",
            "hi",
            "{}",
            json.dumps([{"name": name, "value": value}]),
            "[]",
            "delivered",
            0,
            b"",
            stamp(created),
            stamp(created),
        )
        yield row, created


def history(rng: random.Random) -> Iterator[tuple[str, float, str]]:
    """What happens to one recipient: (event type, seconds after queueing, data)."""
    yield "queued", 0, "{}"
    outcome = rng.random()
    if outcome < 0.9:
        yield "delivered", 2, "{}"
        if rng.random() < 0.5:
            machine = rng.random() < 0.2
            for n in range(rng.choice((1, 1, 2, 3))):
                yield "opened", 60 * (n + 1) + rng.uniform(0, 3600), MACHINE if machine else HUMAN
            if not machine and rng.random() < 0.3:
                yield "clicked", 4000, HUMAN
    elif outcome < 0.97:
        yield "deferred", 2, "{}"
        yield "delivered", 600, "{}"
    else:
        yield "bounced", 2, "{}"


def event_rows(
    emails: list[tuple[tuple[Any, ...], datetime]], rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    last = END - timedelta(seconds=1)
    for email, created in emails:
        email_id, account, sender = email[0], email[1], email[4]
        recipient = f"user{rng.randrange(1_000_000)}@example.test"
        for kind, after, data in history(rng):
            moment = stamp(min(created + timedelta(seconds=after), last))
            yield (account, email_id, kind, recipient, sender, "api", data, moment)


def load(path: Path, target: int) -> tuple[str, int, float]:
    """Fill the database with about ``target`` events; (account, events, seconds)."""
    started = time.perf_counter()
    rng = random.Random(7)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    account, noise = str(uuid.uuid4()), str(uuid.uuid4())
    now = stamp(END)
    for account_id in (account, noise):
        conn.execute(
            "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
            (account_id, account_id[:8], now),
        )
    n_emails = int(target / 2.96)  # about 2.96 events per email
    total = 0
    for first in range(0, n_emails, BATCH // 4):
        batch = list(
            email_rows((account, noise), first, min(BATCH // 4, n_emails - first), n_emails, rng)
        )
        conn.executemany(
            "INSERT INTO emails (id, account_id, source, message_id, from_header, "
            "from_email, to_addrs, cc_addrs, bcc_addrs, subject, headers, tags, "
            "attachments, status, size, raw, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [email for email, _ in batch],
        )
        events = sorted(event_rows(batch, rng), key=lambda row: row[7])
        conn.executemany(
            "INSERT INTO events (account_id, email_id, type, recipient, sender, source, "
            "data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            events,
        )
        total += len(events)
        conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    return account, total, time.perf_counter() - started


async def measure(db: Database, account: str) -> None:
    stats = Stats(db)
    week = END - timedelta(days=7)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("7 days by day", {"start": week, "end": END, "interval": "day"}),
        ("7 days by hour", {"start": week, "end": END, "interval": "hour"}),
        ("30 days by day", {"start": END - timedelta(days=30), "end": END, "interval": "day"}),
        ("7 days, domain=acme.test", {"start": week, "end": END, "domain": "acme.test"}),
        ("7 days, tag=campaign:spring", {"start": week, "end": END, "tag": "campaign:spring"}),
    ]
    print(f"{'query':30} {'cold ms':>8} {'warm ms':>8} {'cpu ms':>7} {'sent':>8} {'opened':>7}")
    for label, args in cases:
        walls, cpus = [], []
        report = None
        for _ in range(4):
            wall, cpu = time.perf_counter(), time.process_time()
            report = await stats.report(account, **args)
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
        assert report is not None
        print(
            f"{label:30} {walls[0]:8.0f} {min(walls[1:]):8.0f} {min(cpus[1:]):7.0f} "
            f"{report.totals['sent']:8,} {report.totals['opened']:7,}"
        )


async def main() -> None:
    target = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stats.db"
        db = Database(f"sqlite+aiosqlite:///{path}")
        await migrate(db)
        await db.dispose()
        account, total, seconds = load(path, target)
        print(
            f"loaded {total:,} events over {DAYS} days in {seconds:.1f} s "
            f"({total / seconds:,.0f} events/s), database {path.stat().st_size / 1e6:.0f} MB"
        )
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await measure(db, account)
        finally:
            await db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
