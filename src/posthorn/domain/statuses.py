"""Email and delivery statuses, and how an email's status follows from its deliveries."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    SENT = "sent"  # accepted by an upstream relay
    DELIVERED = "delivered"  # accepted by the recipient's MX
    DEFERRED = "deferred"  # temporary failure, will retry
    BOUNCED = "bounced"  # permanent failure
    REJECTED = "rejected"  # refused before sending
    FAILED = "failed"  # gave up after the retry window
    CANCELLED = "cancelled"


PENDING = frozenset({Status.QUEUED, Status.SCHEDULED, Status.DEFERRED})
FINAL = frozenset(Status) - PENDING

# When recipients disagree, the email shows the least settled state: anything still pending
# wins over success, and success wins over failure (a partly delivered email is "delivered",
# with the per-recipient detail telling the rest).
_PRECEDENCE = (
    Status.DEFERRED,
    Status.QUEUED,
    Status.SCHEDULED,
    Status.DELIVERED,
    Status.SENT,
    Status.BOUNCED,
    Status.FAILED,
    Status.REJECTED,
    Status.CANCELLED,
)


def aggregate(statuses: Iterable[Status | str]) -> Status:
    """The status of an email from the statuses of its deliveries."""
    present = {Status(s) for s in statuses}
    for status in _PRECEDENCE:
        if status in present:
            return status
    return Status.QUEUED


def label(status: Status | str) -> str:
    """The capitalised form the seed API shows in lists ("Delivered"); it says "Delayed"
    for what we call deferred."""
    status = Status(status)
    return "Delayed" if status is Status.DEFERRED else status.value.capitalize()
