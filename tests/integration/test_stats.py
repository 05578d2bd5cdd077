"""``/v1/stats`` over real HTTP on SQLite and PostgreSQL: counts, unique engagement, rates,
UTC buckets, filters by From domain and tag, range validation and account isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from posthorn.services.container import Services
from posthorn.services.intake import SendRequest, Tag
from posthorn.store.database import Database
from posthorn.store.events import insert_events
from posthorn.store.tables import utcnow

DAY = datetime(2026, 3, 10, tzinfo=UTC)


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute, seconds=second)


def event(
    account_id: str,
    kind: str,
    when: datetime,
    email: str = "e1",
    recipient: str = "a@example.test",
    *,
    sender: str = "hello@acme.test",
    machine: bool | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {} if machine is None else {"machine": machine}
    return {
        "account_id": account_id,
        "email_id": email,
        "type": kind,
        "recipient": recipient,
        "sender": sender,
        "source": "api",
        "data": data,
        "created_at": when,
    }


async def write(db: Database, rows: list[dict[str, Any]]) -> None:
    async with db.write() as conn:
        await insert_events(conn, rows)


async def stats(
    http: httpx.AsyncClient, account: dict[str, str], permission: str = "read_only", **params: Any
) -> dict[str, Any]:
    response = await http.get("/v1/stats", params=params, headers=h(account, permission))
    assert response.status_code == 200, response.text
    return dict(response.json())


def history(account_id: str) -> list[dict[str, Any]]:
    """Four recipients of three emails on DAY, with every kind of event."""
    a, b, c, d = "a@example.test", "b@example.test", "c@example.test", "d@example.test"
    e = account_id
    return [
        event(e, "queued", at(10), "e1", a),
        event(e, "queued", at(10), "e1", b),
        event(e, "queued", at(10), "e2", c),
        event(e, "queued", at(10), "e3", d),
        event(e, "delivered", at(10, 1), "e1", a),
        event(e, "delivered", at(10, 1), "e1", b),
        event(e, "sent", at(10, 1), "e2", c),  # handed to a relay
        event(e, "deferred", at(10, 1), "e3", d),
        event(e, "deferred", at(10, 30), "e3", d),
        event(e, "bounced", at(11, 30), "e3", d),
        event(e, "opened", at(10, 5), "e1", a),
        event(e, "opened", at(11, 0), "e1", a),  # the same reader again: not counted
        event(e, "opened", at(12, 0), "e1", b, machine=True),  # a privacy proxy
        event(e, "opened", at(11, 10), "e2", c, machine=False),
        event(e, "clicked", at(10, 6), "e1", a),
        event(e, "clicked", at(11, 6), "e1", a),
        event(e, "clicked", at(12, 1), "e1", b, machine=True),  # a link scanner
        event(e, "unsubscribed", at(11, 7), "e1", a),
        event(e, "complained", at(12, 30), "e2", c),
        event(e, "rejected", at(12, 40), "e4", "x@example.test"),
    ]


ZERO = dict.fromkeys(
    (
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
    ),
    0,
)
NO_RATES = {"delivery": 0.0, "open": 0.0, "click_through": 0.0, "bounce": 0.0, "unsubscribe": 0.0}


async def test_counts_unique_engagement_and_rates(
    http: httpx.AsyncClient, account: dict[str, str], db: Database
) -> None:
    await write(db, history(account["account_id"]))
    body = await stats(http, account, **{"from": "2026-03-10", "to": "2026-03-11"})
    assert body["from"] == "2026-03-10T00:00:00.000000Z"
    assert body["to"] == "2026-03-11T00:00:00.000000Z"
    assert body["interval"] == "day" and body["domain"] is None and body["tag"] is None
    assert body["totals"] == {
        **ZERO,
        "sent": 4,
        "delivered": 3,
        "deferred": 2,
        "bounced": 1,
        "rejected": 1,
        "complained": 1,
        "opened": 2,
        "clicked": 1,
        "unsubscribed": 1,
    }
    assert body["rates"] == {
        "delivery": 0.75,
        "open": 0.6667,
        "click_through": 0.3333,
        "bounce": 0.25,
        "unsubscribe": 0.3333,
    }
    (only,) = body["series"]
    assert only["start"] == "2026-03-10T00:00:00.000000Z"
    assert {k: only[k] for k in ZERO} == body["totals"] and only["rates"] == body["rates"]


async def test_hourly_series_in_utc_with_empty_buckets(
    http: httpx.AsyncClient, account: dict[str, str], db: Database
) -> None:
    await write(db, history(account["account_id"]))
    body = await stats(
        http,
        account,
        interval="hour",
        **{"from": "2026-03-10T10:00:00+02:00", "to": "2026-03-10T13:00:00Z"},
    )
    series = body["series"]
    assert [b["start"][11:16] for b in series] == ["08:00", "09:00", "10:00", "11:00", "12:00"]
    assert {k: series[0][k] for k in ZERO} == ZERO and series[0]["rates"] == NO_RATES
    ten, eleven, twelve = series[2], series[3], series[4]
    assert (ten["sent"], ten["delivered"], ten["deferred"]) == (4, 3, 2)
    # Each reader counts once, in the hour of the first open or click.
    assert (ten["opened"], ten["clicked"], eleven["opened"], eleven["clicked"]) == (1, 1, 1, 0)
    assert (eleven["bounced"], eleven["unsubscribed"]) == (1, 1)
    assert (twelve["opened"], twelve["clicked"], twelve["complained"]) == (0, 0, 1)
    assert ten["rates"]["delivery"] == 0.75 and eleven["rates"]["delivery"] == 0.0
    assert sum(b["opened"] for b in series) == body["totals"]["opened"] == 2


async def test_the_range_includes_from_and_excludes_to(
    http: httpx.AsyncClient, account: dict[str, str], db: Database
) -> None:
    e = account["account_id"]
    await write(
        db,
        [
            event(e, "queued", at(10), "e1"),
            event(e, "queued", at(11), "e2"),
            event(e, "queued", at(9, 59, 59), "e3"),
        ],
    )
    body = await stats(
        http,
        account,
        interval="hour",
        **{"from": "2026-03-10T10:00:00Z", "to": "2026-03-10T11:00:00Z"},
    )
    assert body["totals"]["sent"] == 1 and len(body["series"]) == 1


async def test_filter_by_from_domain(
    http: httpx.AsyncClient, account: dict[str, str], db: Database
) -> None:
    e = account["account_id"]
    senders = ["a@acme.test", "b@acme.test", "c@sub.acme.test", "d@notacme.test", "e@other.test"]
    await write(db, [event(e, "queued", at(10), f"e{n}", sender=s) for n, s in enumerate(senders)])
    window = {"from": "2026-03-10", "to": "2026-03-11"}
    assert (await stats(http, account, **window))["totals"]["sent"] == 5
    acme = await stats(http, account, domain="ACME.test", **window)
    assert acme["totals"]["sent"] == 2 and acme["domain"] == "acme.test"
    assert (await stats(http, account, domain="sub.acme.test", **window))["totals"]["sent"] == 1
    assert (await stats(http, account, domain="nowhere.test", **window))["totals"]["sent"] == 0
    bad = await http.get(
        "/v1/stats", params={"domain": "not a domain", **window}, headers=h(account)
    )
    assert bad.status_code == 422 and "domain" in bad.json()["detail"]


async def test_filter_by_tag(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    e = account["account_id"]
    tagged = {
        "spring": [Tag("campaign", "spring"), Tag("kind", '50%_off"x')],
        "autumn": [Tag("campaign", "autumn")],
        "none": [],
    }
    ids = {}
    for name, tags in tagged.items():
        accepted = await services.intake.submit(
            SendRequest(
                account_id=e,
                source="api",
                from_="hello@acme.test",
                to=[f"{name}@example.test"],
                subject="hi",
                text="hi",
                tags=tags,
            )
        )
        ids[name] = accepted.id
    now = utcnow()
    await write(
        services.db,
        [event(e, "delivered", now, ids[n], f"{n}@example.test") for n in tagged]
        + [event(e, "opened", now, ids[n], f"{n}@example.test") for n in ("spring", "none")],
    )
    window = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
        "interval": "hour",
    }

    async def totals(tag: str | None) -> tuple[int, int, int]:
        params = {**window, **({"tag": tag} if tag is not None else {})}
        t = (await stats(http, account, **params))["totals"]
        return t["sent"], t["delivered"], t["opened"]

    assert await totals(None) == (3, 3, 2)
    assert await totals("campaign:spring") == (1, 1, 1)
    assert await totals("campaign:autumn") == (1, 1, 0)
    assert await totals("campaign") == (2, 2, 1)
    assert await totals('kind:50%_off"x') == (1, 1, 1)
    assert await totals("kind:50") == (0, 0, 0)
    assert await totals('kind:50%_off"X') == (0, 0, 0)
    assert await totals("campaign:") == (0, 0, 0)  # an empty value is a value
    assert await totals("nosuch") == (0, 0, 0)
    body = await stats(http, account, tag="campaign:spring", **window)
    assert body["tag"] == "campaign:spring"


async def test_the_default_range_is_the_last_seven_days(
    http: httpx.AsyncClient, account: dict[str, str], db: Database
) -> None:
    e = account["account_id"]
    now = utcnow()
    await write(
        db,
        [
            event(e, "queued", now - timedelta(days=1), "e1"),
            event(e, "queued", now - timedelta(days=8), "e2"),
        ],
    )
    body = await stats(http, account)
    start = datetime.fromisoformat(body["from"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(body["to"].replace("Z", "+00:00"))
    assert end - start == timedelta(days=7) and abs(end - now) < timedelta(minutes=1)
    assert body["totals"]["sent"] == 1
    assert len(body["series"]) in (7, 8)  # the partial first and last days are included
    assert body["series"][0]["start"].endswith("T00:00:00.000000Z")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"interval": "week"}, "interval: must be hour or day"),
        ({"from": "2026-03-10", "to": "2026-03-10"}, "from: must be before to"),
        ({"from": "2026-03-11", "to": "2026-03-10"}, "from: must be before to"),
        ({"from": "2025-01-01", "to": "2026-03-10"}, "at most 366 days"),
        ({"from": "2026-01-01", "to": "2026-03-10", "interval": "hour"}, "at most 1000"),
        ({"from": "yesterday"}, "from: 'yesterday' is not a valid filter value"),
        ({"tag": ":x"}, "tag"),
    ],
)
async def test_invalid_ranges_and_filters_are_422(
    http: httpx.AsyncClient, account: dict[str, str], params: dict[str, str], needle: str
) -> None:
    response = await http.get("/v1/stats", params=params, headers=h(account))
    assert response.status_code == 422
    assert needle in response.json()["detail"]


async def test_a_full_year_by_day_is_allowed(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    body = await stats(http, account, **{"from": "2025-03-10", "to": "2026-03-11"})
    assert len(body["series"]) == 366 and body["totals"] == ZERO


async def test_other_accounts_events_are_not_counted(
    http: httpx.AsyncClient, account: dict[str, str], db: Database, services: Services
) -> None:
    other = await services.accounts.create_account("globex")
    key = (await services.accounts.create_key(other.id, name="k")).key
    await write(db, history(account["account_id"]))
    window = {"from": "2026-03-10", "to": "2026-03-11"}
    theirs = await http.get("/v1/stats", params=window, headers={"X-API-KEY": key})
    assert theirs.status_code == 200 and theirs.json()["totals"] == ZERO
    for permission in ("full_access", "sending_access", "read_only"):
        assert (await stats(http, account, permission, **window))["totals"]["sent"] == 4
    assert (await http.get("/v1/stats", params=window)).status_code == 401
