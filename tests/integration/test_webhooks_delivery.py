"""The webhook dispatcher against a real HTTP receiver on loopback, on both databases.

Signatures are checked with the ``standardwebhooks`` reference package, not with our signer.
Time scales are shrunk through the dispatcher's constructor (retry schedule, timeout, poll),
never by sleeping for real longer than a slow endpoint needs to be slow.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook, WebhookVerificationError

from posthorn.services.container import Services
from posthorn.services.intake import SendRequest, Tag
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.tables import utcnow, webhook_messages, webhooks
from posthorn.webhooks.dispatcher import Dispatcher
from tests.conftest import make_settings
from tests.support.dns import DnsServer
from tests.support.domains import owner
from tests.support.receiver import Receiver, Reply

FAST_RETRY = [timedelta(milliseconds=50)]


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dns: DnsServer) -> Settings:
    """Webhooks to 127.0.0.1 are allowed here: the receiver is on loopback."""
    return make_settings(
        tmp_path, database_url, dns_nameservers=[dns.nameserver], webhook_allow_private=True
    )


@pytest.fixture
async def receiver() -> Any:
    async with Receiver() as server:
        yield server


def dispatcher(db: Database, settings: Settings, **overrides: Any) -> Dispatcher:
    knobs: dict[str, Any] = {
        "schedule": FAST_RETRY,
        "timeout": 3.0,
        "poll_seconds": 0.02,
        "jitter": 0.0,
    }
    knobs.update(overrides)
    return Dispatcher(db, settings, **knobs)


async def dispatch(db: Database, settings: Settings, *, within: float = 10, **kw: Any) -> None:
    sender = dispatcher(db, settings, **kw)
    try:
        await sender.run_until_idle(within=within)
    finally:
        await sender.aclose()


async def hook(
    services: Services, account_id: str, url: str, events: Sequence[str] = ()
) -> tuple[str, str]:
    made = await services.webhooks.create(owner(account_id), url=url, events=events)
    return made.view.id, made.secret


async def send_email(services: Services, account_id: str) -> str:
    accepted = await services.intake.submit(
        SendRequest(
            account_id=account_id,
            source="api",
            from_="hello@acme.test",
            to=["bob@example.test"],
            subject="hi",
            text="hello",
            tags=[Tag("campaign", "welcome")],
            metadata={"user_id": 42},
        )
    )
    return accepted.id


async def messages(db: Database, webhook_id: str) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(
            select(webhook_messages)
            .where(webhook_messages.c.webhook_id == webhook_id)
            .order_by(webhook_messages.c.created_at)
        )
        return [dict(r._mapping) for r in rows]


def verify(secret: str, request: Any) -> Any:
    return Webhook(secret).verify(request.body, request.headers)


async def test_an_email_event_arrives_signed(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    webhook_id, secret = await hook(services, account["account_id"], receiver.url())
    email_id = await send_email(services, account["account_id"])
    await dispatch(db, settings)

    [request] = await receiver.wait_for(1)
    payload = verify(secret, request)
    assert payload["type"] == "email.queued"
    assert payload["created_at"].endswith("Z")
    data = payload["data"]
    assert data["email_id"] == email_id and data["recipient"] == "bob@example.test"
    assert data["metadata"] == {"user_id": 42} and data["tags"]
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Posthorn-Webhooks/")
    assert request.headers["webhook-id"].startswith("msg_")
    assert secret not in json.dumps(request.headers)

    [message] = await messages(db, webhook_id)
    assert message["status"] == "delivered" and message["attempts"] == 1
    assert message["id"] == request.headers["webhook-id"]
    rows, total = await services.webhooks.attempts(
        account["account_id"], webhook_id, page=1, per_page=10
    )
    assert total == 1 and rows[0]["status_code"] == 200 and rows[0]["response_excerpt"] == "ok"
    assert rows[0]["latency_ms"] is not None and rows[0]["error"] is None


async def test_the_events_filter_is_respected(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    wants_queued, _ = await hook(
        services, account["account_id"], receiver.url("/queued"), ["email.queued"]
    )
    wants_bounces, _ = await hook(
        services, account["account_id"], receiver.url("/bounced"), ["email.bounced"]
    )
    await send_email(services, account["account_id"])
    await dispatch(db, settings)
    assert len(receiver.on("/queued")) == 1
    assert receiver.on("/bounced") == []
    assert await messages(db, wants_bounces) == []
    assert len(await messages(db, wants_queued)) == 1


async def test_a_failure_is_retried_with_the_same_id(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    receiver.script("/hook", Reply(500, b"down for maintenance"), Reply(200))
    webhook_id, secret = await hook(services, account["account_id"], receiver.url())
    await send_email(services, account["account_id"])
    await dispatch(db, settings)

    first, second = await receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert verify(secret, first) == verify(secret, second)
    [message] = await messages(db, webhook_id)
    assert message["status"] == "delivered" and message["attempts"] == 2
    rows, total = await services.webhooks.attempts(
        account["account_id"], webhook_id, page=1, per_page=10
    )
    assert total == 2
    assert [r["status_code"] for r in rows] == [200, 500]  # newest first
    assert rows[1]["response_excerpt"] == "down for maintenance"
    view = await services.webhooks.get(account["account_id"], webhook_id)
    assert view.failing_since is None and view.enabled


async def test_410_gone_disables_the_endpoint(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    receiver.script("/hook", Reply(410, b"gone"))
    webhook_id, _ = await hook(services, account["account_id"], receiver.url())
    await send_email(services, account["account_id"])
    await dispatch(db, settings)

    view = await services.webhooks.get(account["account_id"], webhook_id)
    assert not view.enabled and "410" in (view.disabled_reason or "")
    [message] = await messages(db, webhook_id)
    assert message["status"] == "failed" and len(receiver.requests) == 1
    # A disabled endpoint gets no new messages; enabling it clears the reason.
    await send_email(services, account["account_id"])
    assert len(await messages(db, webhook_id)) == 1
    enabled = await services.webhooks.update(owner(account["account_id"]), webhook_id, enabled=True)
    assert enabled.enabled and enabled.disabled_reason is None


async def test_an_endpoint_failing_for_five_days_is_disabled(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    receiver.default("/hook", Reply(503))
    webhook_id, _ = await hook(services, account["account_id"], receiver.url())
    async with db.write() as conn:
        await conn.execute(
            update(webhooks)
            .where(webhooks.c.id == webhook_id)
            .values(failing_since=utcnow() - timedelta(days=5, minutes=1))
        )
    await send_email(services, account["account_id"])
    await dispatch(db, settings, within=3)

    view = await services.webhooks.get(account["account_id"], webhook_id)
    assert not view.enabled
    assert "5 days" in (view.disabled_reason or "")
    [message] = await messages(db, webhook_id)
    # Held, not lost: it goes out when the endpoint is enabled again.
    assert message["status"] == "pending" and message["next_attempt_at"] is None
    assert len(receiver.requests) == 1
    receiver.default("/hook", Reply(200))
    await services.webhooks.update(owner(account["account_id"]), webhook_id, enabled=True)
    await dispatch(db, settings)
    assert (await messages(db, webhook_id))[0]["status"] == "delivered"


async def test_retry_after_on_429_is_honoured(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    receiver.script("/hook", Reply(429, headers={"Retry-After": "120"}))
    webhook_id, _ = await hook(services, account["account_id"], receiver.url())
    await send_email(services, account["account_id"])
    before = utcnow()
    await dispatch(db, settings, within=1)

    [message] = await messages(db, webhook_id)
    assert message["status"] == "pending" and len(receiver.requests) == 1
    assert message["next_attempt_at"] >= before + timedelta(seconds=120)


async def test_a_redirect_is_not_followed(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    receiver.script("/hook", Reply(302, headers={"Location": receiver.url("/elsewhere")}))
    webhook_id, _ = await hook(services, account["account_id"], receiver.url())
    await send_email(services, account["account_id"])
    await dispatch(db, settings, within=1, schedule=[timedelta(minutes=5)])

    assert receiver.on("/elsewhere") == []
    [message] = await messages(db, webhook_id)
    assert message["status"] == "pending" and message["attempts"] == 1
    [attempt], _ = await services.webhooks.attempts(
        account["account_id"], webhook_id, page=1, per_page=10
    )
    assert attempt["status_code"] == 302 and "redirect" in attempt["error"]


async def test_a_slow_endpoint_does_not_delay_another(
    services: Services, db: Database, settings: Settings, account: dict[str, str]
) -> None:
    async with Receiver() as slow, Receiver() as fast:
        slow.default("/hook", Reply(delay=2.0))
        await hook(services, account["account_id"], slow.url())
        for _ in range(10):  # a backlog on the slow endpoint, older than the fast one's event
            await send_email(services, account["account_id"])
        await hook(services, account["account_id"], fast.url())
        await send_email(services, account["account_id"])

        worker = dispatcher(db, settings, concurrency=8, per_endpoint=4, timeout=10.0)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        started = loop.time()
        running = asyncio.create_task(worker.run(stop))
        try:
            [request] = await fast.wait_for(1, timeout=10)
            # The slow endpoint answers after 2 s; with its backlog holding every slot, the fast
            # one would wait at least that long.
            assert request.at - started < 1.5
            await slow.wait_for(4, timeout=5)
            assert slow.max_in_flight <= 4
        finally:
            stop.set()
            await asyncio.wait_for(running, timeout=15)
            await worker.aclose()


async def test_a_timeout_is_a_failed_attempt(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    receiver.script("/hook", Reply(delay=3.0))
    webhook_id, _ = await hook(services, account["account_id"], receiver.url())
    await send_email(services, account["account_id"])
    await dispatch(db, settings, within=1, timeout=0.5, schedule=[timedelta(minutes=5)])

    [attempt], _ = await services.webhooks.attempts(
        account["account_id"], webhook_id, page=1, per_page=10
    )
    assert attempt["status_code"] is None and "timed out" in attempt["error"]
    assert 400 <= attempt["latency_ms"] < 2000
    view = await services.webhooks.get(account["account_id"], webhook_id)
    assert view.failing_since is not None


async def test_rotation_signs_with_both_secrets_for_a_while(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    caller = owner(account["account_id"])
    webhook_id, old = await hook(services, account["account_id"], receiver.url())
    rotated = await services.webhooks.rotate_secret(caller, webhook_id)
    new = rotated.secret
    assert new != old and rotated.view.previous_secret_until is not None
    await services.webhooks.send_test(caller, webhook_id)
    await dispatch(db, settings)

    [request] = await receiver.wait_for(1)
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert (
        verify(old, request)
        == verify(new, request)
        == {
            "type": "webhook.test",
            "created_at": verify(new, request)["created_at"],
            "data": {"test": True},
        }
    )

    # Once the overlap is over, only the new secret signs.
    async with db.write() as conn:
        await conn.execute(
            update(webhooks)
            .where(webhooks.c.id == webhook_id)
            .values(previous_secret_until=utcnow() - timedelta(seconds=1))
        )
    await services.webhooks.send_test(caller, webhook_id)
    await dispatch(db, settings)
    _, later = await receiver.wait_for(2)
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    verify(new, later)
    with pytest.raises(WebhookVerificationError):
        verify(old, later)


async def test_retry_requeues_a_failed_message(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    caller = owner(account["account_id"])
    receiver.script("/hook", Reply(500))
    webhook_id, secret = await hook(services, account["account_id"], receiver.url())
    await send_email(services, account["account_id"])
    await dispatch(db, settings, retry_window=timedelta(0))  # no retries: fails at once
    [message] = await messages(db, webhook_id)
    assert message["status"] == "failed"

    requeued = await services.webhooks.retry(caller, webhook_id, message["id"])
    assert requeued["status"] == "pending"
    await dispatch(db, settings)
    first, second = await receiver.wait_for(2)
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == message["id"]
    verify(secret, second)
    [message] = await messages(db, webhook_id)
    assert message["status"] == "delivered" and message["attempts"] == 2


async def test_tls_goes_to_the_resolved_address_with_the_name_in_sni_and_host(
    services: Services, db: Database, settings: Settings, account: dict[str, str], dns: DnsServer
) -> None:
    async with Receiver(tls_hostname="hooks.example.test") as tls:
        dns.add("hooks.example.test", "A", "127.0.0.1")
        webhook_id, secret = await hook(services, account["account_id"], tls.url())
        await services.webhooks.send_test(owner(account["account_id"]), webhook_id)
        await dispatch(db, settings, ssl_context=tls.client_context())
        [request] = await tls.wait_for(1)
        assert request.headers["host"] == f"hooks.example.test:{tls.port}"
        assert tls.sni_names == ["hooks.example.test"]
        verify(secret, request)


async def test_an_untrusted_certificate_is_a_failed_attempt(
    services: Services, db: Database, settings: Settings, account: dict[str, str], dns: DnsServer
) -> None:
    async with Receiver(tls_hostname="hooks.example.test") as tls:
        dns.add("hooks.example.test", "A", "127.0.0.1")
        webhook_id, _ = await hook(services, account["account_id"], tls.url())
        await services.webhooks.send_test(owner(account["account_id"]), webhook_id)
        await dispatch(db, settings, within=1, schedule=[timedelta(minutes=5)])
        assert tls.requests == []
        [attempt], _ = await services.webhooks.attempts(
            account["account_id"], webhook_id, page=1, per_page=10
        )
        assert attempt["status_code"] is None and "CERTIFICATE" in attempt["error"].upper()


async def test_loopback_is_refused_at_send_time_when_private_is_not_allowed(
    services: Services,
    db: Database,
    settings: Settings,
    dns: DnsServer,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    """Saved while allowed (or before the DNS changed): the send-time check still refuses."""
    strict = settings.model_copy(update={"webhook_allow_private": False})
    literal_id, _ = await hook(services, account["account_id"], receiver.url())
    dns.add("rebind.example.test", "A", "127.0.0.1")
    named_id, _ = await hook(
        services, account["account_id"], f"http://rebind.example.test:{receiver.port}/hook"
    )
    for webhook_id in (literal_id, named_id):
        await services.webhooks.send_test(owner(account["account_id"]), webhook_id)
    await dispatch(db, strict, within=1, schedule=[timedelta(minutes=5)])

    assert receiver.requests == []
    for webhook_id, host in ((literal_id, "127.0.0.1"), (named_id, "rebind.example.test")):
        [attempt], _ = await services.webhooks.attempts(
            account["account_id"], webhook_id, page=1, per_page=10
        )
        assert attempt["status_code"] is None
        assert attempt["error"].startswith(f"refused: {host} resolves to 127.0.0.1")
        assert "loopback" in attempt["error"]


async def test_deliveries_over_http_are_paginated_newest_first(
    services: Services,
    db: Database,
    settings: Settings,
    account: dict[str, str],
    receiver: Receiver,
    http: httpx.AsyncClient,
) -> None:
    receiver.script("/hook", Reply(500, b"x" * 2000), Reply(500), Reply(200))
    key = {"X-API-KEY": account["read_only"]}
    webhook_id, _ = await hook(services, account["account_id"], receiver.url())
    await send_email(services, account["account_id"])
    await dispatch(db, settings)

    page1 = (await http.get(f"/v1/webhooks/{webhook_id}/deliveries?per_page=2", headers=key)).json()
    assert page1["total"] == 3 and page1["page"] == 1 and page1["per_page"] == 2
    assert [a["status_code"] for a in page1["data"]] == [200, 500]
    page2 = (
        await http.get(f"/v1/webhooks/{webhook_id}/deliveries?per_page=2&page=2", headers=key)
    ).json()
    [oldest] = page2["data"]
    assert oldest["status_code"] == 500 and len(oldest["response"]) == 500
    assert oldest["event_type"] == "email.queued" and oldest["message_status"] == "delivered"
    assert set(oldest) >= {"created_at", "latency_ms", "error", "message_id"}

    message_id = oldest["message_id"]
    full = {"X-API-KEY": account["full_access"]}
    retried = await http.post(
        f"/v1/webhooks/{webhook_id}/deliveries/{message_id}/retry", headers=full
    )
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    await dispatch(db, settings)
    assert len(receiver.requests) == 4


async def test_metadata_is_refused_at_send_time_even_when_private_is_allowed(
    services: Services,
    db: Database,
    settings: Settings,
    dns: DnsServer,
    account: dict[str, str],
    receiver: Receiver,
) -> None:
    """A name that did not resolve when it was saved, and points at the metadata endpoint
    when it is dialled, is refused there: allowing private receivers never opens it."""
    webhook_id, _ = await hook(
        services, account["account_id"], f"http://late.example.test:{receiver.port}/hook"
    )
    dns.add("late.example.test", "A", "169.254.169.254")
    await services.webhooks.send_test(owner(account["account_id"]), webhook_id)
    await dispatch(db, settings, within=1, schedule=[timedelta(minutes=5)])

    [attempt], _ = await services.webhooks.attempts(
        account["account_id"], webhook_id, page=1, per_page=10
    )
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("refused: late.example.test resolves to 169.254.169.254")
    assert "metadata" in attempt["error"]
