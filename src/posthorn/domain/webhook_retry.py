"""When to send a webhook message again, when to give up, and when to disable an endpoint.

The schedule follows the common practice of webhook senders (Svix, Standard Webhooks'
reference implementation): a quick second try, then longer and longer waits, 10 hours
repeating, for about three days in all. Each wait is spread by ±10 % so that the messages of
an outage do not all come back at the same second. Pure: the caller brings the time and the
random number source.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
)
RETRY_WINDOW = timedelta(days=3)  # no retry is planned later than this after the event
DISABLE_AFTER = timedelta(days=5)  # an endpoint failing this long without a success is disabled
JITTER = 0.1
GONE = 410  # RFC 9110 §15.5.11: "likely to be permanent": the endpoint is disabled at once
# RFC 9110 §10.2.3: Retry-After goes with 503 and, by RFC 6585 §4, with 429.
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The message's state after an attempt: ``delivered``, ``pending`` (with the time of the
    next attempt) or ``failed``."""

    status: str
    next_attempt_at: datetime | None = None


def is_success(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300


def backoff(
    attempts: int,
    schedule: Sequence[timedelta] = SCHEDULE,
    *,
    jitter: float = JITTER,
    rng: random.Random | None = None,
) -> timedelta:
    """The wait after the ``attempts``-th failed attempt (1-based); the last step repeats."""
    if not schedule:
        raise ValueError("the retry schedule is empty")
    step = schedule[min(max(attempts, 1), len(schedule)) - 1]
    return step * (1 + (rng or random).uniform(-jitter, jitter))


def parse_retry_after(value: str | None, *, now: datetime) -> timedelta | None:
    """RFC 9110 §10.2.3: ``Retry-After`` is delay-seconds or an HTTP-date; None when absent
    or unreadable (then the schedule decides alone)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 §5.6.7: HTTP-dates are always in GMT
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def decide(
    *,
    status_code: int | None,
    attempts: int,
    created_at: datetime,
    now: datetime,
    retry_after: timedelta | None = None,
    schedule: Sequence[timedelta] = SCHEDULE,
    window: timedelta = RETRY_WINDOW,
    jitter: float = JITTER,
    rng: random.Random | None = None,
) -> Verdict:
    """What happens to a message after its ``attempts``-th attempt got ``status_code``
    (None: no answer at all, e.g. a timeout or a refused connection)."""
    if is_success(status_code):
        return Verdict("delivered")
    if status_code == GONE:
        return Verdict("failed")
    delay = backoff(attempts, schedule, jitter=jitter, rng=rng)
    if status_code in RETRY_AFTER_STATUSES and retry_after is not None:
        delay = max(delay, retry_after)
    at = now + delay
    if at > created_at + window:
        return Verdict("failed")
    return Verdict("pending", at)


def disable_reason(
    *,
    status_code: int | None,
    failing_since: datetime | None,
    now: datetime,
    disable_after: timedelta = DISABLE_AFTER,
) -> str | None:
    """Why an endpoint must be disabled after a failed attempt, or None to keep it."""
    if status_code == GONE:
        return "the endpoint answered 410 Gone"
    if failing_since is not None and now - failing_since >= disable_after:
        since = failing_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"every attempt failed since {since} ({_span(disable_after)} without a success)"
    return None


def _span(value: timedelta) -> str:
    if value >= timedelta(days=1) and value % timedelta(days=1) == timedelta(0):
        return f"{value.days} days" if value.days != 1 else "1 day"
    return f"{int(value.total_seconds())} s"
