"""When to try a deferred delivery again, and when to give up (RFC 5321 §4.5.4.1).

The RFC asks for at least 30 minutes between retries of one message and a give-up time of at
least 4-5 days; we start faster (greylisting usually clears within minutes) and slow down.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

JITTER = 0.1  # ± 10 %, so a burst of deferrals does not come back as a burst


def next_delay(
    attempts: int,
    schedule_minutes: Sequence[int],
    *,
    hint: timedelta | None = None,
    rng: random.Random | None = None,
) -> timedelta:
    """The wait after the ``attempts``-th failed attempt (1-based); the last step repeats.

    An explicit "try again in N minutes" from the remote server (``hint``) is honoured when it
    asks for longer than the schedule would wait.
    """
    if not schedule_minutes:
        raise ValueError("the retry schedule is empty")
    step = schedule_minutes[min(max(attempts, 1), len(schedule_minutes)) - 1]
    delay = timedelta(minutes=step)
    if hint is not None and hint > delay:
        delay = hint
    spread = (rng or random).uniform(-JITTER, JITTER)
    return delay * (1 + spread)


def should_give_up(created_at: datetime, now: datetime, max_age: timedelta) -> bool:
    """Whether a message queued at ``created_at`` has been retried long enough."""
    return now - created_at >= max_age
