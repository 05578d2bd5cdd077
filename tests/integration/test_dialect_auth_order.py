"""In every dialect, who is calling is settled before anything about the request: a caller
with a bad key (or outside a key's IP allowlist, or without the permission) gets that answer
whatever its body says, and learns nothing about templates, fields or addresses."""

from __future__ import annotations

from typing import Any

import httpx

from posthorn.services.container import Services
from tests.support.domains import owner

BM_SEND = "/api/batch_mail/api/send"
BM_BATCH = "/api/batch_mail/api/batch_send"
MP_SEND = "/api/v1/mail/send"
MP_BATCH = "/api/v1/mail/send-batch"
BIZ_STORE = "/api/1.0/mail/store"

# Bodies each of which, from an authorised caller, is refused for what it says.
BAD_JSON_BODIES: list[dict[str, Any]] = [
    {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
    {"json": []},
    {"json": {"recipient": 5, "recipients": "x", "to": 7, "messages": 3}},
    {"json": {}},
]


def native(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


async def post(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], body: dict[str, Any]
) -> httpx.Response:
    """``body`` (keyword arguments for httpx, maybe with headers of its own) with ``headers``."""
    options = dict(body)
    return await http.post(path, headers={**options.pop("headers", {}), **headers}, **options)


def code_of(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.json()["code"])


# ── BillionMail ─────────────────────────────────────────────────────────────────────────


async def send_config(
    http: httpx.AsyncClient, services: Services, account: dict[str, str], **fields: Any
) -> dict[str, Any]:
    template = await services.templates.create(
        owner(account["account_id"]), name="t", subject="Hi {{ name }}", html="<p>{{ name }}</p>"
    )
    created = await http.post(
        "/v1/send-configs",
        json={"name": "fenced", "template_id": template.id, **fields},
        headers=native(account),
    )
    assert created.status_code == 200, created.text
    return {**created.json(), "template_id": template.id}


async def test_billionmail_outside_the_allowlist_is_1002_whatever_the_body(
    http: httpx.AsyncClient, services: Services, account: dict[str, str]
) -> None:
    fenced = await send_config(http, services, account, ip_allowlist=["10.0.0.0/8"])
    for path in (BM_SEND, BM_BATCH):
        for body in BAD_JSON_BODIES:
            answer = await post(http, path, {"X-API-Key": fenced["key"]}, body)
            assert code_of(answer) == 1002, (path, body, answer.text)
            assert "127.0.0.1" in answer.json()["msg"]
            # A key that is not a configuration's is 1001 first, with the same bodies.
            wrong = await post(http, path, {"X-API-Key": "bmk_wrong"}, body)
            assert code_of(wrong) == 1001, (path, body, wrong.text)


async def test_billionmail_outside_the_allowlist_hears_nothing_of_the_template(
    http: httpx.AsyncClient, services: Services, account: dict[str, str]
) -> None:
    """A template that needs a variable the request lacks (1005 for an allowed caller), then
    a template that is gone (1004): the fenced caller gets 1002 both times."""
    fenced = await send_config(
        http, services, account, ip_allowlist=["10.0.0.0/8"], subject="{{ missing.deep }}"
    )
    key = {"X-API-Key": fenced["key"]}
    for path, body in (
        (BM_SEND, {"recipient": "u@example.com", "attribs": "not an object"}),
        (BM_BATCH, {"recipients": ["u@example.com"]}),
    ):
        answer = await http.post(path, json=body, headers=key)
        assert code_of(answer) == 1002, answer.text
        assert "template" not in answer.json()["msg"].lower()
    gone = await http.delete(f"/v1/templates/{fenced['template_id']}", headers=native(account))
    assert gone.status_code in (200, 204), gone.text
    answer = await http.post(BM_SEND, json={"recipient": "u@example.com"}, headers=key)
    assert code_of(answer) == 1002, answer.text


# ── MailPass ────────────────────────────────────────────────────────────────────────────


async def test_mailpass_authenticates_and_authorises_before_reading_the_body(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    reader = {"Authorization": f"Bearer {account['read_only']}"}
    for path in (MP_SEND, MP_BATCH):
        for body in BAD_JSON_BODIES:
            wrong = await post(http, path, {"Authorization": "Bearer phk_wrong"}, body)
            assert wrong.status_code == 401, (path, body, wrong.text)
            assert wrong.json()["error"]["code"] == "UNAUTHORIZED"
            weak = await post(http, path, reader, body)
            assert weak.status_code == 403, (path, body, weak.text)
            assert weak.json()["error"]["code"] == "FORBIDDEN"


# ── BizMail ─────────────────────────────────────────────────────────────────────────────


async def test_bizmail_authenticates_before_reading_the_form(http: httpx.AsyncClient) -> None:
    bodies: list[dict[str, Any]] = [
        {"json": {"from": "x"}},  # not a form
        {"content": b"garbage", "headers": {"Content-Type": "multipart/form-data"}},
        {"data": {"subject": "no from, no to"}},
        {"data": {"from": "not an address", "to": "nor@this", "subject": "s"}},
    ]
    for body in bodies:
        wrong = await post(http, BIZ_STORE, {"Authorization": "Bearer not.a.jwt"}, body)
        assert wrong.status_code == 401, (body, wrong.text)
        assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
        missing = await post(http, BIZ_STORE, {}, body)
        assert missing.status_code == 401, (body, missing.text)


# ── v2 ──────────────────────────────────────────────────────────────────────────────────


async def test_v2_a_token_in_the_query_is_checked_before_the_body(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    """The body is not even read: malformed JSON or a broken form is not what the caller
    hears about when its token is wrong or lacks the permission."""
    for content_type, content in (
        ("application/json", b"{not json"),
        ("application/json", b"[1, 2]"),
        ("multipart/form-data", b"garbage"),
        ("text/plain", b"what"),
    ):
        headers = {"Content-Type": content_type}
        wrong = await http.post(
            "/api/v2/sendEmail?token=phk_wrong", content=content, headers=headers
        )
        assert wrong.status_code == 401, (content, wrong.text)
        assert wrong.json()["status"] == "ERROR"
        weak = await http.post(
            f"/api/v2/sendEmail?token={account['read_only']}", content=content, headers=headers
        )
        assert weak.status_code == 403, (content, weak.text)


async def test_v2_a_token_in_the_form_is_checked_before_the_fields(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    invalid = {"sender_email": "not an address", "list_ids": "x", "d_schedule": "soon"}
    for token, status in (("phk_wrong", 401), (account["read_only"], 403)):
        answer = await http.post("/api/v2/sendEmail", data={**invalid, "token": token})
        assert answer.status_code == status, answer.text
        as_json = await http.post("/api/v2/sendEmailByList", json={**invalid, "token": token})
        assert as_json.status_code == status, as_json.text
    # A file where the token should be is no token: 401, not a complaint about the field.
    filed = await http.post(
        "/api/v2/sendEmail", data=invalid, files={"token": ("token.txt", b"phk_x")}
    )
    assert filed.status_code == 401, filed.text
