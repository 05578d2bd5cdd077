"""``/v1/stats``: sending statistics, totals and a series per hour or day."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from posthorn.api.deps import PrincipalDep, ServicesDep
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.api.routes.emails import time_filter

router = APIRouter(prefix="/v1/stats", route_class=GuardedRoute, tags=["stats"])


class CountsOut(BaseModel):
    sent: int = Field(description="Recipients queued")
    delivered: int = Field(description="Accepted by the recipient's MX or an upstream relay")
    deferred: int
    bounced: int
    rejected: int
    failed: int
    complained: int
    opened: int = Field(description="Unique per email and recipient, machine opens excluded")
    clicked: int = Field(description="Unique per email and recipient, machine clicks excluded")
    unsubscribed: int


class RatesOut(BaseModel):
    """Fractions rounded to 4 decimals (0.9512 = 95.12 %); 0 when the denominator is 0."""

    delivery: float = Field(description="delivered / sent")
    open: float = Field(description="opened / delivered")
    click_through: float = Field(description="clicked / delivered")
    bounce: float = Field(description="bounced / sent")
    unsubscribe: float = Field(description="unsubscribed / delivered")


class BucketOut(CountsOut):
    start: str = Field(description="Start of the hour or day, UTC")
    rates: RatesOut


class StatsOut(BaseModel):
    from_: str = Field(alias="from")
    to: str
    interval: str
    domain: str | None
    tag: str | None
    totals: CountsOut
    rates: RatesOut
    series: list[BucketOut]


@router.get("", response_model=StatsOut, response_model_by_alias=True)
async def get_stats(
    svc: ServicesDep,
    caller: PrincipalDep,
    from_: Annotated[
        str | None,
        Query(alias="from", description="ISO-8601, inclusive; default: 7 days before `to`"),
    ] = None,
    to: Annotated[str | None, Query(description="ISO-8601, exclusive; default: now")] = None,
    interval: Annotated[str, Query(description="hour or day")] = "day",
    domain: Annotated[str | None, Query(description="The From domain", max_length=253)] = None,
    tag: Annotated[
        str | None, Query(description="name:value, or name for any value", max_length=600)
    ] = None,
) -> dict[str, Any]:
    """Counts and rates for the range (at most 366 days, 1,000 buckets), with one entry per
    hour or day in UTC, empty ones included."""
    report = await svc.stats.report(
        caller.account_id,
        start=time_filter("from", from_),
        end=time_filter("to", to),
        interval=interval,
        domain=domain,
        tag=tag,
    )
    return {
        "from": timestamp(report.start),
        "to": timestamp(report.end),
        "interval": report.interval,
        "domain": report.domain,
        "tag": report.tag,
        "totals": report.totals,
        "rates": report.rates,
        "series": [
            {"start": timestamp(b.start), **b.counts, "rates": b.rates} for b in report.series
        ],
    }
