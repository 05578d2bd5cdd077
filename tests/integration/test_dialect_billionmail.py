"""The BillionMail dialect over real HTTP: send configurations managed through /v1/send-configs,
the seed's example requests and envelope, every error code, batch sends, and a full flow from
/api/batch_mail/api/send through a real worker and SMTP sink to per-configuration statistics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select, text, update

from posthorn.services.container import Services
from posthorn.services.tracking import tracking_for
from posthorn.store.tables import deliveries, emails
from tests.support.delivery import deliver_due
from tests.support.dns import DnsServer
from tests.support.domains import owner
from tests.support.sink import SmtpSink

SEND = "/api/batch_mail/api/send"
BATCH = "/api/batch_mail/api/batch_send"
CONFIGS = "/v1/send-configs"
SENT_OK = {"success": True, "code": 0, "msg": "Email sent successfully", "data": None}


def native(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


def api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture
def sink(dns: DnsServer) -> Iterator[SmtpSink]:
    dns.add("example.com", "MX", "mx.example.com")
    dns.add("mx.example.com", "A", "127.0.0.1")
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
async def template_id(services: Services, account: dict[str, str]) -> str:
    row = await services.templates.create(
        owner(account["account_id"]),
        name="welcome",
        subject="Welcome, {{ name | default('friend') }}",
        html='<p>Hello {{ name | default("friend") }}, see <a href="https://acme.test/start">the start</a></p>',
        text="Hello {{ name | default('friend') }}",
    )
    return row.id


async def create_config(
    http: httpx.AsyncClient, account: dict[str, str], **fields: Any
) -> dict[str, Any]:
    response = await http.post(
        CONFIGS, json={"name": "welcome api", **fields}, headers=native(account)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
async def config(
    http: httpx.AsyncClient, account: dict[str, str], template_id: str
) -> dict[str, Any]:
    return await create_config(http, account, template_id=template_id, addresser="hello@acme.test")


def assert_coded(response: httpx.Response, code: int) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == code, body
    assert isinstance(body["msg"], str) and body["msg"]
    return dict(body)


def parsed(data: bytes) -> EmailMessage:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


# ── managing send configurations ─────────────────────────────────────────────────────────


async def test_send_configs_are_created_once_shown_listed_changed_and_deleted(
    http: httpx.AsyncClient, account: dict[str, str], template_id: str
) -> None:
    created = await create_config(
        http,
        account,
        template_id=template_id,
        subject="Hi {{ name }}",
        ip_allowlist=["127.0.0.1"],
        addresser="hello@acme.test",
    )
    key = created["key"]
    assert re.fullmatch(r"bmk_[A-Za-z0-9_-]{43}", key)
    assert created["id"].startswith("cfg_") and created["template_id"] == template_id
    assert (created["track_opens"], created["track_clicks"], created["unsubscribe"]) == (
        True,
        True,
        False,
    )
    assert created["ip_allowlist"] == ["127.0.0.1/32"]

    listed = (await http.get(CONFIGS, headers=native(account, "read_only"))).json()
    assert listed["total"] == 1 and listed["data"][0]["key"] == f"bmk_...{key[-4:]}"
    assert key not in str(listed)
    one = await http.get(f"{CONFIGS}/{created['id']}", headers=native(account, "read_only"))
    assert one.status_code == 200 and one.json()["key"] == f"bmk_...{key[-4:]}"

    changed = await http.patch(
        f"{CONFIGS}/{created['id']}",
        json={"subject": None, "track_clicks": False, "unsubscribe": True, "ip_allowlist": None},
        headers=native(account),
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert (
        after["subject"],
        after["track_clicks"],
        after["unsubscribe"],
        after["ip_allowlist"],
    ) == (
        None,
        False,
        True,
        None,
    )
    assert after["name"] == "welcome api" and after["track_opens"] is True

    rotated = await http.post(f"{CONFIGS}/{created['id']}/rotate-key", headers=native(account))
    new_key = rotated.json()["key"]
    assert new_key != key and new_key.startswith("bmk_")
    assert_coded(
        await http.post(SEND, json={"recipient": "u@example.com"}, headers=api_key(key)), 1001
    )
    assert (
        await http.post(SEND, json={"recipient": "u@example.com"}, headers=api_key(new_key))
    ).json() == SENT_OK

    deleted = await http.delete(f"{CONFIGS}/{created['id']}", headers=native(account))
    assert deleted.json() == {"id": created["id"], "deleted": True}
    assert (
        await http.get(f"{CONFIGS}/{created['id']}", headers=native(account))
    ).status_code == 404
    assert_coded(
        await http.post(SEND, json={"recipient": "u@example.com"}, headers=api_key(new_key)), 1001
    )


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({}, 422),
        ({"template_id": "tpl_missing"}, 422),
        ({"addresser": "not an address"}, 422),
        ({"ip_allowlist": ["10.0.0.300"]}, 422),
        ({"subject": "{{ unclosed"}, 422),
    ],
)
async def test_bad_send_configs_are_refused(
    http: httpx.AsyncClient,
    account: dict[str, str],
    template_id: str,
    fields: dict[str, Any],
    status: int,
) -> None:
    body = {"name": "x", "template_id": template_id, **fields}
    if not fields:
        body.pop("template_id")
    response = await http.post(CONFIGS, json=body, headers=native(account))
    assert response.status_code == status, response.text
    assert (await http.get(CONFIGS, headers=native(account))).json()["total"] == 0


async def test_only_full_access_keys_manage_send_configs(
    http: httpx.AsyncClient, account: dict[str, str], config: dict[str, Any], template_id: str
) -> None:
    for permission in ("sending_access", "read_only"):
        headers = native(account, permission)
        body = {"name": "x", "template_id": template_id}
        assert (await http.post(CONFIGS, json=body, headers=headers)).status_code == 403
        assert (
            await http.patch(f"{CONFIGS}/{config['id']}", json={"name": "y"}, headers=headers)
        ).status_code == 403
        assert (await http.delete(f"{CONFIGS}/{config['id']}", headers=headers)).status_code == 403
    assert (await http.get(CONFIGS, headers={"X-API-KEY": "phk_nope"})).status_code == 401


# ── the seed's examples ──────────────────────────────────────────────────────────────────


async def test_the_seed_curl_and_python_examples(
    http: httpx.AsyncClient, account: dict[str, str], config: dict[str, Any], services: Services
) -> None:
    # curl: only the recipient; the sender is the configuration's.
    response = await http.post(
        SEND,
        headers={"X-API-Key": config["key"], "Content-Type": "application/json"},
        json={"recipient": "user@example.com"},
    )
    assert response.status_code == 200 and response.json() == SENT_OK
    # The request body table: a custom addresser.
    custom = await http.post(
        SEND,
        headers=api_key(config["key"]),
        json={"recipient": "user@example.com", "addresser": "team@acme.test"},
    )
    assert custom.json() == SENT_OK
    async with services.db.read() as conn:
        rows = (
            await conn.execute(
                select(emails.c.from_email, emails.c.source).order_by(emails.c.created_at)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("hello@acme.test", "billion"),
        ("team@acme.test", "billion"),
    ]


# ── the full flow ────────────────────────────────────────────────────────────────────────


async def test_send_render_deliver_track_and_read_the_statistics(
    http: httpx.AsyncClient,
    account: dict[str, str],
    template_id: str,
    services: Services,
    sink: SmtpSink,
) -> None:
    config = await create_config(
        http, account, template_id=template_id, addresser="Acme <hello@acme.test>", unsubscribe=True
    )
    bounced = await http.post(
        SEND, headers=api_key(config["key"]), json={"recipient": "gone@example.com"}
    )
    assert bounced.json() == SENT_OK
    sink.fail_next(stage="rcpt", code=550, message="5.1.1 user unknown")
    await deliver_due(services, sink)
    assert sink.messages == []

    sent = await http.post(
        SEND,
        headers=api_key(config["key"]),
        json={"recipient": "user@example.com", "attribs": {"name": "Ada <3"}},
    )
    assert sent.json() == SENT_OK
    other = await create_config(http, account, template_id=template_id, addresser="hello@acme.test")
    assert (
        await http.post(SEND, headers=api_key(other["key"]), json={"recipient": "x@example.com"})
    ).json() == SENT_OK
    await deliver_due(services, sink)
    by_recipient = {m.rcpt_tos[0]: parsed(m.data) for m in sink.messages}
    assert set(by_recipient) == {"user@example.com", "x@example.com"}
    message = by_recipient["user@example.com"]
    assert message["Subject"] == "Welcome, Ada <3" and message["From"] == "Acme <hello@acme.test>"
    assert "Hello Ada &lt;3" in body_of(message, "html")
    assert "Unsubscribe" in body_of(message, "html") and "Unsubscribe" in body_of(message, "plain")

    async with services.db.read() as conn:
        row = (
            await conn.execute(
                select(
                    emails.c.id,
                    emails.c.tags,
                    emails.c.track_opens,
                    emails.c.track_clicks,
                    emails.c.template_id,
                ).where(emails.c.subject == "Welcome, Ada <3")
            )
        ).one()
    # A reader opens mail later than a prefetcher does (machine_activity.PREFETCH_WINDOW).
    async with services.db.write() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.email_id == row.id)
            .values(delivered_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    assert row.tags == [{"name": "send_config", "value": config["id"]}]
    assert (row.track_opens, row.track_clicks, row.template_id) == (1, 1, template_id)

    # The recipient opens, clicks and unsubscribes through the links the message carries.
    links = tracking_for(
        services.settings,
        account_id=account["account_id"],
        email_id=row.id,
        recipient="user@example.com",
        track_opens=True,
        track_clicks=True,
        unsubscribe=True,
    )
    assert links.html_rewrite is not None and links.unsubscribe is not None
    tracked = links.html_rewrite('<a href="https://acme.test/start">go</a>')
    pixel = urlsplit(re.search(r'src="([^"]*/t/o/[^"]*)"', tracked)[1]).path  # type: ignore[index]
    click = urlsplit(re.search(r'href="([^"]*/t/c/[^"]*)"', tracked)[1]).path  # type: ignore[index]
    agent = {"User-Agent": "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 Mail/3774"}
    assert (await http.get(pixel, headers=agent)).status_code == 200
    assert (await http.get(click, headers=agent, follow_redirects=False)).status_code == 302
    unsubscribe = urlsplit(links.unsubscribe[0]).path
    done = await http.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200

    stats = await http.get(f"{CONFIGS}/{config['id']}/stats", headers=native(account, "read_only"))
    assert stats.status_code == 200, stats.text
    report = stats.json()
    assert (
        report["send_config_id"] == config["id"] and report["tag"] == f"send_config:{config['id']}"
    )
    totals = report["totals"]
    assert (totals["sent"], totals["delivered"], totals["bounced"]) == (2, 1, 1)
    assert (totals["opened"], totals["clicked"], totals["unsubscribed"]) == (1, 1, 1)
    assert report["rates"] == {
        "delivery": 0.5,
        "open": 1.0,
        "click_through": 1.0,
        "bounce": 0.5,
        "unsubscribe": 1.0,
    }
    assert report["interval"] == "day" and len(report["series"]) >= 7
    hourly = await http.get(
        f"{CONFIGS}/{config['id']}/stats?interval=hour", headers=native(account)
    )
    assert hourly.json()["totals"]["sent"] == 2
    other_stats = (await http.get(f"{CONFIGS}/{other['id']}/stats", headers=native(account))).json()
    assert (other_stats["totals"]["sent"], other_stats["totals"]["delivered"]) == (1, 1)
    assert (await http.get(f"{CONFIGS}/cfg_nope/stats", headers=native(account))).status_code == 404
    bad = await http.get(f"{CONFIGS}/{config['id']}/stats?interval=week", headers=native(account))
    assert bad.status_code == 422

    # The unsubscribed address is not sent to again.
    again = await http.post(
        SEND, headers=api_key(config["key"]), json={"recipient": "user@example.com"}
    )
    assert_coded(again, 1005)


async def test_tracking_switches_follow_the_configuration(
    http: httpx.AsyncClient, account: dict[str, str], template_id: str, services: Services
) -> None:
    quiet = await create_config(
        http,
        account,
        template_id=template_id,
        addresser="hello@acme.test",
        track_opens=False,
        track_clicks=False,
    )
    assert (
        await http.post(SEND, headers=api_key(quiet["key"]), json={"recipient": "u@example.com"})
    ).json() == SENT_OK
    async with services.db.read() as conn:
        row = (
            await conn.execute(select(emails.c.track_opens, emails.c.track_clicks, emails.c.html))
        ).one()
    assert (row.track_opens, row.track_clicks) == (0, 0)
    assert "Unsubscribe" not in row.html


# ── errors ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "bmk_wrong"}, {"X-API-Key": "not-a-key"}])
async def test_1001_for_a_missing_or_unknown_key(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    assert_coded(await http.post(SEND, json={"recipient": "u@example.com"}, headers=headers), 1001)
    assert_coded(
        await http.post(BATCH, json={"recipients": ["u@example.com"]}, headers=headers), 1001
    )


async def test_1001_for_a_native_api_key(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    response = await http.post(
        SEND, json={"recipient": "u@example.com"}, headers=api_key(account["full_access"])
    )
    assert_coded(response, 1001)


async def test_1002_outside_the_ip_allowlist(
    http: httpx.AsyncClient, account: dict[str, str], template_id: str
) -> None:
    fenced = await create_config(
        http, account, template_id=template_id, ip_allowlist=["10.0.0.0/8", "2001:db8::/32"]
    )
    body = assert_coded(
        await http.post(SEND, json={"recipient": "u@example.com"}, headers=api_key(fenced["key"])),
        1002,
    )
    assert "127.0.0.1" in body["msg"]
    assert_coded(
        await http.post(
            BATCH, json={"recipients": ["u@example.com"]}, headers=api_key(fenced["key"])
        ),
        1002,
    )
    await http.patch(
        f"{CONFIGS}/{fenced['id']}", json={"ip_allowlist": ["127.0.0.0/8"]}, headers=native(account)
    )
    sender = await http.patch(
        "/v1/account", json={"default_sender": "hello@acme.test"}, headers=native(account)
    )
    assert sender.status_code == 200, sender.text
    ok = await http.post(SEND, json={"recipient": "u@example.com"}, headers=api_key(fenced["key"]))
    assert ok.json() == SENT_OK


@pytest.mark.parametrize(
    "body",
    [
        {"recipient": "not-an-address"},
        {"recipient": ""},
        {"recipient": "a@example.com, b@example.com"},
        {"addresser": "hello@acme.test"},
        {"recipient": 42},
        ["u@example.com"],
    ],
)
async def test_1003_for_a_bad_recipient(
    http: httpx.AsyncClient, config: dict[str, Any], services: Services, body: Any
) -> None:
    assert_coded(await http.post(SEND, json=body, headers=api_key(config["key"])), 1003)
    async with services.db.read() as conn:
        assert (await conn.execute(select(emails.c.id))).first() is None


async def test_1003_for_an_unreadable_body(http: httpx.AsyncClient, config: dict[str, Any]) -> None:
    response = await http.post(
        SEND,
        content=b"recipient=u@example.com",
        headers={**api_key(config["key"]), "Content-Type": "application/json"},
    )
    assert_coded(response, 1003)


async def test_1004_when_the_template_is_gone(
    http: httpx.AsyncClient, account: dict[str, str], config: dict[str, Any], template_id: str
) -> None:
    assert (
        await http.delete(f"/v1/templates/{template_id}", headers=native(account))
    ).status_code == 200
    body = assert_coded(
        await http.post(SEND, json={"recipient": "u@example.com"}, headers=api_key(config["key"])),
        1004,
    )
    assert "template" in body["msg"]
    # BillionMail checks the template before the recipient.
    assert_coded(
        await http.post(SEND, json={"recipient": "nope"}, headers=api_key(config["key"])), 1004
    )
    assert_coded(
        await http.post(
            BATCH, json={"recipients": ["u@example.com"]}, headers=api_key(config["key"])
        ),
        1004,
    )


async def test_1005_when_sending_fails(
    http: httpx.AsyncClient, account: dict[str, str], template_id: str, services: Services
) -> None:
    foreign = await create_config(
        http, account, template_id=template_id, addresser="x@unverified.test"
    )
    body = assert_coded(
        await http.post(SEND, json={"recipient": "u@example.com"}, headers=api_key(foreign["key"])),
        1005,
    )
    assert "unverified.test" in body["msg"]

    strict = await services.templates.create(
        owner(account["account_id"]),
        name="strict",
        subject="Order {{ order_id }}",
        text="Order {{ order_id }}",
    )
    needs_vars = await create_config(http, account, template_id=strict.id, addresser="a@acme.test")
    missing = assert_coded(
        await http.post(
            SEND, json={"recipient": "u@example.com"}, headers=api_key(needs_vars["key"])
        ),
        1005,
    )
    assert "order_id" in missing["msg"]
    filled = await http.post(
        SEND,
        json={"recipient": "u@example.com", "attribs": {"order_id": 7}},
        headers=api_key(needs_vars["key"]),
    )
    assert filled.json() == SENT_OK

    no_sender = await create_config(http, account, template_id=template_id)
    nobody = await http.post(
        SEND, json={"recipient": "u@example.com"}, headers=api_key(no_sender["key"])
    )
    assert assert_coded(nobody, 1005)["msg"].startswith("addresser:")

    await services.domains.update(
        owner(account["account_id"]), account["domain_id"], {"daily_limit": 1}
    )
    quota = await http.post(
        SEND,
        json={"recipient": "u@example.com", "attribs": {"order_id": 8}},
        headers=api_key(needs_vars["key"]),
    )
    assert_coded(quota, 1005)
    assert int(quota.headers["Retry-After"]) > 0


async def test_1005_for_a_suppressed_recipient(
    http: httpx.AsyncClient, account: dict[str, str], config: dict[str, Any]
) -> None:
    await http.post(
        "/v1/suppressions", json={"address": "blocked@example.com"}, headers=native(account)
    )
    body = assert_coded(
        await http.post(
            SEND, json={"recipient": "blocked@example.com"}, headers=api_key(config["key"])
        ),
        1005,
    )
    assert "blocked@example.com" in body["msg"]


async def test_a_server_fault_is_a_500_with_1005(
    http: httpx.AsyncClient, config: dict[str, Any], services: Services
) -> None:
    async with services.db.write() as conn:
        await conn.execute(text("DROP TABLE usage_counters"))
    response = await http.post(
        SEND, json={"recipient": "u@example.com"}, headers=api_key(config["key"])
    )
    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "code": 1005,
        "msg": "Internal server error",
        "data": None,
    }


# ── batch sends ──────────────────────────────────────────────────────────────────────────


async def test_batch_send_renders_each_recipient_with_its_own_attribs(
    http: httpx.AsyncClient,
    account: dict[str, str],
    config: dict[str, Any],
    services: Services,
    sink: SmtpSink,
) -> None:
    response = await http.post(
        BATCH,
        headers=api_key(config["key"]),
        json={
            "recipients": [
                {"recipient": "ada@example.com", "attribs": {"name": "Ada"}},
                "plain@example.com",
                {"recipient": "grace@example.com", "attribs": {"name": "Grace"}},
                "broken",
                {"attribs": {"name": "nobody"}},
                {"recipient": "x@example.com", "attribs": "not an object"},
            ],
            "attribs": {"name": "Team"},
        },
    )
    body = response.json()
    assert response.status_code == 200 and body["success"] is True and body["code"] == 0
    assert body["msg"] == "Batch email send request accepted, 3 emails queued"
    data = body["data"]
    assert (data["total"], data["queued"], data["failed"]) == (6, 3, 3)
    assert [(r["recipient"], r["code"]) for r in data["results"]] == [
        ("ada@example.com", 0),
        ("plain@example.com", 0),
        ("grace@example.com", 0),
        ("broken", 1003),
        (None, 1003),
        (None, 1005),
    ]
    assert all(re.fullmatch(r"<.+@posthorn\.test>", r["message_id"]) for r in data["results"][:3])
    await deliver_due(services, sink)
    subjects = {m.rcpt_tos[0]: parsed(m.data)["Subject"] for m in sink.messages}
    assert subjects == {
        "ada@example.com": "Welcome, Ada",
        "plain@example.com": "Welcome, Team",
        "grace@example.com": "Welcome, Grace",
    }


async def test_batch_send_with_nothing_queued_fails_whole(
    http: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    invalid = await http.post(
        BATCH, headers=api_key(config["key"]), json={"recipients": ["a", "b"]}
    )
    body = assert_coded(invalid, 1003)
    assert body["data"]["failed"] == 2
    assert_coded(
        await http.post(BATCH, headers=api_key(config["key"]), json={"recipients": []}), 1003
    )
    assert_coded(
        await http.post(
            BATCH, headers=api_key(config["key"]), json={"recipients": ["a@example.com"] * 501}
        ),
        1003,
    )
    assert_coded(await http.post(BATCH, headers=api_key(config["key"]), json={}), 1003)
