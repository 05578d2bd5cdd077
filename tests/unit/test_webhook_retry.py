"""The webhook retry schedule, Retry-After, and when an endpoint is disabled."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from posthorn.domain.webhook_retry import (
    RETRY_WINDOW,
    SCHEDULE,
    backoff,
    decide,
    disable_reason,
    parse_retry_after,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_the_schedule_is_the_documented_one_and_the_last_step_repeats() -> None:
    steps = [backoff(n, jitter=0) for n in range(1, 10)]
    assert steps[:7] == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    ]
    assert steps[8] == timedelta(hours=10)


def test_jitter_stays_within_ten_percent() -> None:
    rng = random.Random(7)
    for _ in range(200):
        delay = backoff(4, rng=rng)
        assert timedelta(hours=1.8) <= delay <= timedelta(hours=2.2)


def test_a_dead_endpoint_is_retried_for_about_three_days_then_given_up() -> None:
    created = now = NOW
    attempts = 0
    while True:
        attempts += 1
        verdict = decide(status_code=503, attempts=attempts, created_at=created, now=now, jitter=0)
        if verdict.status == "failed":
            break
        assert verdict.status == "pending" and verdict.next_attempt_at is not None
        now = verdict.next_attempt_at
        assert attempts < 50
    assert attempts == 12
    assert timedelta(days=2.5) < now - created <= RETRY_WINDOW


@pytest.mark.parametrize("code", [200, 201, 204, 299])
def test_2xx_is_delivered(code: int) -> None:
    verdict = decide(status_code=code, attempts=1, created_at=NOW, now=NOW)
    assert verdict.status == "delivered" and verdict.next_attempt_at is None


@pytest.mark.parametrize("code", [None, 301, 302, 400, 404, 429, 500, 503])
def test_everything_else_is_retried(code: int | None) -> None:
    verdict = decide(status_code=code, attempts=1, created_at=NOW, now=NOW, jitter=0)
    assert verdict.status == "pending"
    assert verdict.next_attempt_at == NOW + SCHEDULE[0]


def test_410_gives_up_at_once() -> None:
    assert decide(status_code=410, attempts=1, created_at=NOW, now=NOW).status == "failed"


def test_retry_after_on_429_is_honoured_when_longer_than_the_schedule() -> None:
    later = decide(
        status_code=429,
        attempts=1,
        created_at=NOW,
        now=NOW,
        retry_after=timedelta(minutes=10),
        jitter=0,
    )
    assert later.next_attempt_at == NOW + timedelta(minutes=10)
    sooner = decide(
        status_code=429, attempts=3, created_at=NOW, now=NOW, retry_after=timedelta(seconds=1)
    )
    assert sooner.next_attempt_at is not None
    assert sooner.next_attempt_at >= NOW + timedelta(minutes=27)
    # Beyond the retry window: the message fails rather than waiting for ever.
    too_late = decide(
        status_code=429, attempts=1, created_at=NOW, now=NOW, retry_after=timedelta(days=4)
    )
    assert too_late.status == "failed"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        ("Mon, 23 Nov 2026 12:05:00 GMT", timedelta(minutes=5)),
        ("Mon, 23 Nov 2026 11:00:00 GMT", timedelta(0)),
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_disable_reasons() -> None:
    assert "410" in (disable_reason(status_code=410, failing_since=None, now=NOW) or "")
    assert disable_reason(status_code=500, failing_since=NOW - timedelta(days=4), now=NOW) is None
    reason = disable_reason(status_code=500, failing_since=NOW - timedelta(days=5), now=NOW)
    assert reason is not None and "2026-11-18T12:00:00Z" in reason and "5 days" in reason
    assert disable_reason(status_code=None, failing_since=None, now=NOW) is None
