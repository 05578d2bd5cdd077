"""What happens to a prepared email inside the group-commit transaction, in this order:

0. **The API key**: an email sent with a key that has been revoked since the request was
   authenticated (the send path may reuse a recently read key row) is refused with a 401.
1. **Idempotency**: a request repeating an ``Idempotency-Key`` of the last 24 hours gets the
   first answer again (the same body) or a 409 (a different body); nothing new is queued.
2. **Suppressions**: recipients on the account's suppression list get a ``rejected``
   delivery and event instead of a queued one; the email still gets its id.
3. **Quotas**: the remaining recipients must fit every limit, or the whole email is refused
   (429) and nothing is queued.

Doing all of it in the transaction that inserts the rows is what makes it exact under
concurrency: two requests with the same key, or racing for the last unit of a quota, are
decided one after the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.domain import quotas
from posthorn.domain.statuses import Status, aggregate
from posthorn.errors import AuthenticationFailed, Conflict, LimitExceeded, PosthornError
from posthorn.store import accounts, idempotency, suppressions, usage
from posthorn.store.emails import NewEmail, insert_emails
from posthorn.store.tables import utcnow

IDEMPOTENCY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the client is told once its email is durably queued."""

    id: str
    message_id: str
    from_: str
    to: tuple[str, ...]
    status: Status
    created_at: datetime
    rejected: tuple[str, ...] = ()  # recipients refused (suppressed)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "from": self.from_,
            "to": list(self.to),
            "status": str(self.status),
            "created_at": self.created_at.isoformat(),
            "rejected": list(self.rejected),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Accepted:
        return cls(
            id=data["id"],
            message_id=data["message_id"],
            from_=data["from"],
            to=tuple(data["to"]),
            status=Status(data["status"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            rejected=tuple(data.get("rejected", ())),
        )


@dataclass(frozen=True, slots=True)
class Pending:
    """One email waiting for the group commit."""

    rows: NewEmail
    accepted: Accepted
    limits: Sequence[quotas.Limit]
    idempotency: tuple[str, str] | None = None  # (key, hash of the request)
    key_id: str | None = None  # the API key that must still be valid when this is queued


Outcome = Accepted | PosthornError


async def admit(conn: AsyncConnection, batch: Sequence[Pending]) -> list[Outcome]:
    now = utcnow()
    revoked = await accounts.unusable_key_ids(conn, {p.key_id for p in batch if p.key_id})
    keyed = [(p.rows.email["account_id"], p.idempotency[0]) for p in batch if p.idempotency]
    remembered = await idempotency.lookup(conn, keyed, since=now - IDEMPOTENCY_WINDOW)
    blocked = await suppressions.suppressed_many(
        conn,
        [(p.rows.email["account_id"], d["recipient"]) for p in batch for d in p.rows.deliveries],
    )
    limit_keys = sorted({quotas.key(limit, now) for p in batch for limit in p.limits})
    used = await usage.read_counts(conn, limit_keys, lock=True)

    added: dict[quotas.Key, int] = {}
    results: list[Outcome] = []
    queued: list[NewEmail] = []
    answers: list[dict[str, Any]] = []
    for item in batch:
        account_id = item.rows.email["account_id"]
        if item.key_id is not None and item.key_id in revoked:
            results.append(AuthenticationFailed("auth_invalid"))
            continue
        if item.idempotency is not None:
            seen = remembered.get((account_id, item.idempotency[0]))
            if seen is not None:
                same = seen[0] == item.idempotency[1]
                results.append(
                    Accepted.from_json(seen[1]) if same else Conflict("idempotency_mismatch")
                )
                continue
        rows, accepted = _reject_suppressed(item, blocked, now)
        wanted = sum(1 for d in rows.deliveries if d["status"] != Status.REJECTED)
        exceeded = quotas.check(item.limits, used, wanted, now)
        if exceeded is not None:
            results.append(
                LimitExceeded(
                    "quota_exceeded",
                    retry_after=exceeded.retry_after,
                    label=exceeded.limit.label,
                    limit=exceeded.limit.limit,
                )
            )
            continue
        for limit in item.limits:
            k = quotas.key(limit, now)
            used[k] = used.get(k, 0) + wanted
            added[k] = added.get(k, 0) + wanted
        queued.append(rows)
        results.append(accepted)
        if item.idempotency is not None:
            response = accepted.as_json()
            remembered[(account_id, item.idempotency[0])] = (item.idempotency[1], response)
            answers.append(
                {
                    "account_id": account_id,
                    "key": item.idempotency[0],
                    "request_hash": item.idempotency[1],
                    "response": response,
                    "created_at": now,
                }
            )
    if queued:
        await insert_emails(conn, queued)
    await usage.increment(conn, added)
    await idempotency.store(conn, answers, expired_before=now - IDEMPOTENCY_WINDOW)
    return results


def _reject_suppressed(
    item: Pending, blocked: dict[tuple[str, str], str], now: datetime
) -> tuple[NewEmail, Accepted]:
    account_id = item.rows.email["account_id"]
    refused = {
        d["recipient"]
        for d in item.rows.deliveries
        if (account_id, d["recipient"].lower()) in blocked
    }
    if not refused:
        return item.rows, item.accepted
    deliveries = [
        {**d, "status": str(Status.REJECTED), "next_attempt_at": None}
        if d["recipient"] in refused
        else d
        for d in item.rows.deliveries
    ]
    events = [e for e in item.rows.events if e["recipient"] not in refused]
    events += [
        {
            **next(e for e in item.rows.events if e["recipient"] == recipient),
            "type": "rejected",
            "data": {
                "reason": "suppressed",
                "suppression": blocked[(account_id, recipient.lower())],
            },
            "created_at": now,
        }
        for recipient in sorted(refused)
    ]
    status = aggregate(d["status"] for d in deliveries)
    email = {**item.rows.email, "status": str(status)}
    rows = NewEmail(email=email, deliveries=deliveries, events=events)
    return rows, replace(item.accepted, status=status, rejected=tuple(sorted(refused)))
