"""The edges every ``/v1`` route shares, over real HTTP: the key is checked before the body is
read, each route's body limit, bounded paging and unknown fields refused."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from posthorn.api.limits import SMALL_BODY_BYTES
from posthorn.api.paging import MAX_PAGE
from posthorn.services.container import Services
from posthorn.store.tables import emails
from tests.support.dns import DnsServer

MESSAGE: dict[str, Any] = {
    "from": "Acme <hello@acme.test>",
    "to": ["user@example.test"],
    "subject": "Hi",
    "html": "<p>Hi</p>",
}
BROKEN_JSON = b'{"from": "a@b.test", "to": ['


def key(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


def as_json(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", **(headers or {})}


async def stored_emails(services: Services) -> int:
    async with services.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(emails))).scalar_one())


# Item: the key and permission come before the body.


async def test_no_key_is_401_before_the_body_is_parsed(http: httpx.AsyncClient) -> None:
    for path in ("/v1/emails", "/v1/emails/batch", "/v1/domains", "/v1/templates"):
        response = await http.post(path, content=BROKEN_JSON, headers=as_json())
        assert response.status_code == 401, (path, response.text)


async def test_permission_is_checked_before_the_body_is_parsed(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    read_only = as_json(key(account, "read_only"))
    for path in ("/v1/emails", "/v1/emails/batch", "/v1/api-keys", "/v1/templates"):
        response = await http.post(path, content=BROKEN_JSON, headers=read_only)
        assert response.status_code == 403, (path, response.text)
    # A key that may send still gets the parse error.
    response = await http.post("/v1/emails", content=BROKEN_JSON, headers=as_json(key(account)))
    assert response.status_code == 400


async def test_small_routes_refuse_a_large_body_with_413(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    padding = "x" * (SMALL_BODY_BYTES + 1)
    for path, body in (
        ("/v1/domains", {"domain": "big.example.test", "pad": padding}),
        ("/v1/api-keys", {"name": padding}),
        ("/v1/webhooks", {"url": "https://hooks.example.test/" + padding}),
        ("/v1/suppressions", {"address": padding}),
    ):
        response = await http.post(path, json=body, headers=key(account))
        assert response.status_code == 413, (path, response.text)
        assert str(SMALL_BODY_BYTES) in response.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(SMALL_BODY_BYTES // 1000 + 2):
            yield b" " * 1000

    streamed = await http.post("/v1/domains", content=chunks(), headers=as_json(key(account)))
    assert streamed.status_code == 413


async def test_message_routes_take_bodies_up_to_the_message_limit(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    html = "<p>" + "y" * 200_000 + "</p>"
    response = await http.post("/v1/emails", json={**MESSAGE, "html": html}, headers=key(account))
    assert response.status_code == 200, response.text
    template = await http.post(
        "/v1/templates",
        json={"name": "big", "subject": "s", "html": html},
        headers=key(account),
    )
    assert template.status_code == 200, template.text
    assert await stored_emails(services) == 1


# Item: page and per_page are bounded on every list route.


async def list_routes(http: httpx.AsyncClient) -> list[str]:
    spec = (await http.get("/openapi.json")).json()
    found = []
    for path, operations in spec["paths"].items():
        get = operations.get("get")
        if get and any(p["name"] == "page" for p in get.get("parameters", [])):
            found.append(re.sub(r"\{[^}]+\}", "none", path))
    return found


async def test_every_list_route_refuses_an_out_of_range_page(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    routes = await list_routes(http)
    assert {"/v1/emails", "/v1/suppressions", "/v1/domains", "/v1/logs"} <= set(routes)
    assert len(routes) >= 12, routes
    for path in routes:
        for query, field in (
            ({"page": str(10**19)}, "page"),
            ({"page": str(MAX_PAGE + 1)}, "page"),
            ({"page": "0"}, "page"),
            ({"per_page": str(10**19)}, "per_page"),
            ({"per_page": "101"}, "per_page"),
        ):
            response = await http.get(path, params=query, headers=key(account))
            assert response.status_code == 422, (path, query, response.text)
            assert response.json()["detail"].startswith(field + ":"), (path, response.text)


async def test_the_last_allowed_page_is_empty_not_an_error(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    assert (await http.post("/v1/emails", json=MESSAGE, headers=key(account))).status_code == 200
    for path in ("/v1/emails", "/v1/suppressions", "/v1/domains", "/v1/logs", "/v1/api-keys"):
        response = await http.get(
            path, params={"page": MAX_PAGE, "per_page": 100}, headers=key(account)
        )
        assert response.status_code == 200, (path, response.text)
        answer = response.json()
        assert answer.get("data", answer.get("logs")) == []
        assert answer["page"] == MAX_PAGE


# Item: unknown fields on /v1 writes are refused.


async def test_a_misspelt_field_is_422_naming_it_and_nothing_is_sent(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    response = await http.post(
        "/v1/emails", json={**MESSAGE, "track_open": True}, headers=key(account)
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("track_open:")
    nested = await http.post(
        "/v1/emails",
        json={**MESSAGE, "attachments": [{"filename": "a.txt", "content": "aGk=", "type": "x"}]},
        headers=key(account),
    )
    assert nested.status_code == 422
    assert nested.json()["detail"].startswith("attachments[0].type:")
    assert await stored_emails(services) == 0


async def test_a_batch_item_with_an_unknown_field_is_refused_alone(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    response = await http.post(
        "/v1/emails/batch",
        json=[MESSAGE, {**MESSAGE, "trackOpens": True}],
        headers=key(account),
    )
    assert response.status_code == 200
    good, bad = response.json()["data"]
    assert "id" in good
    assert bad["error"]["status"] == 422
    assert bad["error"]["detail"].startswith("trackOpens:")
    assert await stored_emails(services) == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/domains", {"domain": "new.example.test", "dkim": "on"}),
        ("PATCH", "/v1/domains/{domain_id}", {"track_open": True}),
        ("POST", "/v1/api-keys", {"name": "k", "permissions": "read_only"}),
        ("POST", "/v1/webhooks", {"url": "https://hooks.example.test/x", "event": ["sent"]}),
        ("POST", "/v1/suppressions", {"address": "a@example.test", "why": "manual"}),
        ("POST", "/v1/templates", {"name": "t", "subject": "s", "htm": "<p>x</p>"}),
        (
            "POST",
            "/v1/relays",
            {"name": "r", "host": "smtp.example.test", "user": "u"},
        ),
        ("PATCH", "/v1/account", {"default_from": "a@acme.test"}),
    ],
)
async def test_unknown_fields_are_refused_on_every_write(
    http: httpx.AsyncClient, account: dict[str, str], method: str, path: str, body: dict[str, Any]
) -> None:
    unknown = next(k for k in body if k not in KNOWN)
    response = await http.request(
        method, path.format(domain_id=account["domain_id"]), json=body, headers=key(account)
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(unknown + ":"), response.text


KNOWN = {"domain", "name", "url", "address", "subject", "host"}


# 5xx found by fuzzing /openapi.json (tests/acceptance/test_openapi_fuzz.py).


@pytest.mark.parametrize(
    "content_type",
    ["x", "text/pl\u00e0in", "application/" + "a" * 243, "text/plain; " + "n=" + "v" * 240],
)
async def test_a_bad_attachment_content_type_is_422(
    http: httpx.AsyncClient, account: dict[str, str], content_type: str
) -> None:
    attachment = {"filename": "a.txt", "content": "aGk=", "content_type": content_type}
    response = await http.post(
        "/v1/emails", json={**MESSAGE, "attachments": [attachment]}, headers=key(account)
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert response.json()["detail"].startswith("attachments[0]"), response.text


async def test_patching_a_relay_field_to_null_is_422(
    http: httpx.AsyncClient, account: dict[str, str], dns: DnsServer
) -> None:
    dns.add("relay.example.test", "A", "93.184.216.34")  # public: saved, never dialled
    created = await http.post(
        "/v1/relays", json={"name": "r", "host": "relay.example.test"}, headers=key(account)
    )
    assert created.status_code == 200, created.text
    relay_id = created.json()["id"]
    for field in ("name", "host", "port", "tls", "is_default"):
        response = await http.patch(
            f"/v1/relays/{relay_id}", json={field: None}, headers=key(account)
        )
        assert response.status_code == 422, (field, response.text)
        assert response.json()["detail"].startswith(field + ":")
    cleared = await http.patch(
        f"/v1/relays/{relay_id}", json={"username": None, "password": None}, headers=key(account)
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["username"] is None and cleared.json()["has_password"] is False
