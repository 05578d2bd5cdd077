"""The MailPass dialect over real HTTP: the seed's examples and answer shapes, every error code,
and a full flow from /api/v1/mail/send through a real worker and SMTP sink to the status
endpoint, with open and click events recorded by the real tracking endpoints."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from sqlalchemy import func, select, text

from posthorn.services.container import Services
from posthorn.services.tracking import tracking_for
from posthorn.store.tables import emails
from tests.support.delivery import deliver_due
from tests.support.dns import DnsServer
from tests.support.domains import owner
from tests.support.sink import SmtpSink

SEND = "/api/v1/mail/send"
BATCH = "/api/v1/mail/send-batch"
STATUS = "/api/v1/mail/status/"
MESSAGE_ID = re.compile(r"^<[0-9a-f-]{36}@posthorn\.test>$")


def bearer(account: dict[str, str], permission: str = "sending_access") -> dict[str, str]:
    return {"Authorization": f"Bearer {account[permission]}"}


@pytest.fixture
def sink(dns: DnsServer) -> Iterator[SmtpSink]:
    dns.add("example.com", "MX", "mx.example.com")
    dns.add("mx.example.com", "A", "127.0.0.1")
    with SmtpSink(starttls=False) as server:
        yield server


async def set_default_sender(
    http: httpx.AsyncClient, account: dict[str, str], address: str | None
) -> None:
    response = await http.patch(
        "/v1/account",
        json={"default_sender": address},
        headers={"X-API-KEY": account["full_access"]},
    )
    assert response.status_code == 200, response.text


async def email_count(services: Services) -> int:
    async with services.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(emails))).scalar_one())


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


# ── the seed's own examples ──────────────────────────────────────────────────────────────


async def test_the_seed_curl_example_sends_from_the_default_sender(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    await set_default_sender(http, account, "support@acme.test")
    response = await http.post(
        SEND,
        headers={**bearer(account), "Content-Type": "application/json"},
        json={"to": "user@example.com", "subject": "Hello", "html": "<p>Hello World</p>"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert MESSAGE_ID.match(data["message_id"])
    assert data["status"] == "queued"
    assert data["to"] == "user@example.com" and data["from"] == "support@acme.test"


async def test_every_field_of_the_seed_request_body_is_kept(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    seed_body = {
        "to": "user@example.com",
        "subject": "Order Confirmation",
        "html": "<h1>Your order has been confirmed</h1>",
        "text": "Your order has been confirmed",
        "from_email": "support@acme.test",
        "from_name": "Your App",
        "reply_to": "reply@acme.test",
        "cc": ["cc@example.com"],
        "bcc": ["bcc@example.com"],
        "tags": ["order", "confirmation"],
        "metadata": {"order_id": "12345"},
    }
    response = await http.post(SEND, headers=bearer(account), json=seed_body)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["from"] == "support@acme.test" and data["to"] == "user@example.com"
    email = (
        await http.get(f"/v1/emails/{data['id']}", headers={"X-API-KEY": account["read_only"]})
    ).json()
    assert email["message_id"] == data["message_id"]
    assert email["from"] == "Your App <support@acme.test>"
    assert email["reply_to"] == "reply@acme.test"
    assert (email["to"], email["cc"], email["bcc"]) == (
        ["user@example.com"],
        ["cc@example.com"],
        ["bcc@example.com"],
    )
    assert email["tags"] == [{"name": "order", "value": ""}, {"name": "confirmation", "value": ""}]
    assert email["metadata"] == {"order_id": "12345"} and email["source"] == "mailpass"
    assert (email["html"], email["text"]) == (seed_body["html"], seed_body["text"])

    listed = await http.post(
        SEND, headers=bearer(account), json={**seed_body, "to": ["a@example.com", "b@example.com"]}
    )
    assert listed.json()["data"]["to"] == ["a@example.com", "b@example.com"]


async def test_the_seed_batch_example_queues_both(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    response = await http.post(
        BATCH,
        headers=bearer(account),
        json={
            "messages": [
                {"to": "a@example.com", "subject": "Hi A", "html": "<p>Hello A</p>"},
                {"to": "b@example.com", "subject": "Hi B", "html": "<p>Hello B</p>"},
            ],
            "from_email": "support@acme.test",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert (data["total"], data["queued"], data["failed"]) == (2, 2, 0)
    assert [m["to"] for m in data["messages"]] == ["a@example.com", "b@example.com"]
    for item in data["messages"]:
        assert item["status"] == "queued" and MESSAGE_ID.match(item["message_id"])
        stored = await http.get(
            f"/v1/emails/{item['queue_id']}", headers={"X-API-KEY": account["read_only"]}
        )
        assert stored.status_code == 200 and stored.json()["from"] == "support@acme.test"


# ── the full flow ────────────────────────────────────────────────────────────────────────


async def test_send_deliver_and_read_the_status_with_tracking_events(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    sent = await http.post(
        SEND,
        headers=bearer(account),
        json={
            "to": "user@example.com",
            "subject": "Order Confirmation",
            "html": '<p>Hi <a href="https://acme.test/orders/1">your order</a></p>',
            "from_email": "support@acme.test",
        },
    )
    data = sent.json()["data"]
    before = await http.get(STATUS + quote(data["message_id"], safe=""), headers=bearer(account))
    assert before.json()["data"]["message"]["status"] == "queued"
    assert before.json()["data"]["message"]["sent_at"] is None

    await deliver_due(services, sink)
    (received,) = sink.messages
    assert received.rcpt_tos == ("user@example.com",)
    assert f"Message-ID: {data['message_id']}".encode() in received.data

    # What the tracked message's pixel and link point at, fetched as a mail client would.
    links = tracking_for(
        services.settings,
        account_id=account["account_id"],
        email_id=data["id"],
        recipient="user@example.com",
        track_opens=True,
        track_clicks=True,
        unsubscribe=False,
    )
    assert links.html_rewrite is not None
    tracked = links.html_rewrite('<a href="https://acme.test/orders/1">order</a>')
    pixel, click = (
        urlsplit(re.search(pattern, tracked)[1]).path  # type: ignore[index]
        for pattern in (r'src="([^"]*/t/o/[^"]*)"', r'href="([^"]*/t/c/[^"]*)"')
    )
    agent = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Thunderbird/128.0"}
    assert (await http.get(pixel, headers=agent)).status_code == 200
    assert (await http.get(click, headers=agent, follow_redirects=False)).status_code == 302

    for form in (data["message_id"], data["message_id"].strip("<>")):
        response = await http.get(
            STATUS + quote(form, safe=""), headers=bearer(account, "read_only")
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True
        message = body["data"]["message"]
        assert message["message_id"] == data["message_id"]
        assert message["status"] == "delivered" and message["error_message"] is None
        assert (message["from_email"], message["to_email"]) == (
            "support@acme.test",
            "user@example.com",
        )
        assert message["subject"] == "Order Confirmation"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", message["sent_at"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", message["created_at"])
        events = body["data"]["events"]
        assert [e["event_type"] for e in events] == ["queued", "delivered", "open", "click"]
        opened, clicked = events[2], events[3]
        assert opened["ip_address"] == "127.0.0.1" and "Thunderbird" in opened["user_agent"]
        assert (
            clicked["url"] == "https://acme.test/orders/1" and clicked["ip_address"] == "127.0.0.1"
        )
        assert events[0]["ip_address"] is None and events[0]["recipient"] == "user@example.com"


async def test_a_bounce_shows_its_smtp_reply_as_the_error_message(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    sent = await http.post(
        SEND,
        headers=bearer(account),
        json={"to": "gone@example.com", "subject": "Hi", "text": "x", "from_email": "a@acme.test"},
    )
    sink.fail_next(stage="rcpt", code=550, message="5.1.1 <gone@example.com>: user unknown")
    await deliver_due(services, sink)
    message_id = sent.json()["data"]["message_id"]
    status = (await http.get(STATUS + quote(message_id, safe=""), headers=bearer(account))).json()
    message = status["data"]["message"]
    assert message["status"] == "bounced" and message["sent_at"] is None
    assert (
        message["error_message"].startswith("550 ") and "user unknown" in message["error_message"]
    )
    assert "bounced" in [e["event_type"] for e in status["data"]["events"]]


# ── errors ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "body",
    [
        {"subject": "no to", "html": "<p>x</p>", "from_email": "a@acme.test"},
        {"to": "user@example.com", "html": "<p>x</p>", "from_email": "a@acme.test"},
        {"to": "user@example.com", "subject": "no body", "from_email": "a@acme.test"},
        {"to": "not-an-address", "subject": "x", "text": "x", "from_email": "a@acme.test"},
        {"to": 42, "subject": "x", "text": "x", "from_email": "a@acme.test"},
        {"to": "user@example.com", "subject": "x", "text": "x", "from_email": "bad@@acme.test"},
        {
            "to": "user@example.com",
            "subject": "x",
            "text": "x",
            "from_email": "a@acme.test",
            "tags": "one",
        },
        {
            "to": "user@example.com",
            "subject": "x",
            "text": "x",
            "from_email": "a@acme.test",
            "cc": ["nope"],
        },
        ["not", "an", "object"],
    ],
)
async def test_bad_requests_are_validation_errors(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, body: Any
) -> None:
    assert_error(await http.post(SEND, headers=bearer(account), json=body), 400, "VALIDATION_ERROR")
    assert await email_count(services) == 0


async def test_unreadable_json_is_a_validation_error(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    response = await http.post(
        SEND, headers={**bearer(account), "Content-Type": "application/json"}, content=b"{nope"
    )
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert "JSON" in body["error"]["message"]


async def test_a_missing_field_is_named_in_the_message(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    response = await http.post(
        SEND, headers=bearer(account), json={"to": "u@example.com", "text": "x"}
    )
    assert (
        assert_error(response, 400, "VALIDATION_ERROR")["error"]["message"]
        == "subject: field required"
    )
    bad_from = await http.post(
        SEND,
        headers=bearer(account),
        json={"to": "u@example.com", "subject": "x", "text": "x", "from_email": "nope"},
    )
    assert assert_error(bad_from, 400, "VALIDATION_ERROR")["error"]["message"].startswith(
        "from_email:"
    )


async def test_no_smtp_provider_without_any_sender(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    message = {"to": "user@example.com", "subject": "Hello", "html": "<p>Hello</p>"}
    response = await http.post(SEND, headers=bearer(account), json=message)
    assert_error(response, 422, "NO_SMTP_PROVIDER")

    # The account's oldest sender stands in for a missing default sender…
    for address in ("first@acme.test", "second@acme.test"):
        await services.senders.create(
            owner(account["account_id"]), address=address, domain="acme.test", password="pw-" * 6
        )
    fallback = await http.post(SEND, headers=bearer(account), json=message)
    assert fallback.status_code == 200 and fallback.json()["data"]["from"] == "first@acme.test"
    # …and the default sender wins over it.
    await set_default_sender(http, account, "News <news@acme.test>")
    chosen = await http.post(SEND, headers=bearer(account), json={**message, "from_name": "Acme"})
    assert chosen.json()["data"]["from"] == "news@acme.test"


async def test_an_unverified_from_domain_depends_on_the_relay(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, dns: DnsServer
) -> None:
    dns.add("smtp.provider.test", "A", "93.184.216.34")  # saved, never connected to
    message = {
        "to": "user@example.com",
        "subject": "Hi",
        "text": "x",
        "from_email": "a@elsewhere.test",
    }
    body = assert_error(
        await http.post(SEND, headers=bearer(account), json=message), 422, "NO_SMTP_PROVIDER"
    )
    assert "elsewhere.test" in body["error"]["message"]
    await services.relays.create(
        owner(account["account_id"]),
        {"name": "provider", "host": "smtp.provider.test", "port": 587, "is_default": True},
    )
    body = assert_error(
        await http.post(SEND, headers=bearer(account), json=message), 400, "VALIDATION_ERROR"
    )
    assert "elsewhere.test" in body["error"]["message"]
    assert await email_count(services) == 0


async def test_the_domain_quota_is_send_limit_exceeded(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    await services.domains.update(
        owner(account["account_id"]), account["domain_id"], {"daily_limit": 1}
    )
    message = {"to": "user@example.com", "subject": "Hi", "text": "x", "from_email": "a@acme.test"}
    assert (await http.post(SEND, headers=bearer(account), json=message)).status_code == 200
    refused = await http.post(SEND, headers=bearer(account), json=message)
    assert_error(refused, 429, "SEND_LIMIT_EXCEEDED")
    assert int(refused.headers["Retry-After"]) > 0
    batch = await http.post(
        BATCH, headers=bearer(account), json={"messages": [message], "from_email": "a@acme.test"}
    )
    item = batch.json()["data"]["messages"][0]
    assert item["status"] == "failed" and item["error"]["code"] == "SEND_LIMIT_EXCEEDED"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer phk_wrong"},
        {"Authorization": "Basic abc"},
    ],
)
async def test_a_missing_or_wrong_key_is_unauthorized(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    message = {"to": "user@example.com", "subject": "Hi", "text": "x"}
    assert_error(await http.post(SEND, headers=headers, json=message), 401, "UNAUTHORIZED")
    assert_error(
        await http.post(BATCH, headers=headers, json={"messages": [message]}), 401, "UNAUTHORIZED"
    )
    assert_error(await http.get(STATUS + "x@y", headers=headers), 401, "UNAUTHORIZED")


async def test_a_read_only_key_may_read_the_status_but_not_send(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    message = {"to": "user@example.com", "subject": "Hi", "text": "x", "from_email": "a@acme.test"}
    assert_error(
        await http.post(SEND, headers=bearer(account, "read_only"), json=message), 403, "FORBIDDEN"
    )
    assert_error(
        await http.post(BATCH, headers=bearer(account, "read_only"), json={"messages": [message]}),
        403,
        "FORBIDDEN",
    )
    sent = (await http.post(SEND, headers=bearer(account, "full_access"), json=message)).json()[
        "data"
    ]
    status = await http.get(
        STATUS + quote(sent["message_id"]), headers=bearer(account, "read_only")
    )
    assert status.status_code == 200


async def test_an_unknown_or_foreign_message_id_is_not_found(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    assert_error(
        await http.get(STATUS + quote("<nope@posthorn.test>"), headers=bearer(account)),
        404,
        "NOT_FOUND",
    )
    message = {"to": "user@example.com", "subject": "Hi", "text": "x", "from_email": "a@acme.test"}
    sent = (await http.post(SEND, headers=bearer(account), json=message)).json()["data"]
    other = await services.accounts.create_account("other")
    key = (await services.accounts.create_key(other.id, name="k")).key
    foreign = await http.get(
        STATUS + quote(sent["message_id"]), headers={"Authorization": f"Bearer {key}"}
    )
    assert_error(foreign, 404, "NOT_FOUND")


async def test_a_batch_answers_each_message_alone(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    messages: list[Any] = [
        {"to": "a@example.com", "subject": "A", "text": "a"},
        {"to": "not-an-address", "subject": "B", "text": "b"},
        {"to": "c@example.com", "subject": "C", "text": "c", "from_email": "x@unverified.test"},
        {"to": "d@example.com", "text": "no subject"},
        "not an object",
        {"to": "f@example.com", "subject": "F", "text": "f", "from_name": "Own Name"},
    ]
    response = await http.post(
        BATCH,
        headers=bearer(account),
        json={"messages": messages, "from_email": "hi@acme.test", "from_name": "Acme"},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["total"], data["queued"], data["failed"]) == (6, 2, 4)
    items = data["messages"]
    assert [i["status"] for i in items] == [
        "queued",
        "failed",
        "failed",
        "failed",
        "failed",
        "queued",
    ]
    assert [i.get("error", {}).get("code") for i in items] == [
        None,
        "VALIDATION_ERROR",
        "NO_SMTP_PROVIDER",
        "VALIDATION_ERROR",
        "VALIDATION_ERROR",
        None,
    ]
    assert "messages[3].subject" in items[3]["error"]["message"]
    own = (
        await http.get(
            f"/v1/emails/{items[5]['queue_id']}", headers={"X-API-KEY": account["read_only"]}
        )
    ).json()
    assert own["from"] == "Own Name <hi@acme.test>"
    assert await email_count(services) == 2


@pytest.mark.parametrize("count", [0, 101])
async def test_a_batch_of_none_or_over_100_is_refused_whole(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, count: int
) -> None:
    message = {"to": "user@example.com", "subject": "Hi", "text": "x"}
    response = await http.post(
        BATCH,
        headers=bearer(account),
        json={"messages": [message] * count, "from_email": "a@acme.test"},
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    assert await email_count(services) == 0
    hundred = await http.post(
        BATCH,
        headers=bearer(account),
        json={"messages": [message] * 100, "from_email": "a@acme.test"},
    )
    assert hundred.json()["data"]["queued"] == 100


async def test_a_server_fault_is_send_failed(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    async with services.db.write() as conn:
        await conn.execute(text("DROP TABLE usage_counters"))
    message = {"to": "user@example.com", "subject": "Hi", "text": "x", "from_email": "a@acme.test"}
    body = assert_error(
        await http.post(SEND, headers=bearer(account), json=message), 500, "SEND_FAILED"
    )
    assert "usage_counters" not in body["error"]["message"]
    batch = await http.post(BATCH, headers=bearer(account), json={"messages": [message]})
    assert batch.json()["data"]["messages"][0]["error"]["code"] == "SEND_FAILED"


async def test_a_suppressed_recipient_is_answered_as_rejected(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    await http.post(
        "/v1/suppressions",
        json={"address": "blocked@example.com"},
        headers={"X-API-KEY": account["full_access"]},
    )
    message = {
        "to": "blocked@example.com",
        "subject": "Hi",
        "text": "x",
        "from_email": "a@acme.test",
    }
    data = (await http.post(SEND, headers=bearer(account), json=message)).json()["data"]
    assert data["status"] == "rejected"
    status = (await http.get(STATUS + quote(data["message_id"]), headers=bearer(account))).json()
    assert status["data"]["message"]["status"] == "rejected"
    assert status["data"]["message"]["error_message"] == "blocked@example.com: suppressed manual"
