"""What a delivery attempt's result means for the delivery: its next status and event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from posthorn.domain.results import Delivered, DeliveryResult, HardFail, Refused, SoftFail
from posthorn.domain.retry import next_delay, should_give_up
from posthorn.domain.statuses import Status


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    event_type: str
    next_attempt_at: datetime | None
    delivered_at: datetime | None = None


def decide(
    result: DeliveryResult,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    schedule_minutes: Sequence[int],
    max_age: timedelta,
) -> Decision:
    """``attempts`` counts this attempt too."""
    match result:
        case Delivered(via_relay=True):
            return Decision(Status.SENT, "sent", None, delivered_at=now)
        case Delivered():
            return Decision(Status.DELIVERED, "delivered", None, delivered_at=now)
        case HardFail():
            return Decision(Status.BOUNCED, "bounced", None)
        case Refused():
            return Decision(Status.REJECTED, "rejected", None)
        case SoftFail(retry_after=hint):
            if should_give_up(created_at, now, max_age):
                return Decision(Status.FAILED, "failed", None)
            delay = next_delay(attempts, schedule_minutes, hint=hint)
            return Decision(Status.DEFERRED, "deferred", now + delay)
    raise TypeError(f"not a delivery result: {result!r}")
