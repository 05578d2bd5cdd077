"""Quota arithmetic over fixed windows: hourly, daily and monthly counts per scope.

A scope is what a limit applies to (``dom:<id>`` for a domain, ``snd:<id>`` for a sender).
Windows are UTC calendar periods, so "daily" resets at midnight UTC, as users read it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Period = Literal["hour", "day", "month"]
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str
    period: Period
    limit: int
    label: str  # e.g. "daily limit of domain acme.test"


@functools.lru_cache(maxsize=64)
def window(period: Period, now: datetime) -> str:
    # Cached: a group commit asks for the same few windows of one ``now`` many times.
    if period == "hour":
        return now.strftime("h%Y%m%d%H")
    if period == "day":
        return now.strftime("d%Y%m%d")
    return now.strftime("m%Y%m")


def window_end(period: Period, now: datetime) -> datetime:
    if period == "hour":
        return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def key(limit: Limit, now: datetime) -> Key:
    return (limit.scope, window(limit.period, now))


@dataclass(frozen=True, slots=True)
class Exceeded:
    limit: Limit
    used: int
    retry_after: int  # seconds until the window resets


def check(
    limits: Sequence[Limit], used: Mapping[Key, int], wanted: int, now: datetime
) -> Exceeded | None:
    """The first limit that ``wanted`` more would break, given what is ``used``."""
    for limit in limits:
        count = used.get(key(limit, now), 0)
        if count + wanted > limit.limit:
            wait = window_end(limit.period, now) - now
            return Exceeded(limit, count, max(1, int(wait.total_seconds()) + 1))
    return None


def remaining(limit: int, used: int) -> int:
    return max(0, limit - used)
