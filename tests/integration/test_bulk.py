"""Bulk jobs over real HTTP: pacing per tick, skipped and invalid recipients, list jobs
rendered per contact and delivered into a real sink, and restart safety."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from posthorn import bulk_runner
from posthorn.bulk_runner import LEASE, TICK, BulkRunner
from posthorn.services.container import Services
from posthorn.store import bulk as bulk_store
from posthorn.store.tables import deliveries, emails, utcnow
from tests.support.delivery import deliver_due
from tests.support.dns import DnsServer
from tests.support.domains import owner
from tests.support.sink import SmtpSink


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


@pytest.fixture
def sink(dns: DnsServer) -> Iterator[SmtpSink]:
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    with SmtpSink(starttls=False) as server:
        yield server


def runner(services: Services, rate: int) -> BulkRunner:
    return BulkRunner(
        services, settings=services.settings.model_copy(update={"bulk_rate_per_second": rate})
    )


async def count(services: Services, table: Any) -> int:
    async with services.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def subject_of(raw: bytes) -> str:
    return str(make_header(decode_header(message_from_bytes(raw)["Subject"])))


async def test_a_paced_job_advances_per_tick_skips_and_completes(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    for blocked in ("blocked0", "blocked1", "blocked3"):
        await http.post(
            "/v1/suppressions", json={"address": f"{blocked}@example.test"}, headers=h(account)
        )
    recipients: list[Any] = [f"user{i}@example.test" for i in range(290)]
    recipients += ["not-an-address", "also@bad@example.test"]
    recipients += [
        "user1@example.test",
        {"email": "blocked3@example.test"},
    ]  # a repeat, a suppressed one
    recipients += [f"blocked{i}@example.test" for i in range(3)]
    created = await http.post(
        "/v1/bulk-jobs",
        json={
            "name": "Launch",
            "from": "News <news@acme.test>",
            "subject": "Hello {{ email }}",
            "text": "Hi",
            "recipients": recipients,
        },
        headers=h(account, "sending_access"),
    )
    assert created.status_code == 200, created.text
    job = created.json()
    assert (
        job["status"] == "queued"
        and job["kind"] == "bulk"
        and job["from"] == "News <news@acme.test>"
    )
    assert job["totals"]["total"] == 297
    assert (job["totals"]["invalid"], job["totals"]["skipped"], job["totals"]["pending"]) == (
        2,
        1,
        294,
    )
    assert job["totals"]["processed"] == 3

    pace = runner(services, 100)
    start = utcnow()
    assert await pace.tick(now=start) == 100
    after_one = (
        await http.get(f"/v1/bulk-jobs/{job['id']}", headers=h(account, "read_only"))
    ).json()
    assert after_one["status"] == "running" and after_one["totals"]["processed"] == 103
    assert await count(services, deliveries) == 100  # the queue got one tick's worth, not the job
    assert await pace.tick(now=start) == 0  # not due again within the same second
    assert await pace.tick(now=start + TICK) == 100
    assert await pace.tick(now=start + 2 * TICK) == 94
    done = (await http.get(f"/v1/bulk-jobs/{job['id']}", headers=h(account))).json()
    assert done["status"] == "done" and done["progress"] == 100.0 and done["next_run_at"] is None
    totals = done["totals"]
    assert (totals["queued"], totals["skipped"], totals["invalid"], totals["pending"]) == (
        291,
        4,
        2,
        0,
    )
    assert totals["processed"] == totals["total"] == 297
    assert await count(services, emails) == 291
    assert await pace.tick(now=start + 3 * TICK) == 0

    skipped = (
        await http.get(f"/v1/bulk-jobs/{job['id']}/recipients?status=skipped", headers=h(account))
    ).json()
    assert skipped["total"] == 4
    reasons = {r["email"]: r["error"] for r in skipped["data"]}
    assert (
        reasons["blocked3@example.test"] == "suppressed: manual"
        and reasons["user1@example.test"] == "duplicate"
    )
    invalid = (
        await http.get(f"/v1/bulk-jobs/{job['id']}/recipients?status=invalid", headers=h(account))
    ).json()
    assert [r["email"] for r in invalid["data"]] == ["not-an-address", "also@bad@example.test"]
    page = (
        await http.get(
            f"/v1/bulk-jobs/{job['id']}/recipients?page=2&per_page=5", headers=h(account)
        )
    ).json()
    assert [r["position"] for r in page["data"]] == [6, 7, 8, 9, 10] and page["data"][0]["email_id"]
    listed = (await http.get("/v1/bulk-jobs", headers=h(account))).json()
    assert listed["total"] == 1 and listed["data"][0]["id"] == job["id"]


async def test_a_list_job_renders_each_contact_skips_the_unsubscribed_and_delivers(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    list_id = (await http.post("/v1/lists", json={"name": "Members"}, headers=h(account))).json()[
        "id"
    ]
    people = [
        {"email": f"m{i}@example.test", "variables": {"name": f"Member {i}"}} for i in range(6)
    ]
    await http.post(f"/v1/lists/{list_id}/contacts", json={"contacts": people}, headers=h(account))
    await http.patch(
        f"/v1/lists/{list_id}/contacts/m1@example.test",
        json={"status": "unsubscribed"},
        headers=h(account),
    )
    await http.post("/v1/suppressions", json={"address": "m2@example.test"}, headers=h(account))
    created = await http.post(
        "/v1/bulk-jobs",
        json={
            "from": "club@acme.test",
            "subject": "Hi {{ name }}",
            "html": '<p>Dear {{ name }}</p><a href="{{ unsubscribe_url }}">stop</a>',
            "list_id": list_id,
        },
        headers=h(account),
    )
    job = created.json()
    assert job["kind"] == "list" and job["totals"]["pending"] == 4 and job["totals"]["skipped"] == 2
    # An unsubscription after the job was made still counts when the runner gets there.
    await http.patch(
        f"/v1/lists/{list_id}/contacts/m3@example.test",
        json={"status": "unsubscribed"},
        headers=h(account),
    )
    await runner(services, 1000).run_until_idle(within=30)
    done = (await http.get(f"/v1/bulk-jobs/{job['id']}", headers=h(account))).json()
    assert done["status"] == "done"
    assert (done["totals"]["queued"], done["totals"]["skipped"]) == (3, 3)

    await deliver_due(services, sink)
    received = {m.rcpt_tos[0]: m for m in sink.messages}
    assert sorted(received) == ["m0@example.test", "m4@example.test", "m5@example.test"]
    assert subject_of(received["m4@example.test"].data) == "Hi Member 4"
    assert b"Dear Member 4" in received["m4@example.test"].data
    assert b"List-Unsubscribe: " in received["m4@example.test"].data
    assert b"unsubscribe_url" not in received["m4@example.test"].data


async def test_a_template_job_and_a_failed_render(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    template = await services.templates.create(
        owner(account["account_id"]),
        name="Welcome",
        subject="Welcome {{ name }}",
        html="<b>{{ name }}</b>",
    )
    created = await http.post(
        "/v1/bulk-jobs",
        json={
            "from": "hello@acme.test",
            "template_id": template.id,
            "recipients": [
                {"email": "a@example.test", "variables": {"name": "Ann"}},
                {"email": "b@example.test"},
            ],
        },
        headers=h(account),
    )
    assert created.status_code == 200, created.text
    await runner(services, 1000).run_until_idle(within=30)
    recipients = (
        await http.get(f"/v1/bulk-jobs/{created.json()['id']}/recipients", headers=h(account))
    ).json()["data"]
    assert recipients[0]["status"] == "queued", recipients
    assert recipients[1]["status"] == "failed" and "name" in recipients[1]["error"]
    async with services.db.read() as conn:
        subjects = (await conn.execute(select(emails.c.subject))).scalars().all()
    assert subjects == ["Welcome Ann"]


async def test_a_restart_mid_job_never_queues_a_recipient_twice(
    http: httpx.AsyncClient,
    account: dict[str, str],
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recipients = [f"r{i}@example.test" for i in range(250)]
    created = await http.post(
        "/v1/bulk-jobs",
        json={"from": "hello@acme.test", "subject": "S", "text": "T", "recipients": recipients},
        headers=h(account),
    )
    job_id = created.json()["id"]
    real_record = bulk_store.record

    async def crash(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("the process died before recording")

    # The runner queues 100 emails, then dies before it can mark those recipients.
    monkeypatch.setattr(bulk_store, "record", crash)
    start = utcnow()
    assert await runner(services, 100).tick(now=start) == 0
    assert await count(services, emails) == 100
    monkeypatch.setattr(bulk_store, "record", real_record)

    # A new runner: nothing happens until the dead runner's lease runs out.
    fresh = runner(services, 100)
    assert await fresh.tick(now=start + TICK) == 0
    later = start + LEASE + timedelta(seconds=1)
    for step in range(3):
        await fresh.tick(now=later + step * TICK)
    job = (await http.get(f"/v1/bulk-jobs/{job_id}", headers=h(account))).json()
    assert (
        job["status"] == "done"
        and job["totals"]["queued"] == 250
        and job["totals"]["processed"] == 250
    )
    assert await count(services, emails) == 250
    async with services.db.read() as conn:
        per_recipient = (
            await conn.execute(
                select(deliveries.c.recipient, func.count()).group_by(deliveries.c.recipient)
            )
        ).all()
    assert len(per_recipient) == 250 and {n for _, n in per_recipient} == {1}
    rows = (
        await http.get(f"/v1/bulk-jobs/{job_id}/recipients?per_page=100", headers=h(account))
    ).json()["data"]
    assert len({r["email_id"] for r in rows}) == 100


async def test_bulk_job_errors(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    base = {
        "from": "hello@acme.test",
        "subject": "S",
        "text": "T",
        "recipients": ["a@example.test"],
    }
    cases: list[tuple[dict[str, Any], str, int]] = [
        ({**base, "from": "x@unverified.test"}, "full_access", 403),
        (base, "read_only", 403),
        ({**base, "recipients": []}, "full_access", 422),
        ({**base, "list_id": "lst_x"}, "full_access", 422),
        ({k: v for k, v in base.items() if k != "subject"}, "full_access", 422),
        ({**base, "text": None}, "full_access", 422),
        ({**base, "subject": "{{ broken"}, "full_access", 422),
        ({**base, "template_id": "tpl_missing"}, "full_access", 404),
        ({**base, "recipients": None, "list_id": "lst_missing"}, "full_access", 404),
        ({**base, "scheduled_at": "2099-01-01T00:00:00Z"}, "full_access", 422),
        ({**base, "recipients": ["a@example.test"] * 100_001}, "full_access", 422),
    ]
    for body, permission, status in cases:
        response = await http.post("/v1/bulk-jobs", json=body, headers=h(account, permission))
        assert response.status_code == status, (body.keys(), response.text)
    assert (await http.get("/v1/bulk-jobs/blk_missing", headers=h(account))).status_code == 404
    assert (
        await http.get("/v1/bulk-jobs/blk_missing/recipients", headers=h(account))
    ).status_code == 404

    created = (await http.post("/v1/bulk-jobs", json=base, headers=h(account))).json()
    cancelled = await http.post(f"/v1/bulk-jobs/{created['id']}/cancel", headers=h(account))
    assert (
        cancelled.json()["status"] == "cancelled" and cancelled.json()["totals"]["cancelled"] == 1
    )
    assert (
        await http.post(f"/v1/bulk-jobs/{created['id']}/cancel", headers=h(account))
    ).status_code == 409
    await runner(services, 1000).tick()
    assert await count(services, emails) == 0


async def test_run_bulk_stops_when_asked(services: Services, account: dict[str, str]) -> None:
    import asyncio

    stop = asyncio.Event()
    task = asyncio.create_task(bulk_runner.run_bulk(services.settings, services, stop=stop))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_quota_pauses_the_job_without_losing_recipients(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    patched = await http.patch(
        f"/v1/domains/{account['domain_id']}", json={"hourly_limit": 5}, headers=h(account)
    )
    assert patched.status_code == 200, patched.text
    created = await http.post(
        "/v1/bulk-jobs",
        json={
            "from": "hello@acme.test",
            "subject": "S",
            "text": "T",
            "recipients": [f"q{i}@example.test" for i in range(8)],
        },
        headers=h(account),
    )
    job_id = created.json()["id"]
    start = utcnow()
    assert await runner(services, 1000).tick(now=start) == 5
    job = (await http.get(f"/v1/bulk-jobs/{job_id}", headers=h(account))).json()
    assert (
        job["status"] == "running"
        and job["totals"]["queued"] == 5
        and job["totals"]["pending"] == 3
    )
    assert job["next_run_at"] > (start + TICK).strftime("%Y-%m-%dT%H:%M:%S")  # waits for the quota
    assert await runner(services, 1000).tick(now=start + TICK) == 0


async def test_revoking_the_key_that_created_a_job_loses_none_of_its_recipients(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    created = await http.post(
        "/v1/bulk-jobs",
        json={
            "name": "Accepted before the revocation",
            "from": "News <news@acme.test>",
            "subject": "Hello",
            "text": "Hi",
            "recipients": [f"user{i}@example.test" for i in range(5)],
        },
        headers=h(account, "sending_access"),
    )
    assert created.status_code == 200, created.text
    keys = (await http.get("/v1/api-keys", headers=h(account))).json()["data"]
    key_id = next(k["id"] for k in keys if k["name"] == "sending_access")
    assert (await http.delete(f"/v1/api-keys/{key_id}", headers=h(account))).status_code == 200

    assert await runner(services, 100).tick(now=utcnow()) == 5
    job = (await http.get(f"/v1/bulk-jobs/{created.json()['id']}", headers=h(account))).json()
    assert job["status"] == "done" and job["totals"]["queued"] == 5
    assert await count(services, emails) == 5
    # The key itself is refused from now on.
    again = await http.post(
        "/v1/emails",
        json={"from": "news@acme.test", "to": ["x@example.test"], "subject": "s", "text": "t"},
        headers=h(account, "sending_access"),
    )
    assert again.status_code == 401
