"""Statuses, permissions, retry timing, outcomes and the custom-header policy."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from posthorn.domain.custom_headers import check_header
from posthorn.domain.outcomes import decide
from posthorn.domain.permissions import Permission, allows
from posthorn.domain.results import Attempt, Delivered, HardFail, SoftFail
from posthorn.domain.retry import next_delay, should_give_up
from posthorn.domain.statuses import Status, aggregate, label

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SCHEDULE = [1, 5, 15, 30, 60]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], Status.QUEUED),
        (["queued"], Status.QUEUED),
        (["delivered", "delivered"], Status.DELIVERED),
        (["delivered", "deferred"], Status.DEFERRED),
        (["delivered", "bounced"], Status.DELIVERED),
        (["bounced", "failed"], Status.BOUNCED),
        (["sent", "queued"], Status.QUEUED),
        (["rejected"], Status.REJECTED),
    ],
)
def test_aggregate_status(statuses: list[str], expected: Status) -> None:
    assert aggregate(statuses) is expected


def test_labels_follow_the_seed() -> None:
    assert label("delivered") == "Delivered"
    assert label(Status.DEFERRED) == "Delayed"


def test_permissions_are_ordered() -> None:
    assert allows(Permission.FULL_ACCESS, Permission.SENDING_ACCESS)
    assert allows(Permission.SENDING_ACCESS, Permission.READ_ONLY)
    assert not allows(Permission.READ_ONLY, Permission.SENDING_ACCESS)
    assert not allows(Permission.SENDING_ACCESS, Permission.FULL_ACCESS)


def test_retry_schedule_steps_then_repeats_with_bounded_jitter() -> None:
    rng = random.Random(7)
    for attempts, minutes in [(1, 1), (2, 5), (5, 60), (9, 60)]:
        delay = next_delay(attempts, SCHEDULE, rng=rng)
        assert timedelta(minutes=minutes * 0.9) <= delay <= timedelta(minutes=minutes * 1.1)


def test_retry_honours_a_longer_hint_only() -> None:
    rng = random.Random(1)
    long = next_delay(1, SCHEDULE, hint=timedelta(minutes=20), rng=rng)
    assert timedelta(minutes=18) <= long <= timedelta(minutes=22)
    short = next_delay(3, SCHEDULE, hint=timedelta(seconds=5), rng=rng)
    assert short >= timedelta(minutes=13)


def test_give_up_after_max_age() -> None:
    assert not should_give_up(NOW - timedelta(days=4), NOW, timedelta(days=5))
    assert should_give_up(NOW - timedelta(days=5), NOW, timedelta(days=5))


def _decide(result: object, created: datetime = NOW) -> object:
    return decide(
        result,  # type: ignore[arg-type]
        attempts=1,
        created_at=created,
        now=NOW,
        schedule_minutes=SCHEDULE,
        max_age=timedelta(days=5),
    )


def test_outcomes() -> None:
    ok = Attempt(code=250, message="ok")
    assert _decide(Delivered(ok)).status is Status.DELIVERED  # type: ignore[attr-defined]
    relayed = _decide(Delivered(ok, via_relay=True))
    assert relayed.status is Status.SENT and relayed.delivered_at == NOW  # type: ignore[attr-defined]
    bounced = _decide(HardFail(Attempt(code=550), reason="user unknown"))
    assert bounced.status is Status.BOUNCED and bounced.next_attempt_at is None  # type: ignore[attr-defined]
    deferred = _decide(SoftFail(Attempt(code=451), reason="greylisted"))
    assert deferred.status is Status.DEFERRED  # type: ignore[attr-defined]
    assert NOW < deferred.next_attempt_at <= NOW + timedelta(minutes=2)  # type: ignore[attr-defined]
    old = _decide(SoftFail(Attempt(code=451), reason="x"), created=NOW - timedelta(days=6))
    assert old.status is Status.FAILED and old.event_type == "failed"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("X-Campaign", "spring", None),
        ("List-Id", "<news.acme.test>", None),
        ("X-Tab", "a\tb", None),
        ("from", "x@y", "header_forbidden"),
        ("Content-Transfer-Encoding", "8bit", "header_forbidden"),
        ("Message-ID", "<x@y>", "header_forbidden"),
        ("Return-Path", "<x@y>", "header_forbidden"),
        ("Received", "from x", "header_forbidden"),
        ("X-A", "a\r\nBcc: b@c", "header_invalid"),
        ("X-A", "a\nb", "header_invalid"),
        ("X-A", "a\rb", "header_invalid"),
        ("X-A", "a\x00", "header_invalid"),
        ("X A", "v", "header_invalid"),
        ("X:A", "v", "header_invalid"),
        ("X-Ä", "v", "header_invalid"),
        ("", "v", "header_invalid"),
    ],
)
def test_custom_header_policy(name: str, value: str, problem: str | None) -> None:
    assert check_header(name, value) == problem
