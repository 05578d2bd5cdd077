"""``/metrics``: served to this machine or to the bearer token, and cheap at any history.

Everything here runs on loopback, so a client on another host is what a reverse proxy on
this machine forwards: a trusted proxy (``TRUSTED_PROXIES=127.0.0.1``) naming a remote
client in ``X-Forwarded-For``, or a proxy the settings do not know. The query's cost is
measured over a few hundred thousand deliveries written in bulk SQL, on both databases.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import (
    Integer,
    bindparam,
    case,
    func,
    insert,
    literal,
    null,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.services.container import Services
from posthorn.settings import Settings
from posthorn.store import metrics
from posthorn.store.database import Database
from posthorn.store.tables import UtcDateTime, deliveries, emails, utcnow
from tests.conftest import LiveServer, make_settings
from tests.support.dns import DnsServer

TOKEN = "metrics-token-for-tests"
REMOTE = {"X-Forwarded-For": "203.0.113.7"}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dns: DnsServer) -> Settings:
    """Behind a reverse proxy on this machine, with a metrics token."""
    return make_settings(
        tmp_path,
        database_url,
        dns_nameservers=[dns.nameserver],
        trusted_proxies=["127.0.0.1", "::1"],
        metrics_token=TOKEN,
    )


@pytest.fixture
async def tokenless_http(
    settings: Settings, services: Services
) -> AsyncIterator[httpx.AsyncClient]:
    """The same deployment without a metrics token."""
    server = LiveServer(settings.model_copy(update={"metrics_token": ""}), services)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        await server.stop()


async def test_a_client_on_this_machine_gets_the_metrics(
    settings: Settings, services: Services
) -> None:
    """With no proxy named on this machine, a loopback client is local, token or not."""
    for token in (TOKEN, ""):
        direct = settings.model_copy(update={"trusted_proxies": [], "metrics_token": token})
        server = LiveServer(direct, services)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                response = await client.get("/metrics")
        finally:
            await server.stop()
        assert response.status_code == 200, response.text
        assert 'posthorn_deliveries{status="queued"} 0' in response.text


async def test_a_proxy_on_this_machine_that_names_no_client_is_not_local(
    http: httpx.AsyncClient, tokenless_http: httpx.AsyncClient
) -> None:
    """A reverse proxy on loopback that adds no forwarding header (nginx's default) forwards
    strangers: once it is named in TRUSTED_PROXIES, its requests need the token."""
    assert (await http.get("/metrics")).status_code == 401
    assert (await tokenless_http.get("/metrics")).status_code == 403
    allowed = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200, allowed.text


async def test_a_remote_client_through_a_trusted_proxy_needs_the_token(
    http: httpx.AsyncClient,
) -> None:
    for headers in (REMOTE, {**REMOTE, "Authorization": "Bearer wrong"}):
        refused = await http.get("/metrics", headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "posthorn_" not in refused.text and "bearer token" in refused.json()["detail"]
    allowed = await http.get("/metrics", headers={**REMOTE, "Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200 and "posthorn_queue_due 0" in allowed.text


async def test_without_a_token_only_this_machine_is_served(
    tokenless_http: httpx.AsyncClient,
) -> None:
    for headers in (
        REMOTE,
        {**REMOTE, "Authorization": "Bearer anything"},
        {"X-Real-IP": "203.0.113.7"},
        {"Forwarded": "for=203.0.113.7"},
        # A proxy on this machine forwarding a local client: still not served (it cannot be
        # told from one forwarding anyone), and the header cannot be forged towards access.
        {"X-Forwarded-For": "127.0.0.1"},
    ):
        refused = await tokenless_http.get("/metrics", headers=headers)
        assert refused.status_code == 403, (headers, refused.text)
        assert "POSTHORN_METRICS_TOKEN" in refused.json()["detail"]


async def test_an_untrusted_proxy_on_this_machine_is_not_local(
    settings: Settings, services: Services
) -> None:
    """Without TRUSTED_PROXIES the forwarded address is not believed, and the peer (the proxy,
    on loopback) does not make the request local either."""
    server = LiveServer(settings.model_copy(update={"trusted_proxies": []}), services)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            refused = await client.get("/metrics", headers=REMOTE)
            allowed = await client.get(
                "/metrics", headers={**REMOTE, "Authorization": f"bearer {TOKEN}"}
            )
    finally:
        await server.stop()
    assert refused.status_code == 401
    assert allowed.status_code == 200


# The cost of a scrape.

ROWS = 300_000
OPEN_EVERY = 100  # one delivery in a hundred still in the queue


async def fill(conn: AsyncConnection, email_id: str, account_id: str, rows: int) -> None:
    """``rows`` deliveries in one INSERT … SELECT: most finished, every OPEN_EVERY-th queued
    or deferred."""
    now = utcnow()
    if conn.dialect.name == "postgresql":
        numbers = func.generate_series(1, rows).table_valued("n").render_derived(name="numbers")
        source = select(numbers.c.n).select_from(numbers).subquery()
    else:
        seed = select(literal(1, Integer).label("n")).cte("numbers", recursive=True)
        seed = seed.union_all(select(seed.c.n + 1).where(seed.c.n < rows))
        source = select(seed.c.n).subquery()
    n = source.c.n
    is_open = n % OPEN_EVERY == 0
    due = bindparam("due", now, type_=UtcDateTime())
    stamp = bindparam("stamp", now, type_=UtcDateTime())
    status = case(
        (is_open & (n % (2 * OPEN_EVERY) == 0), "deferred"),
        (is_open, "queued"),
        else_="delivered",
    )
    await conn.execute(
        insert(deliveries).from_select(
            [
                "email_id",
                "account_id",
                "recipient",
                "kind",
                "status",
                "attempts",
                "next_attempt_at",
                "created_at",
                "updated_at",
            ],
            select(
                literal(email_id),
                literal(account_id),
                literal("user@example.test"),
                literal("to"),
                status,
                literal(1),
                case((is_open, due), else_=null()),
                stamp,
                stamp,
            ).select_from(source),
        )
    )


async def plan_of(conn: AsyncConnection) -> str:
    compiled = metrics.QUEUE_COUNTS.compile(
        dialect=conn.dialect, compile_kwargs={"literal_binds": True}
    )
    prefix = "EXPLAIN" if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
    rows = await conn.execute(text(f"{prefix} {compiled}"))
    return "\n".join(" ".join(str(part) for part in row) for row in rows)


async def timed(conn: AsyncConnection, query: object, repeat: int = 5) -> float:
    """The best of ``repeat`` runs, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        await conn.execute(query)  # type: ignore[call-overload]
        best = min(best, time.perf_counter() - started)
    return best * 1000


async def test_counting_the_queue_reads_an_index_over_the_queue_only(
    db: Database, services: Services, account: dict[str, str]
) -> None:
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(
            insert(emails).values(
                id="e-bulk",
                account_id=account["account_id"],
                source="api",
                message_id="<bulk@posthorn.test>",
                from_header="a@acme.test",
                from_email="a@acme.test",
                to_addrs=[],
                cc_addrs=[],
                bcc_addrs=[],
                subject="bulk",
                headers={},
                tags=[],
                attachments=[],
                status="delivered",
                size=1,
                raw=b"x",
                created_at=now,
                updated_at=now,
            )
        )
        await fill(conn, "e-bulk", account["account_id"], ROWS)
    # What autovacuum does on a live PostgreSQL: statistics, and the visibility map that lets
    # an index-only scan skip the table.
    async with db.engine.connect() as raw:
        autocommit = await raw.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("ANALYZE" if db.is_sqlite else "VACUUM ANALYZE deliveries"))
    async with db.read() as conn:
        plan = await plan_of(conn)
        counts = await metrics.queue_counts(conn)
        whole_table = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
        before_ms = await timed(conn, whole_table)
        after_ms = await timed(conn, metrics.QUEUE_COUNTS)
    name = "sqlite" if db.is_sqlite else "postgresql"
    print(
        f"\n{name}: {ROWS} deliveries, {ROWS // OPEN_EVERY} in the queue; "
        f"GROUP BY over all {before_ms:.1f} ms, queue index {after_ms:.1f} ms\n{plan}"
    )
    assert counts == {"queued": ROWS // OPEN_EVERY // 2, "deferred": ROWS // OPEN_EVERY // 2}
    if name == "postgresql":
        assert "Index Only Scan using ix_deliveries_queue" in plan, plan
    else:
        assert "USING COVERING INDEX ix_deliveries_queue" in plan, plan
