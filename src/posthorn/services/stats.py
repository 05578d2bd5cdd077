"""Sending statistics: counts and rates over a time range, with a series per hour or day.

What each number counts (event types in brackets):

* ``sent`` — recipients queued [queued]; ``delivered`` — accepted by the recipient's MX or
  handed to an upstream relay [delivered, sent]; ``deferred``, ``bounced``, ``rejected``,
  ``failed`` — one per such event.
* ``opened``, ``clicked``, ``unsubscribed``, ``complained`` — once per email and recipient,
  in the bucket of the first such event in the range; machine opens and clicks (privacy
  proxies, link scanners) are not counted.

Rates are fractions rounded to four decimals (0.9512 is 95.12 %), 0 when the denominator
is 0: delivery = delivered/sent, open = opened/delivered, click_through = clicked/delivered,
bounce = bounced/sent, unsubscribe = unsubscribed/delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from posthorn.domain.domain_names import normalise_domain
from posthorn.errors import InvalidRequest
from posthorn.store import stats as repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

INTERVALS = {"hour": 3600, "day": 86400}
DEFAULT_RANGE = timedelta(days=7)
MAX_RANGE = timedelta(days=366)
MAX_BUCKETS = 1000
MAX_TAG_CHARS = 256
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

METRICS = (
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "rejected",
    "failed",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
)
METRIC_OF_EVENT = {
    "queued": "sent",
    "sent": "delivered",  # accepted by an upstream relay: the last hop we see
    "delivered": "delivered",
    "deferred": "deferred",
    "bounced": "bounced",
    "rejected": "rejected",
    "failed": "failed",
    "complained": "complained",
    "opened": "opened",
    "clicked": "clicked",
    "unsubscribed": "unsubscribed",
}
# rate → (numerator, denominator)
RATES = {
    "delivery": ("delivered", "sent"),
    "open": ("opened", "delivered"),
    "click_through": ("clicked", "delivered"),
    "bounce": ("bounced", "sent"),
    "unsubscribe": ("unsubscribed", "delivered"),
}


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    counts: dict[str, int]
    rates: dict[str, float]


@dataclass(frozen=True, slots=True)
class Report:
    start: datetime
    end: datetime
    interval: str
    domain: str | None
    tag: str | None
    totals: dict[str, int]
    rates: dict[str, float]
    series: list[Bucket]


def rates(counts: dict[str, int]) -> dict[str, float]:
    return {
        name: round(counts[top] / counts[bottom], 4) if counts[bottom] else 0.0
        for name, (top, bottom) in RATES.items()
    }


def bucket_span(start: datetime, end: datetime, step: int) -> range:
    """The bucket numbers (Unix time // step) that overlap [start, end)."""
    length = timedelta(seconds=step)
    first = (start - EPOCH) // length
    after = -((EPOCH - end) // length)  # the ceiling: an end on a boundary opens no bucket
    return range(first, after)


def parse_tag(text: str | None) -> tuple[str | None, str | None]:
    """``"name:value"`` → (name, value); ``"name"`` → (name, None). Split at the first ':'."""
    if text is None or not text.strip():
        return None, None
    if len(text) > 2 * MAX_TAG_CHARS + 1:
        raise InvalidRequest("invalid_filter", field="tag", value=text[:40])
    name, colon, value = text.partition(":")
    name = name.strip()
    if not name:
        raise InvalidRequest("invalid_filter", field="tag", value=text[:40])
    return name, (value if colon else None)


class Stats:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def report(
        self,
        account_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        interval: str = "day",
        domain: str | None = None,
        tag: str | None = None,
    ) -> Report:
        """Counts, rates and a series for [start, end) (default: the last 7 days).

        Raises :class:`InvalidRequest` for an unknown interval, a range that is empty,
        longer than 366 days, or cut into more than 1,000 buckets, or a bad filter.
        """
        step = INTERVALS.get(interval)
        if step is None:
            raise InvalidRequest("stats_interval", field="interval", value=interval[:20])
        end = end or utcnow()
        start = start or end - DEFAULT_RANGE
        if start >= end:
            raise InvalidRequest("stats_range_order", field="from")
        if end - start > MAX_RANGE:
            days = -(-(end - start) // timedelta(days=1))
            raise InvalidRequest(
                "stats_range_too_long", field="from", days=days, limit=MAX_RANGE.days
            )
        span = bucket_span(start, end, step)
        if len(span) > MAX_BUCKETS:
            raise InvalidRequest(
                "stats_too_many_buckets",
                field="interval",
                count=len(span),
                interval=interval,
                limit=MAX_BUCKETS,
            )
        domain_name = _domain(domain)
        tag_name, tag_value = parse_tag(tag)
        flt = repo.StatsFilter(
            account_id=account_id,
            start=start,
            end=end,
            step=step,
            domain=domain_name,
            tag_name=tag_name,
            tag_value=tag_value,
        )
        async with self._db.read() as conn:
            found = await repo.bucket_counts(conn, flt, span)
        return _report(flt, interval, span, found, tag=tag)


def _domain(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    try:
        return normalise_domain(text)
    except ValueError as exc:
        raise InvalidRequest("invalid_filter", field="domain", value=text[:40]) from exc


def _report(
    flt: repo.StatsFilter,
    interval: str,
    span: range,
    found: dict[tuple[int, str], int],
    *,
    tag: str | None,
) -> Report:
    per_bucket: dict[int, dict[str, int]] = {index: dict.fromkeys(METRICS, 0) for index in span}
    for (index, kind), n in found.items():
        metric = METRIC_OF_EVENT.get(kind)
        if metric is not None and index in per_bucket:
            per_bucket[index][metric] += n
    totals = dict.fromkeys(METRICS, 0)
    series = []
    for index in span:
        counts = per_bucket[index]
        for metric, n in counts.items():
            totals[metric] += n
        start = datetime.fromtimestamp(index * flt.step, UTC)
        series.append(Bucket(start=start, counts=counts, rates=rates(counts)))
    return Report(
        start=flt.start,
        end=flt.end,
        interval=interval,
        domain=flt.domain,
        tag=tag.strip() if tag and tag.strip() else None,
        totals=totals,
        rates=rates(totals),
        series=series,
    )
