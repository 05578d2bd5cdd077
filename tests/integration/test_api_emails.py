"""``/v1/emails`` over real HTTP: sending, listing, permissions, isolation and validation."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from posthorn.domain.permissions import Permission
from posthorn.services.container import Services
from posthorn.settings import Settings
from posthorn.store.tables import deliveries, emails, events
from tests.conftest import LiveServer, make_settings

MESSAGE: dict[str, Any] = {
    "from": "Acme <hello@acme.test>",
    "to": ["user@example.test"],
    "subject": "Hi",
    "html": "<p>Hi</p>",
}


def key(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


async def send(http: httpx.AsyncClient, account: dict[str, str], **changes: Any) -> httpx.Response:
    return await http.post("/v1/emails", json={**MESSAGE, **changes}, headers=key(account))


async def test_send_returns_the_seed_shape_and_queues_one_delivery_per_recipient(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    response = await send(
        http,
        account,
        to=["a@example.test", "b@example.test"],
        cc=["c@example.test"],
        bcc=["d@example.test", "A@example.test"],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "from", "to", "status", "created_at"}
    assert body["from"] == "Acme <hello@acme.test>"
    assert body["to"] == ["a@example.test", "b@example.test"]
    assert body["status"] == "queued"
    assert body["created_at"].endswith("Z")
    async with services.db.read() as conn:
        recipients = (
            (
                await conn.execute(
                    select(deliveries.c.recipient).where(deliveries.c.email_id == body["id"])
                )
            )
            .scalars()
            .all()
        )
        queued = (
            await conn.execute(
                select(func.count()).where(
                    events.c.email_id == body["id"], events.c.type == "queued"
                )
            )
        ).scalar_one()
    # A@example.test is the same mailbox as a@example.test: one copy, not two.
    assert sorted(recipients) == [
        "a@example.test",
        "b@example.test",
        "c@example.test",
        "d@example.test",
    ]
    assert queued == 4


async def test_get_email_shows_detail_and_per_recipient_state(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    sent = (
        await send(http, account, text="plain", tags=[{"name": "kind", "value": "welcome"}])
    ).json()
    response = await http.get(f"/v1/emails/{sent['id']}", headers=key(account, "read_only"))
    assert response.status_code == 200
    detail = response.json()
    assert detail["id"] == sent["id"]
    assert detail["subject"] == "Hi"
    assert detail["html"] == "<p>Hi</p>"
    assert detail["text"] == "plain"
    assert detail["status"] == "Queued"
    assert detail["tags"] == [{"name": "kind", "value": "welcome"}]
    assert detail["message_id"].startswith("<") and detail["message_id"].endswith("@posthorn.test>")
    assert [d["recipient"] for d in detail["deliveries"]] == ["user@example.test"]
    assert detail["deliveries"][0]["status"] == "queued"
    assert detail["deliveries"][0]["attempts"] == 0
    assert [e["type"] for e in detail["events"]] == ["queued"]


async def test_list_paginates_filters_and_counts(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    ids = [(await send(http, account, subject=f"n{i}")).json()["id"] for i in range(5)]
    page1 = (await http.get("/v1/emails?page=1&per_page=2", headers=key(account))).json()
    page3 = (await http.get("/v1/emails?page=3&per_page=2", headers=key(account))).json()
    assert page1["total"] == 5 and page1["page"] == 1 and page1["per_page"] == 2
    assert [e["id"] for e in page1["data"]] == ids[::-1][:2]  # newest first
    assert [e["id"] for e in page3["data"]] == ids[:1]
    assert page1["stats"] == [{"label": "Queued", "count": 5, "percentage": 100.0}]
    assert set(page1["data"][0]) == {"id", "from", "to", "subject", "status", "created_at"}

    delivered = (await http.get("/v1/emails?status=delivered,delayed", headers=key(account))).json()
    assert delivered["total"] == 0 and delivered["data"] == []
    queued = (await http.get("/v1/emails?status=Queued", headers=key(account))).json()
    assert queued["total"] == 5

    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (await http.get(f"/v1/emails?created_at_from={future}", headers=key(account))).json()
    assert later["total"] == 0
    earlier = (await http.get(f"/v1/emails?created_at_to={future}", headers=key(account))).json()
    assert earlier["total"] == 5


@pytest.mark.parametrize(
    "query",
    ["per_page=101", "per_page=0", "page=0", "status=nonsense", "created_at_from=yesterday"],
)
async def test_list_rejects_bad_query(
    http: httpx.AsyncClient, account: dict[str, str], query: str
) -> None:
    response = await http.get(f"/v1/emails?{query}", headers=key(account))
    assert response.status_code == 422
    assert query.split("=")[0] in response.json()["detail"]


async def test_missing_unknown_and_revoked_keys_are_401(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    assert (await http.post("/v1/emails", json=MESSAGE)).status_code == 401
    assert (await http.get("/v1/emails", headers={"X-API-KEY": "phk_nope"})).status_code == 401
    assert (await http.get("/v1/emails", headers={"X-API-KEY": "other"})).status_code == 401
    created = await services.accounts.create_key(account["account_id"], name="temp")
    headers = {"X-API-KEY": created.key}
    assert (await http.get("/v1/emails", headers=headers)).status_code == 200
    await services.accounts.revoke_key(account["account_id"], created.row.id)
    response = await http.get("/v1/emails", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid, expired or revoked API key"}


async def test_expired_key_is_401(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    created = await services.accounts.create_key(
        account["account_id"],
        name="old",
        expires_in_days=7,
        now=datetime.now(UTC) - timedelta(days=8),
    )
    response = await http.get("/v1/emails", headers={"X-API-KEY": created.key})
    assert response.status_code == 401


async def test_read_only_cannot_send_but_can_read(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    response = await http.post("/v1/emails", json=MESSAGE, headers=key(account, "read_only"))
    assert response.status_code == 403
    assert "read_only" in response.json()["detail"]
    assert (await http.get("/v1/emails", headers=key(account, "read_only"))).status_code == 200
    sending = await http.post("/v1/emails", json=MESSAGE, headers=key(account, "sending_access"))
    assert sending.status_code == 200


async def test_another_accounts_email_is_404(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    mine = (await send(http, account)).json()["id"]
    other = await services.accounts.create_account("globex")
    other_key = await services.accounts.create_key(
        other.id, name="k", permission=Permission.FULL_ACCESS
    )
    response = await http.get(f"/v1/emails/{mine}", headers={"X-API-KEY": other_key.key})
    assert response.status_code == 404
    assert response.json() == {"detail": "email not found"}
    listed = (await http.get("/v1/emails", headers={"X-API-KEY": other_key.key})).json()
    assert listed["total"] == 0 and listed["data"] == []
    missing = await http.get(
        "/v1/emails/00000000-0000-0000-0000-000000000000", headers=key(account)
    )
    assert missing.status_code == 404


async def test_malformed_json_is_400(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    response = await http.post(
        "/v1/emails",
        content=b'{"from": "a@b.test", "to": [',
        headers={**key(account), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"to": None}, "to"),
        ({"subject": None}, "subject"),
        ({"from": "not an address"}, "from"),
        ({"to": ["ok@example.test", "bad@@example"]}, "to[1]"),
        ({"cc": ["x@y"]}, "cc[0]"),
        ({"reply_to": "nope"}, "reply_to"),
        ({"to": []}, "to"),
        ({"html": None}, "html"),
        ({"to": [f"u{i}@example.test" for i in range(51)]}, "51"),
        ({"headers": {"X-Campaign": "a\r\nBcc: victim@example.test"}}, "X-Campaign"),
        ({"headers": {"X-Ok\nBcc": "x"}}, "headers"),
        ({"headers": {"From": "ceo@bank.test"}}, "From"),
        ({"headers": {"Content-Type": "text/plain"}}, "Content-Type"),
        ({"headers": {"DKIM-Signature": "v=1"}}, "DKIM-Signature"),
        ({"headers": {"X-Null": "a\x00b"}}, "X-Null"),
        ({"subject": "Hi\r\nBcc: victim@example.test"}, "subject"),
        ({"attachments": [{"filename": "a.txt", "content": "!!!not base64"}]}, "attachments[0]"),
        ({"attachments": [{"content": "aGk="}]}, "attachments[0].filename"),
    ],
)
async def test_invalid_requests_are_422_naming_the_field(
    http: httpx.AsyncClient, account: dict[str, str], changes: dict[str, Any], field: str
) -> None:
    body = {**MESSAGE, **changes}
    body = {k: v for k, v in body.items() if v is not None}
    response = await http.post("/v1/emails", json=body, headers=key(account))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and field in detail


async def test_nothing_is_stored_for_a_rejected_request(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    await send(http, account, headers={"From": "x@y.test"})
    async with services.db.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(emails))).scalar_one()
    assert count == 0


async def test_vietnamese_messages_on_request(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    response = await http.post(
        "/v1/emails",
        json={**MESSAGE, "html": None},
        headers={**key(account), "Content-Language": "vi"},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "Cần ít nhất một trong hai trường html hoặc text"
    assert response.headers["content-language"] == "vi"
    unauthorised = await http.get("/v1/emails", headers={"Content-Language": "vi"})
    assert unauthorised.json()["detail"] == "Thiếu API key"


async def test_attachments_and_text_are_accepted(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    payload = bytes(range(256)) * 10
    response = await send(
        http,
        account,
        text="see attached",
        attachments=[
            {
                "filename": "report.bin",
                "content": base64.b64encode(payload).decode(),
                "content_type": "application/octet-stream",
            }
        ],
    )
    assert response.status_code == 200
    detail = (await http.get(f"/v1/emails/{response.json()['id']}", headers=key(account))).json()
    assert detail["attachments"] == [
        {"filename": "report.bin", "content_type": "application/octet-stream", "size": 2560}
    ]


async def test_oversized_body_is_413_before_buffering(
    tmp_path: Path, database_url: str, account: dict[str, str], services: Services
) -> None:
    small: Settings = make_settings(tmp_path, database_url, max_message_bytes=10_000)
    server = LiveServer(small, services)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            big = {**MESSAGE, "html": "x" * 20_000}
            response = await client.post("/v1/emails", json=big, headers=key(account))
            assert response.status_code == 413
            assert "10000" in response.json()["detail"]

            async def chunks() -> Any:
                for _ in range(30):
                    yield b"x" * 1000

            streamed = await client.post(
                "/v1/emails",
                content=chunks(),
                headers={**key(account), "Content-Type": "application/json"},
            )
            assert streamed.status_code == 413
    finally:
        await server.stop()


async def test_openapi_docs_and_health(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert "/v1/emails" in spec["paths"] and "/v1/emails/{email_id}" in spec["paths"]
    assert (await http.get("/docs")).status_code == 200
    assert (await http.get("/healthz")).json()["status"] == "ok"


async def test_metrics_show_the_queue(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    await send(http, account, to=["a@example.test", "b@example.test"])
    text = (await http.get("/metrics")).text
    assert 'posthorn_deliveries{status="queued"} 2' in text
    assert "posthorn_queue_due 2" in text
    assert "posthorn_queue_oldest_due_seconds" in text
