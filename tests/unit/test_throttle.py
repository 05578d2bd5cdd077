"""The failed-login throttle's arithmetic: when a network may try again, and attempts counted
before their outcome is known (the SMTP-side behaviour is in test_smtp_parts.py)."""

from __future__ import annotations

from posthorn.domain.throttle import FailureThrottle


def test_retry_after_is_when_the_oldest_counted_failure_leaves_the_window() -> None:
    throttle = FailureThrottle(limit=3, window=60)
    for t in (10.0, 20.0, 30.0, 40.0):  # four failures: the last three count
        throttle.record("192.0.2.1", t)
    assert throttle.retry_after("192.0.2.1", 45.0) == 35.0  # 20 + 60 - 45
    assert throttle.retry_after("192.0.2.1", 80.0) == 0.0
    assert throttle.retry_after("192.0.2.2", 45.0) == 0.0
    assert FailureThrottle(limit=0, window=60).retry_after("192.0.2.1", 0) == 0.0


def test_charge_counts_first_and_refund_takes_back_only_that_attempt() -> None:
    throttle = FailureThrottle(limit=2, window=60)
    assert throttle.charge("192.0.2.1", 1.0) == 0  # in flight, counted
    assert throttle.charge("192.0.2.1", 2.0) == 0
    assert throttle.charge("192.0.2.1", 3.0) == 58.0  # refused (1 + 60 - 3), not counted
    throttle.refund("192.0.2.1", 2.0)  # the second one succeeded
    assert not throttle.blocked("192.0.2.1", 3.0)
    throttle.refund("192.0.2.1", 2.0)  # twice: nothing more to take back
    throttle.refund("192.0.2.9", 2.0)  # never seen
    assert throttle.charge("192.0.2.1", 4.0) == 0
    assert throttle.blocked("192.0.2.1", 4.0)  # the failure at 1.0 still counts


def test_a_refund_that_empties_a_network_forgets_it() -> None:
    throttle = FailureThrottle(limit=5, window=60)
    throttle.charge("2001:db8::1", 1.0)
    assert len(throttle) == 1
    throttle.refund("2001:db8::2", 1.0)  # the same /64
    assert len(throttle) == 0
