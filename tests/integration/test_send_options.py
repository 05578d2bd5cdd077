"""Scheduling, cancelling, idempotency keys, batches, suppressions and per-account relays,
over real HTTP, with a real worker delivering into a real sink."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from posthorn.services.container import Services
from posthorn.settings import Settings
from posthorn.store.tables import emails, suppressions
from tests.conftest import make_settings
from tests.support.delivery import deliver_due
from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink

MESSAGE: dict[str, Any] = {
    "from": "hello@acme.test",
    "to": ["user@example.test"],
    "subject": "Hi",
    "text": "hello",
}


PUBLIC_URL = "https://mail.posthorn.test"


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dns: DnsServer) -> Settings:
    # One-click unsubscribe needs an https URL (RFC 8058 §3.1); the test client maps it onto
    # the live server. The accounts' relays here are sinks on loopback.
    return make_settings(
        tmp_path,
        database_url,
        dns_nameservers=[dns.nameserver],
        public_url=PUBLIC_URL,
        relay_allow_private=True,
    )


@pytest.fixture
def sink(dns: DnsServer) -> Iterator[SmtpSink]:
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    with SmtpSink(starttls=False) as server:
        yield server


async def email_count(services: Services) -> int:
    async with services.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(emails))).scalar_one())


async def test_scheduled_email_waits_moves_and_goes(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    sent = await http.post(
        "/v1/emails", json={**MESSAGE, "scheduled_at": iso(later)}, headers=h(account)
    )
    assert sent.status_code == 200 and sent.json()["status"] == "scheduled"
    email_id = sent.json()["id"]
    await deliver_due(services, sink)
    assert sink.messages == []
    detail = (await http.get(f"/v1/emails/{email_id}", headers=h(account))).json()
    assert detail["status"] == "Scheduled" and detail["scheduled_at"] == iso(later).replace(
        "Z", ".000000Z"
    )

    moved = await http.patch(
        f"/v1/emails/{email_id}", json={"scheduled_at": iso(datetime.now(UTC))}, headers=h(account)
    )
    assert moved.status_code == 200
    await deliver_due(services, sink)
    assert len(sink.messages) == 1
    after = (await http.get(f"/v1/emails/{email_id}", headers=h(account))).json()
    assert after["status"] == "Delivered"
    again = await http.post(f"/v1/emails/{email_id}/cancel", headers=h(account))
    assert again.status_code == 409


@pytest.mark.parametrize(
    "when",
    [timedelta(days=31), "2026-11-24T10:00:00", "tomorrow"],
)
async def test_bad_schedules_are_422(
    http: httpx.AsyncClient, account: dict[str, str], when: timedelta | str
) -> None:
    value = iso(datetime.now(UTC) + when) if isinstance(when, timedelta) else when
    response = await http.post(
        "/v1/emails", json={**MESSAGE, "scheduled_at": value}, headers=h(account)
    )
    assert response.status_code == 422 and "scheduled_at" in response.json()["detail"]


async def test_cancel_stops_a_scheduled_email(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    later = iso(datetime.now(UTC) + timedelta(minutes=30))
    email_id = (
        await http.post("/v1/emails", json={**MESSAGE, "scheduled_at": later}, headers=h(account))
    ).json()["id"]
    cancelled = await http.post(f"/v1/emails/{email_id}/cancel", headers=h(account))
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "Cancelled" and body["deliveries"][0]["status"] == "cancelled"
    assert "cancelled" in [e["type"] for e in body["events"]]
    assert (await http.post(f"/v1/emails/{email_id}/cancel", headers=h(account))).status_code == 409
    read_only = await http.post(f"/v1/emails/{email_id}/cancel", headers=h(account, "read_only"))
    assert read_only.status_code == 403
    await deliver_due(services, sink)
    assert sink.messages == []


async def test_idempotency_key_replays_and_conflicts(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    headers = {**h(account), "Idempotency-Key": "order-42"}
    first = await http.post("/v1/emails", json=MESSAGE, headers=headers)
    second = await http.post("/v1/emails", json=MESSAGE, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    different = await http.post("/v1/emails", json={**MESSAGE, "subject": "Other"}, headers=headers)
    assert different.status_code == 409
    assert await email_count(services) == 1

    racing = await asyncio.gather(
        *(
            http.post("/v1/emails", json=MESSAGE, headers={**h(account), "Idempotency-Key": "race"})
            for _ in range(20)
        )
    )
    assert {r.status_code for r in racing} == {200}
    assert len({r.json()["id"] for r in racing}) == 1
    assert await email_count(services) == 2


async def test_batch_answers_each_item_in_order(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    items = [
        MESSAGE,
        {**MESSAGE, "to": ["not-an-address"]},
        {**MESSAGE, "from": "x@unverified.test"},
        {"subject": "no from"},
        {**MESSAGE, "to": ["second@example.test"]},
    ]
    response = await http.post("/v1/emails/batch", json=items, headers=h(account))
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 5 and body["queued"] == 2 and body["failed"] == 3
    results = body["data"]
    assert "id" in results[0] and "id" in results[4]
    assert results[1]["error"]["status"] == 422 and "to[0]" in results[1]["error"]["detail"]
    assert (
        results[2]["error"]["status"] == 403 and "unverified.test" in results[2]["error"]["detail"]
    )
    assert results[3]["error"]["status"] == 422
    assert await email_count(services) == 2
    too_many = await http.post("/v1/emails/batch", json=[MESSAGE] * 501, headers=h(account))
    assert too_many.status_code == 422


async def test_suppressed_recipients_are_rejected_at_intake(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    added = await http.post(
        "/v1/suppressions", json={"address": "Blocked@Example.test"}, headers=h(account)
    )
    assert added.json() == {"address": "blocked@example.test", "reason": "manual", "created": True}
    listed = (await http.get("/v1/suppressions?reason=manual", headers=h(account))).json()
    assert listed["total"] == 1 and listed["data"][0]["address"] == "blocked@example.test"

    sent = await http.post(
        "/v1/emails",
        json={**MESSAGE, "to": ["blocked@example.test", "ok@example.test"]},
        headers=h(account),
    )
    assert sent.status_code == 200
    detail = (await http.get(f"/v1/emails/{sent.json()['id']}", headers=h(account))).json()
    states = {d["recipient"]: d["status"] for d in detail["deliveries"]}
    assert states == {"blocked@example.test": "rejected", "ok@example.test": "queued"}
    rejected = [e for e in detail["events"] if e["type"] == "rejected"]
    assert rejected[0]["recipient"] == "blocked@example.test"
    await deliver_due(services, sink)
    assert [m.rcpt_tos for m in sink.messages] == [("ok@example.test",)]

    only_blocked = await http.post(
        "/v1/emails", json={**MESSAGE, "to": ["blocked@example.test"]}, headers=h(account)
    )
    assert only_blocked.json()["status"] == "rejected"
    lifted = await http.delete("/v1/suppressions/blocked@example.test", headers=h(account))
    assert lifted.status_code == 200
    assert (
        await http.delete("/v1/suppressions/blocked@example.test", headers=h(account))
    ).status_code == 404
    again = await http.post(
        "/v1/emails", json={**MESSAGE, "to": ["blocked@example.test"]}, headers=h(account)
    )
    assert again.json()["status"] == "queued"


async def test_hard_bounces_suppress_but_policy_blocks_do_not(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    await http.post("/v1/emails", json={**MESSAGE, "to": ["gone@example.test"]}, headers=h(account))
    sink.fail_next(stage="rcpt", code=550, message="5.1.1 <gone@example.test>: user unknown")
    await deliver_due(services, sink)
    await http.post(
        "/v1/emails", json={**MESSAGE, "to": ["blocked-ip@example.test"]}, headers=h(account)
    )
    sink.fail_next(stage="rcpt", code=554, message="5.7.1 Service unavailable; client host blocked")
    await deliver_due(services, sink)
    async with services.db.read() as conn:
        rows = (await conn.execute(select(suppressions.c.address, suppressions.c.reason))).all()
    assert [tuple(r) for r in rows] == [("gone@example.test", "bounce")]
    later = await http.post(
        "/v1/emails", json={**MESSAGE, "to": ["gone@example.test"]}, headers=h(account)
    )
    assert later.json()["status"] == "rejected"
    suppression_events = (await http.get("/v1/logs?action=bounced", headers=h(account))).json()
    assert suppression_events["total"] == 2


async def test_a_recipient_suppressed_after_queueing_is_not_sent_to(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    sent = await http.post("/v1/emails", json=MESSAGE, headers=h(account))
    await http.post("/v1/suppressions", json={"address": "user@example.test"}, headers=h(account))
    await deliver_due(services, sink)
    assert sink.messages == []
    detail = (await http.get(f"/v1/emails/{sent.json()['id']}", headers=h(account))).json()
    assert detail["deliveries"][0]["status"] == "rejected"


async def test_an_accounts_default_relay_carries_its_mail(
    http: httpx.AsyncClient,
    account: dict[str, str],
    services: Services,
    sink: SmtpSink,
    tmp_path: Path,
) -> None:
    with SmtpSink(starttls=True, auth={"apikey": "relay-secret"}) as relay:
        created = await http.post(
            "/v1/relays",
            json={
                "name": "provider",
                "host": "127.0.0.1",
                "port": relay.port,
                "tls": "starttls",
                "username": "apikey",
                "password": "relay-secret",
                "is_default": True,
            },
            headers=h(account),
        )
        assert created.status_code == 200, created.text
        shown = created.json()
        assert shown["has_password"] is True and "relay-secret" not in created.text
        listed = (await http.get("/v1/relays", headers=h(account, "read_only"))).json()
        assert listed["total"] == 1 and "relay-secret" not in str(listed)

        await http.post("/v1/emails", json=MESSAGE, headers=h(account))
        await deliver_due(services, sink, relay_tls_verify=False)
        (message,) = relay.messages
        assert message.authenticated_as == "apikey" and message.tls
        assert sink.messages == []

        await http.patch(
            f"/v1/relays/{shown['id']}", json={"is_default": False}, headers=h(account)
        )
        await http.post("/v1/emails", json=MESSAGE, headers=h(account))
        await deliver_due(services, sink)
        assert len(sink.messages) == 1 and len(relay.messages) == 1
        denied = await http.post(
            "/v1/relays", json={"name": "x", "host": "h"}, headers=h(account, "sending_access")
        )
        assert denied.status_code == 403
        assert (
            await http.delete(f"/v1/relays/{shown['id']}", headers=h(account))
        ).status_code == 200


async def test_template_tracking_and_unsubscribe_end_to_end(
    http: httpx.AsyncClient,
    account: dict[str, str],
    services: Services,
    sink: SmtpSink,
    dns: DnsServer,
) -> None:
    import email
    import email.policy
    import re

    from tests.support.dkim_check import dkim_verifies

    template = await http.post(
        "/v1/templates",
        json={
            "name": "welcome",
            "subject": "Welcome, {{ name }}",
            "html": '<p>Hi {{ name }}, <a href="https://acme.test/start?a=1&amp;b=2">start</a>'
            ' or <a href="{{ unsubscribe_url }}">unsubscribe</a></p>',
            "text": "Hi {{ name }}",
        },
        headers=h(account),
    )
    assert template.status_code == 200, template.text
    template_id = template.json()["id"]
    missing = await http.post(
        "/v1/emails",
        json={**MESSAGE, "template_id": template_id, "template_data": {}},
        headers=h(account),
    )
    assert missing.status_code == 422 and "name" in missing.json()["detail"]

    sent = await http.post(
        "/v1/emails",
        json={
            "from": "hello@acme.test",
            "to": ["user@example.test"],
            "template_id": template_id,
            "template_data": {"name": "Lan"},
            "track_opens": True,
            "track_clicks": True,
            "unsubscribe": True,
        },
        headers=h(account),
    )
    assert sent.status_code == 200, sent.text
    await deliver_due(services, sink)
    (received,) = sink.messages
    assert dkim_verifies(received.data, dns)
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert message["Subject"] == "Welcome, Lan"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    signature = message["DKIM-Signature"].replace("\r\n", "").replace(" ", "")
    assert "List-Unsubscribe:List-Unsubscribe-Post" in signature
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    click = re.search(r'href="(https://[^"]+/t/c/[^"]+)"', html)
    pixel = re.search(r'src="(https://[^"]+/t/o/[^"]+)"', html)
    assert click and pixel and "acme.test/start" not in html.split("unsubscribe")[0]

    base = str(http.base_url).rstrip("/")
    followed = await http.get(click.group(1).replace(PUBLIC_URL, base))
    assert followed.status_code == 302
    assert followed.headers["location"] == "https://acme.test/start?a=1&b=2"
    opened = await http.get(pixel.group(1).replace(PUBLIC_URL, base))
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    unsubscribe_url = message["List-Unsubscribe"].split(",")[0].strip(" <>")
    done = await http.post(
        unsubscribe_url.replace(PUBLIC_URL, base),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    detail = (await http.get(f"/v1/emails/{sent.json()['id']}", headers=h(account))).json()
    kinds = [e["type"] for e in detail["events"]]
    assert {"delivered", "clicked", "opened", "unsubscribed"} <= set(kinds)
    again = await http.post("/v1/emails", json=MESSAGE, headers=h(account))
    assert again.json()["status"] == "rejected"  # now on the suppression list
