"""The v2 form API (seed 004) over real HTTP: the seed's requests and answer shapes for every
method, full flows into a real SMTP sink, and every error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from posthorn.bulk_runner import BulkRunner
from posthorn.services.container import Services
from posthorn.store.events import insert_events
from posthorn.store.tables import emails, suppressions, utcnow
from tests.support.delivery import deliver_due
from tests.support.dns import DnsServer
from tests.support.domains import owner
from tests.support.sink import SmtpSink

LETTER = {
    "sender_email": "from@acme.test",
    "sender_name": "SENDER",
    "subject": "Letter Heading",
    "message": "<p>Letter</p>",
}


@pytest.fixture
def sink(dns: DnsServer) -> Iterator[SmtpSink]:
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    with SmtpSink(starttls=False) as server:
        yield server


async def run_jobs(services: Services) -> None:
    settings = services.settings.model_copy(update={"bulk_rate_per_second": 1000})
    await BulkRunner(services, settings=settings).run_until_idle(within=30)


async def call(
    http: httpx.AsyncClient, method: str, data: Any = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    response = await http.post(f"/api/v2/{method}", data=data, **kwargs)
    return response.status_code, response.json()


def ok(answer: tuple[int, dict[str, Any]]) -> Any:
    status, body = answer
    assert status == 200 and body["status"] == "OK", body
    return body.get("result")


def refused(answer: tuple[int, dict[str, Any]], status: int, *words: str) -> None:
    code, body = answer
    assert code == status, body
    assert body["status"] == "ERROR" and set(body) == {"status", "error"}, body
    for word in words:
        assert word in body["error"], body


async def make_list(
    services: Services, account: dict[str, str], emails_: list[str]
) -> dict[str, Any]:
    who = owner(account["account_id"])
    created = await services.lists.create(who, "Subscribers")
    await services.lists.add_contacts(
        who, created["id"], [{"email": e, "variables": {"name": e[:2]}} for e in emails_]
    )
    return created


async def test_send_email_is_delivered_and_shows_in_the_delivery_list(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    files = {"attachment": ("report.txt", b"numbers", "text/plain")}
    form = {
        "token": account["sending_access"],
        **LETTER,
        "email": "user@example.test",
        "track_open": "0",
        "track_click": "1",
    }
    result = ok(await call(http, "sendEmail", form, files=files))
    assert set(result) == {"email_id"} and isinstance(result["email_id"], int)
    async with services.db.read() as conn:
        row = (
            await conn.execute(
                select(
                    emails.c.from_header,
                    emails.c.track_opens,
                    emails.c.track_clicks,
                    emails.c.attachments,
                    emails.c.source,
                )
            )
        ).one()
    assert row.from_header == "SENDER <from@acme.test>" and (row.track_opens, row.track_clicks) == (
        0,
        1,
    )
    assert row.attachments[0]["filename"] == "report.txt" and row.source == "v2"

    number = str(result["email_id"])
    before = ok(
        await call(
            http, "getEmailDeliveryList", {"token": account["read_only"], "message_id": number}
        )
    )
    assert before == [
        {"email_id": number, "email": "user@example.test", "status": "QUEUED", "error": ""}
    ]
    await deliver_due(services, sink)
    assert [m.rcpt_tos for m in sink.messages] == [("user@example.test",)]
    after = ok(
        await call(
            http, "getEmailDeliveryList", {"token": account["read_only"], "message_id": number}
        )
    )
    assert after[0]["status"] == "DELIVERED" and after[0]["error"] == ""


async def test_send_email_by_list_runs_a_paced_job_and_reports_each_recipient(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    people = ["ann@example.test", "bob@example.test", "cid@example.test"]
    created = await make_list(services, account, people)
    ok(
        await call(
            http,
            "unsubscribeEmail",
            {
                "token": account["full_access"],
                "email": "bob@example.test",
                "list_ids": str(created["numeric_id"]),
                "reason": "too many",
            },
        )
    )
    form = {
        "token": account["full_access"],
        "list_id": str(created["numeric_id"]),
        **LETTER,
        "subject": "Hello {{ name }}",
        "name": "Newsletter №1",
    }
    result = ok(await call(http, "sendEmailByList", form))
    assert set(result) == {"message_id", "count_emails"} and result["count_emails"] == 2
    assert isinstance(result["message_id"], int)

    await run_jobs(services)
    await deliver_due(services, sink)
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["ann@example.test", "cid@example.test"]
    ann_message = next(m for m in sink.messages if m.rcpt_tos[0] == "ann@example.test")
    assert b"Subject: Hello an" in ann_message.data

    # Someone opens one letter and clicks in the other.
    async with services.db.read() as conn:
        ids = {
            r.to_addrs[0]: r.id for r in await conn.execute(select(emails.c.id, emails.c.to_addrs))
        }
    async with services.db.write() as conn:
        await insert_events(
            conn,
            [
                {
                    "account_id": account["account_id"],
                    "email_id": ids["ann@example.test"],
                    "type": "opened",
                    "recipient": "ann@example.test",
                    "data": {},
                    "created_at": utcnow(),
                },
                {
                    "account_id": account["account_id"],
                    "email_id": ids["cid@example.test"],
                    "type": "clicked",
                    "recipient": "cid@example.test",
                    "data": {},
                    "created_at": utcnow(),
                },
            ],
        )
    listed = ok(
        await call(
            http,
            "getEmailDeliveryList",
            {"token": account["read_only"], "message_id": str(result["message_id"])},
        )
    )
    assert [(r["email"], r["status"], r["error"]) for r in listed] == [
        ("ann@example.test", "OPEN", ""),
        ("bob@example.test", "UNSUBSCRIBED", ""),
        ("cid@example.test", "CLICK", ""),
    ]
    assert listed[0]["email_id"].isdigit() and listed[1]["email_id"] == ""
    assert all(set(r) == {"email_id", "email", "status", "error"} for r in listed)


async def test_send_bulk_email_bulk_and_personal_with_status(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    bulk_form = {
        "token": account["sending_access"],
        "name": "Newsletter №1",
        **LETTER,
        "message_type": "bulk",
        "d_schedule": "",
        "track_open": "1",
        "track_click": "1",
        "delivery_list[0]": "email1@example.test",
        "delivery_list[1]": "email2@example.test",
        "delivery_list[2]": "email3@mail",
    }
    result = ok(await call(http, "sendBulkEmail", bulk_form))
    assert set(result) == {"uuid"} and len(result["uuid"]) == 36

    personal = {
        "token": account["sending_access"],
        "name": "Newsletter №2",
        "sender_email": "from@acme.test",
        "sender_name": "SENDER",
        "message_type": "personal",
        "delivery_list": json.dumps(
            [
                {
                    "email": "email1@example.test",
                    "subject": "Letter Heading 1",
                    "message": "Letter 1",
                },
                {
                    "email": "email2@example.test",
                    "subject": "Letter Heading 2",
                    "message": "Letter 2",
                },
                {"email": "email4@example.test"},
            ]
        ),
    }
    second = ok(await call(http, "sendBulkEmail", personal))
    await run_jobs(services)
    await deliver_due(services, sink)
    subjects = sorted(m.data.split(b"Subject: ")[1].split(b"\r\n")[0] for m in sink.messages)
    assert subjects == [
        b"Letter Heading",
        b"Letter Heading",
        b"Letter Heading 1",
        b"Letter Heading 2",
    ]

    status = ok(
        await call(http, "statusBulkEmail", {"token": account["read_only"], "uuid": result["uuid"]})
    )
    (mailing,) = status
    assert set(mailing) == {
        "message_id",
        "name",
        "sender_email",
        "sender_name",
        "success",
        "errors",
    }
    assert (mailing["name"], mailing["sender_email"], mailing["sender_name"]) == (
        "Newsletter №1",
        "from@acme.test",
        "SENDER",
    )
    assert mailing["message_id"].isdigit()
    assert [(s["recipient"], s["status"], s["error"]) for s in mailing["success"]] == [
        ("email1@example.test", "DELIVERED", None),
        ("email2@example.test", "DELIVERED", None),
    ]
    assert all(s["email_id"].isdigit() for s in mailing["success"])
    assert mailing["errors"] == [
        {"email": "email3@mail", "error": "The recipient's email address is incorrect"}
    ]
    other = ok(
        await call(
            http,
            "statusBulkEmail",
            {"token": account["read_only"], "uuid": "blk_" + second["uuid"]},
        )
    )
    assert [e["email"] for e in other[0]["errors"]] == ["email4@example.test"]
    # The mailing's number works with getEmailDeliveryList too.
    listed = ok(
        await call(
            http,
            "getEmailDeliveryList",
            {"token": account["read_only"], "message_id": mailing["message_id"]},
        )
    )
    assert [r["status"] for r in listed] == ["DELIVERED", "DELIVERED", "UNDELIVERED"]
    assert listed[2]["error"] == "The recipient's email address is incorrect"


async def test_form_arrays_of_objects_and_a_json_body(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    form = {
        "token": account["full_access"],
        "sender_email": "from@acme.test",
        "message_type": "personal",
        "delivery_list[0][email]": "a@example.test",
        "delivery_list[0][subject]": "S1",
        "delivery_list[0][message]": "M1",
        "delivery_list[1][email]": "b@example.test",
        "delivery_list[1][subject]": "S2",
        "delivery_list[1][message]": "M2",
    }
    uuid = ok(await call(http, "sendBulkEmail", form))["uuid"]
    body = {
        "token": account["full_access"],
        **LETTER,
        "message_type": "bulk",
        "delivery_list": ["c@example.test", "d@example.test"],
        "track_open": 0,
    }
    response = await http.post("/api/v2/sendBulkEmail", json=body)
    assert response.status_code == 200 and response.json()["status"] == "OK"
    await run_jobs(services)
    async with services.db.read() as conn:
        rows = (
            await conn.execute(select(emails.c.to_addrs, emails.c.subject, emails.c.html))
        ).all()
    found = {tuple(r.to_addrs): (r.subject, r.html) for r in rows}
    assert found[("a@example.test",)] == ("S1", "M1") and found[("b@example.test",)] == ("S2", "M2")
    assert found[("c@example.test",)] == ("Letter Heading", "<p>Letter</p>")
    status = ok(
        await call(http, "statusBulkEmail", {"token": account["full_access"], "uuid": uuid})
    )
    assert [s["status"] for s in status[0]["success"]] == ["QUEUED", "QUEUED"]


async def test_d_schedule_is_local_time_of_the_account(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    zone = await http.patch(
        "/v1/account",
        json={"timezone": "Asia/Ho_Chi_Minh"},
        headers={"X-API-KEY": account["full_access"]},
    )
    assert zone.status_code == 200, zone.text
    local = (datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")) + timedelta(days=2)).replace(
        second=0, microsecond=0
    )
    form = {
        "token": account["full_access"],
        **LETTER,
        "email": "u@example.test",
        "d_schedule": local.strftime("%Y-%m-%d %H:%M"),
    }
    ok(await call(http, "sendEmail", form))
    async with services.db.read() as conn:
        when = (await conn.execute(select(emails.c.scheduled_at))).scalar_one()
    assert when == local.astimezone(UTC)

    bulk = {
        "token": account["full_access"],
        **LETTER,
        "delivery_list[]": "v@example.test",
        "d_schedule": local.strftime("%Y-%m-%d %H:%M"),
    }
    uuid = ok(await call(http, "sendBulkEmail", bulk))["uuid"]
    job = await services.bulk.get(account["account_id"], "blk_" + uuid)
    assert job["next_run_at"] == local.astimezone(UTC) and job["status"] == "queued"


async def test_unsubscribe_and_subscribe_on_some_or_all_lists(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    first = await make_list(services, account, ["x@example.test", "y@example.test"])
    second = await make_list(services, account, ["x@example.test"])
    token = account["sending_access"]
    assert (await call(http, "unsubscribeEmail", {"token": token, "email": "x@example.test"})) == (
        200,
        {"status": "OK"},
    )
    async with services.db.read() as conn:
        scopes = sorted(
            (
                await conn.execute(
                    select(suppressions.c.scope).where(suppressions.c.address == "x@example.test")
                )
            ).scalars()
        )
    assert scopes == sorted([first["id"], second["id"]])
    for created in (first, second):
        contacts, _ = await services.lists.contacts(
            account["account_id"], created["id"], page=1, per_page=10, status="unsubscribed"
        )
        assert [c["email"] for c in contacts] == ["x@example.test"]

    ok(
        await call(
            http,
            "subscribeEmail",
            {"token": token, "email": "x@example.test", "list_ids": str(first["numeric_id"])},
        )
    )
    contacts, _ = await services.lists.contacts(
        account["account_id"], first["id"], page=1, per_page=10, status="unsubscribed"
    )
    assert contacts == []
    ok(await call(http, "subscribeEmail", {"token": token, "email": "X@example.test"}))
    async with services.db.read() as conn:
        assert (await conn.execute(select(suppressions.c.scope))).all() == []
    # A list named by its lst_ id works as well as by its number.
    ok(
        await call(
            http,
            "unsubscribeEmail",
            {"token": token, "email": "y@example.test", "list_ids": f" {first['id']} "},
        )
    )


async def test_get_email_templates_with_the_token_in_the_query(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    who = owner(account["account_id"])
    await services.templates.create(who, name="Template name", subject="S", html="<p>x</p>")
    await services.templates.create(who, name="Name of the second template", subject="S", text="x")
    response = await http.post(f"/api/v2/getEmailTemplates?token={account['read_only']}")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "OK"
    assert [t["title"] for t in body["result"]] == ["Template name", "Name of the second template"]
    assert all(isinstance(t["id"], int) and set(t) == {"id", "title"} for t in body["result"])
    again = (await http.get(f"/api/v2/getEmailTemplates?token={account['read_only']}")).json()
    assert again == body


async def test_every_error_is_an_error_envelope(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    send = {"token": account["full_access"], **LETTER, "email": "u@example.test"}
    refused(
        await call(http, "sendEmail", {k: v for k, v in send.items() if k != "token"}),
        401,
        "Missing API key",
    )
    refused(await call(http, "sendEmail", {**send, "token": "phk_wrong"}), 401)
    refused(
        await call(http, "sendEmail", {**send, "token": account["read_only"]}), 403, "read_only"
    )
    refused(
        await call(http, "sendEmail", {k: v for k, v in send.items() if k != "email"}), 422, "email"
    )
    refused(
        await call(http, "sendEmail", {k: v for k, v in send.items() if k != "subject"}),
        422,
        "subject",
    )
    refused(await call(http, "sendEmail", {**send, "email": "nope"}), 422, "email", "nope")
    refused(
        await call(http, "sendEmail", {**send, "sender_email": "a@unverified.test"}),
        403,
        "unverified.test",
    )
    refused(
        await call(http, "sendEmail", {**send, "d_schedule": "31/12/2024 12:00"}), 422, "d_schedule"
    )
    far = (datetime.now(UTC) + timedelta(days=40)).strftime("%Y-%m-%d %H:%M")
    refused(
        await call(http, "sendEmail", {**send, "d_schedule": far}), 422, "d_schedule", "30 days"
    )
    refused(await call(http, "sendEmail", {**send, "track_open": "maybe"}), 422, "track_open")
    refused(await call(http, "sendEmailByList", {**send, "list_id": "12x"}), 422, "list_id")
    refused(await call(http, "sendEmailByList", {**send, "list_id": "999999"}), 404, "list")
    refused(
        await call(
            http, "getEmailDeliveryList", {"token": account["read_only"], "message_id": "999999"}
        ),
        404,
    )
    refused(
        await call(http, "getEmailDeliveryList", {"token": account["read_only"]}), 422, "message_id"
    )
    refused(
        await call(http, "statusBulkEmail", {"token": account["read_only"], "uuid": "nope"}), 404
    )
    bulk = {**send, "delivery_list[0]": "a@example.test"}
    refused(
        await call(http, "sendBulkEmail", {**bulk, "message_type": "other"}), 422, "message_type"
    )
    refused(await call(http, "sendBulkEmail", send), 422, "delivery_list")
    refused(
        await call(http, "sendBulkEmail", {**send, "delivery_list": "[not json"}),
        422,
        "delivery_list",
    )
    refused(await call(http, "sendBulkEmail", {**bulk, "delivery_list[0][a][b]": "x"}), 422)
    refused(await call(http, "unsubscribeEmail", {"token": account["full_access"]}), 422, "email")
    refused(
        await call(
            http,
            "unsubscribeEmail",
            {"token": account["full_access"], "email": "a@example.test", "list_ids": "1,abc"},
        ),
        422,
        "list_ids",
    )
    refused(
        await call(http, "noSuchMethod", {"token": account["full_access"]}), 404, "noSuchMethod"
    )
    raw = await http.post(
        "/api/v2/sendEmail", content=b"[1]", headers={"Content-Type": "application/json"}
    )
    refused((raw.status_code, raw.json()), 400)
    xml = await http.post(
        "/api/v2/sendEmail", content=b"<x/>", headers={"Content-Type": "application/xml"}
    )
    refused((xml.status_code, xml.json()), 400)
    vietnamese = await http.post(
        "/api/v2/sendEmail",
        data={k: v for k, v in send.items() if k != "token"},
        headers={"Content-Language": "vi"},
    )
    assert vietnamese.json()["error"] == "Thiếu API key"

    # Another account's numbers are not found.
    uuid = ok(await call(http, "sendBulkEmail", {**bulk}))["uuid"]
    email_id = ok(await call(http, "sendEmail", send))["email_id"]
    other = await services.accounts.create_account("other")
    key = (await services.accounts.create_key(other.id, name="k")).key
    refused(await call(http, "statusBulkEmail", {"token": key, "uuid": uuid}), 404)
    refused(
        await call(http, "getEmailDeliveryList", {"token": key, "message_id": str(email_id)}), 404
    )
