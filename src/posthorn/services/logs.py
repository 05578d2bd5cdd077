"""The transaction log: every delivery event, filtered and sorted as the seed API describes."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from posthorn.errors import InvalidRequest
from posthorn.store import events as repo
from posthorn.store.database import Database

# The seed's action names → our event types. "queue" is an email entering the queue,
# "sender" its hand-over to an upstream relay.
ACTIONS: dict[str, tuple[str, ...]] = {
    "delivered": ("delivered",),
    "deferred": ("deferred",),
    "delayed": ("deferred",),
    "rejected": ("rejected",),
    "bounced": ("bounced", "failed"),
    "failed": ("failed",),
    "sender": ("sent",),
    "sent": ("sent",),
    "queue": ("queued",),
    "queued": ("queued",),
}
LOG_TYPES = tuple(sorted({t for types in ACTIONS.values() for t in types}))
SOURCE_SHAPE = re.compile(r"^[a-z0-9_-]{1,10}$")  # api, smtp, cli, or a dialect's name


@dataclass(frozen=True, slots=True)
class LogPage:
    entries: list[dict[str, Any]]
    total: int
    stats: dict[str, int]


def parse_actions(text: str | None) -> tuple[str, ...]:
    if not text:
        return LOG_TYPES
    types: list[str] = []
    for part in text.split(","):
        word = part.strip().lower()
        if word not in ACTIONS:
            raise InvalidRequest("invalid_filter", field="action", value=word[:40])
        types.extend(ACTIONS[word])
    return tuple(dict.fromkeys(types))


def parse_sources(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    sources = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    for source in sources:
        if not SOURCE_SHAPE.match(source):
            raise InvalidRequest("invalid_filter", field="source", value=source[:40])
    return sources


def parse_sorts(text: str | None) -> list[tuple[str, bool]]:
    """``"-timestamp,recipient"`` → ``[("timestamp", True), ("recipient", False)]``."""
    if not text:
        return [("timestamp", True)]
    sorts = []
    for part in text.split(","):
        word = part.strip()
        desc = word.startswith("-")
        name = word.lstrip("-+")
        if name not in repo.SORTABLE:
            raise InvalidRequest("invalid_filter", field="sorts", value=word[:40])
        sorts.append((name, desc))
    return sorts


class Logs:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(
        self,
        account_id: str,
        *,
        page: int,
        per_page: int,
        action: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        email_id: str | None = None,
        source: str | None = None,
        sorts: str | None = None,
    ) -> LogPage:
        flt = repo.LogFilter(
            account_id=account_id,
            types=parse_actions(action),
            after=after,
            before=before,
            sender=sender.strip().lower() if sender else None,
            recipient=recipient.strip() if recipient else None,
            email_id=email_id,
            sources=parse_sources(source),
        )
        order = parse_sorts(sorts)
        async with self._db.read() as conn:
            entries, total = await repo.list_log(
                conn, flt, sorts=order, offset=(page - 1) * per_page, limit=per_page
            )
            # The breakdown covers every action within the other filters.
            stats = await repo.count_by_type(conn, replace(flt, types=LOG_TYPES), LOG_TYPES)
        return LogPage(entries=entries, total=total, stats=stats)
