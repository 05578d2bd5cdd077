"""The failed-login throttle's arithmetic: which failures count, and when a network may try
again (the shared, database-backed behaviour is in tests/integration/test_login_throttle.py)."""

from __future__ import annotations

from posthorn.domain.throttle import FailureWindow


def test_buckets_are_a_sixth_of_the_window_in_whole_seconds() -> None:
    window = FailureWindow(limit=3, seconds=60)
    assert window.bucket_seconds == 10
    assert window.bucket(109.9) == 100
    assert FailureWindow(limit=3, seconds=1).bucket_seconds == 1
    assert FailureWindow(limit=3, seconds=7).bucket_seconds == 2


def test_a_failure_counts_for_at_least_the_window() -> None:
    window = FailureWindow(limit=1, seconds=60)
    failed_at = 109.9  # bucket 100
    buckets = [(window.bucket(failed_at), 1)]
    assert window.counted(buckets, failed_at + 60) == 1  # a full window later: still counted
    assert window.counted(buckets, 169.99) == 1
    assert window.counted(buckets, 170.0) == 0  # its bucket's end + the window


def test_retry_after_is_when_enough_old_buckets_have_left() -> None:
    window = FailureWindow(limit=3, seconds=60)
    buckets = [(0, 1), (10, 1), (20, 2)]  # four failures: over the limit of three
    # Two must leave for fewer than three to remain: bucket 10 leaves at 10 + 10 + 60.
    assert window.retry_after(buckets, 25.0) == 55.0
    assert window.retry_after([(0, 2), (10, 1), (20, 1)], 25.0) == 45.0  # bucket 0 is enough
    assert window.retry_after([(0, 1), (10, 1)], 25.0) == 0.0  # under the limit
    # Bucket 0 leaving is not enough when bucket 20 alone holds the limit.
    assert window.retry_after([(0, 1), (20, 3)], 25.0) == 65.0  # 20 + 10 + 60 - 25
    assert window.retry_after(buckets, 200.0) == 0.0


def test_limit_zero_is_off() -> None:
    window = FailureWindow(limit=0, seconds=60)
    assert window.retry_after([(0, 100)], 1.0) == 0.0
