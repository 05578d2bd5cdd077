"""``/v1/senders`` and ``/v1/logs`` over real HTTP, the log fed by a real delivery."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from posthorn.delivery.transport import SmtpDeliverer
from posthorn.services.container import Services
from posthorn.services.signing import DkimSigner
from posthorn.store.tables import senders
from posthorn.worker import Worker
from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


NEW_SENDER = {
    "account": "noreply@acme.test",
    "domain": "acme.test",
    "password": "YourSecurePassword123",
}


async def test_sender_lifecycle(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    created = await http.post("/v1/senders", json=NEW_SENDER, headers=h(account))
    assert created.status_code == 200, created.text
    sender = created.json()
    assert sender["id"].isdigit()
    assert {
        k: sender[k] for k in ("account", "domain", "active", "daily_limit", "hourly_limit")
    } == {
        "account": "noreply@acme.test",
        "domain": "acme.test",
        "active": True,
        "daily_limit": 500,
        "hourly_limit": 50,
    }
    assert "password" not in created.text and "argon2" not in created.text
    async with services.db.read() as conn:
        stored = (await conn.execute(select(senders.c.password_hash))).scalar_one()
    assert stored.startswith("$argon2id$")

    assert await services.senders.authenticate("noreply@acme.test", "YourSecurePassword123")
    assert await services.senders.authenticate("NoReply@acme.test", "YourSecurePassword123")
    assert await services.senders.authenticate("noreply@acme.test", "wrong password") is None
    assert await services.senders.authenticate("nobody@acme.test", "YourSecurePassword123") is None

    listed = (await http.get("/v1/senders", headers=h(account, "read_only"))).json()
    assert listed["total"] == 1 and listed["data"][0]["id"] == sender["id"]
    patched = await http.patch(
        f"/v1/senders/{sender['id']}",
        json={"active": False, "hourly_limit": 10, "password": "another-password"},
        headers=h(account),
    )
    assert patched.json()["active"] is False and patched.json()["hourly_limit"] == 10
    assert await services.senders.authenticate("noreply@acme.test", "another-password") is None
    await http.patch(f"/v1/senders/{sender['id']}", json={"active": True}, headers=h(account))
    identity = await services.senders.authenticate("noreply@acme.test", "another-password")
    assert identity is not None and identity.account_id == account["account_id"]
    assert {limit.limit for limit in identity.limits} == {500, 10}

    again = await http.post("/v1/senders", json=NEW_SENDER, headers=h(account))
    assert again.status_code == 409
    deleted = await http.delete(f"/v1/senders/{sender['id']}", headers=h(account))
    assert deleted.json() == {"id": sender["id"], "deleted": True}
    assert (await http.get(f"/v1/senders/{sender['id']}", headers=h(account))).status_code == 404
    assert await services.senders.authenticate("noreply@acme.test", "another-password") is None


@pytest.mark.parametrize(
    ("changes", "status", "needle"),
    [
        ({"password": "short"}, 422, "password"),
        ({"account": "noreply@other.test"}, 422, "account"),
        ({"account": "not an address"}, 422, "account"),
        ({"domain": "unknown.test", "account": "x@unknown.test"}, 404, "domain"),
    ],
)
async def test_sender_validation(
    http: httpx.AsyncClient,
    account: dict[str, str],
    changes: dict[str, str],
    status: int,
    needle: str,
) -> None:
    response = await http.post("/v1/senders", json={**NEW_SENDER, **changes}, headers=h(account))
    assert response.status_code == status
    assert needle in response.json()["detail"]


async def test_senders_need_a_verified_domain_and_full_access(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    await http.post("/v1/domains", json={"domain": "pending.test"}, headers=h(account))
    pending = await http.post(
        "/v1/senders",
        json={"account": "a@pending.test", "domain": "pending.test", "password": "longenough"},
        headers=h(account),
    )
    assert pending.status_code == 422 and "pending.test" in pending.json()["detail"]
    denied = await http.post("/v1/senders", json=NEW_SENDER, headers=h(account, "sending_access"))
    assert denied.status_code == 403


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(starttls=False) as server:
        yield server


async def test_logs_show_every_event_with_filters_and_stats(
    http: httpx.AsyncClient,
    account: dict[str, str],
    services: Services,
    dns: DnsServer,
    sink: SmtpSink,
) -> None:
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    body = {"from": "hello@acme.test", "subject": "x", "text": "x"}
    first = (
        await http.post("/v1/emails", json={**body, "to": ["a@example.test"]}, headers=h(account))
    ).json()
    await http.post(
        "/v1/emails",
        json={**body, "to": ["b@example.test", "gone@example.test"]},
        headers=h(account),
    )
    sink.fail_next(stage="rcpt", code=550, message="5.1.1 no such user")
    settings = services.settings.model_copy(update={"mx_port": sink.port})
    worker = Worker(
        services.db, settings, SmtpDeliverer(settings), DkimSigner(services.db, settings)
    )
    await worker.run_until_idle(within=30)
    await worker.close()

    everything = (await http.get("/v1/logs?per_page=100", headers=h(account, "read_only"))).json()
    assert everything["total"] == 6  # 3 queued + 3 outcomes
    entry = everything["logs"][0]
    assert set(entry) == {"message_id", "action", "sender", "recipient", "timestamp", "source"}
    assert entry["sender"] == "hello@acme.test" and entry["source"] == "API"
    stamps = [e["timestamp"] for e in everything["logs"]]
    assert stamps == sorted(stamps, reverse=True)  # -timestamp by default
    stats = {s["label"]: s["count"] for s in everything["stats"]}
    assert stats["Queued"] == 3 and stats["Delivered"] + stats.get("Bounced", 0) == 3
    assert sum(s["percentage"] for s in everything["stats"]) == pytest.approx(100, abs=0.2)

    delivered = (await http.get("/v1/logs?action=delivered", headers=h(account))).json()
    assert delivered["total"] == stats["Delivered"]
    assert {e["action"] for e in delivered["logs"]} == {"Delivered"}
    queue = (await http.get("/v1/logs?action=queue,bounced", headers=h(account))).json()
    assert {e["action"] for e in queue["logs"]} <= {"Queued", "Bounced"}

    by_message = (await http.get(f"/v1/logs?message_id={first['id']}", headers=h(account))).json()
    assert {e["message_id"] for e in by_message["logs"]} == {first["id"]} and by_message[
        "total"
    ] == 2
    by_rcpt = (await http.get("/v1/logs?recipient=b@example.test", headers=h(account))).json()
    assert by_rcpt["total"] == 2
    assert (await http.get("/v1/logs?sender=other@acme.test", headers=h(account))).json()[
        "total"
    ] == 0
    assert (await http.get("/v1/logs?source=smtp", headers=h(account))).json()["total"] == 0
    assert (await http.get("/v1/logs?source=api,smtp", headers=h(account))).json()["total"] == 6

    sorted_rcpt = (
        await http.get("/v1/logs?sorts=recipient&per_page=100", headers=h(account))
    ).json()
    recipients = [e["recipient"] for e in sorted_rcpt["logs"]]
    assert recipients == sorted(recipients)
    future = (await http.get("/v1/logs?log_after=2999-01-01T00:00:00Z", headers=h(account))).json()
    assert future["total"] == 0 and future["logs"] == []
    past = (await http.get("/v1/logs?log_before=2000-01-01T00:00:00Z", headers=h(account))).json()
    assert past["total"] == 0

    for bad in (
        "sorts=password",
        "action=exploded",
        "source=f@x",
        "log_after=soon",
        "per_page=101",
    ):
        assert (await http.get(f"/v1/logs?{bad}", headers=h(account))).status_code == 422, bad
