"""``/v1/webhooks`` over real HTTP: secrets shown once, validation, SSRF refusals at save,
permissions, other accounts' webhooks, pagination."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from posthorn.services.container import Services
from posthorn.services.webhooks import Webhooks
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.tables import webhook_messages, webhooks
from posthorn.webhooks.resolver import DnsHostResolver
from tests.conftest import LiveServer, make_settings
from tests.support.dns import DnsServer

URL = "http://127.0.0.1:9/hook"  # never contacted: nothing here runs the dispatcher


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dns: DnsServer) -> Settings:
    return make_settings(
        tmp_path, database_url, dns_nameservers=[dns.nameserver], webhook_allow_private=True
    )


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


async def create(http: httpx.AsyncClient, account: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await http.post("/v1/webhooks", json={"url": URL, **body}, headers=h(account))
    assert response.status_code == 200, response.text
    made: dict[str, Any] = response.json()
    return made


async def test_the_secret_is_shown_once_and_stored_sealed(
    http: httpx.AsyncClient, account: dict[str, str], db: Database
) -> None:
    made = await create(http, account, events=["email.delivered", "email.bounced"])
    assert made["id"].startswith("wh_") and made["url"] == URL
    assert made["events"] == ["email.delivered", "email.bounced"] and made["enabled"] is True
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    assert made["created_at"].endswith("Z") and made["previous_secret_expires_at"] is None

    listed = (await http.get("/v1/webhooks", headers=h(account))).json()
    assert listed["total"] == 1 and listed["data"][0]["id"] == made["id"]
    got = (await http.get(f"/v1/webhooks/{made['id']}", headers=h(account, "read_only"))).json()
    for shown in (listed["data"][0], got):
        assert "secret" not in shown
    assert secret not in str(listed) + str(got)
    async with db.read() as conn:
        stored = (await conn.execute(select(webhooks.c.secret))).scalar_one()
    assert secret not in stored and secret[6:] not in stored


async def test_update_and_delete(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    made = await create(http, account)
    patched = await http.patch(
        f"/v1/webhooks/{made['id']}",
        json={"events": ["email.opened"], "url": "http://127.0.0.1:9/other"},
        headers=h(account),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["events"] == ["email.opened"]
    assert patched.json()["url"].endswith("/other") and patched.json()["enabled"] is True
    off = await http.patch(
        f"/v1/webhooks/{made['id']}", json={"enabled": False}, headers=h(account)
    )
    assert off.json()["enabled"] is False and off.json()["disabled_reason"] is None
    # A disabled endpoint can be neither tested nor retried: 409 says to enable it first.
    test = await http.post(f"/v1/webhooks/{made['id']}/test", headers=h(account))
    assert test.status_code == 409 and "enable" in test.json()["detail"]
    all_events = await http.patch(
        f"/v1/webhooks/{made['id']}", json={"events": []}, headers=h(account)
    )
    assert all_events.json()["events"] == []

    deleted = await http.delete(f"/v1/webhooks/{made['id']}", headers=h(account))
    assert deleted.json() == {"id": made["id"], "deleted": True}
    assert (await http.get(f"/v1/webhooks/{made['id']}", headers=h(account))).status_code == 404
    again = await http.delete(f"/v1/webhooks/{made['id']}", headers=h(account))
    assert again.status_code == 404


async def test_test_and_rotate_over_http(
    http: httpx.AsyncClient, account: dict[str, str], db: Database
) -> None:
    made = await create(http, account, events=["email.delivered"])
    test = await http.post(f"/v1/webhooks/{made['id']}/test", headers=h(account))
    assert test.status_code == 200, test.text
    queued = test.json()
    assert queued["event_type"] == "webhook.test" and queued["status"] == "pending"
    assert queued["id"].startswith("msg_") and queued["attempts"] == 0
    async with db.read() as conn:
        payload = (
            await conn.execute(
                select(webhook_messages.c.payload).where(webhook_messages.c.id == queued["id"])
            )
        ).scalar_one()
    assert payload["type"] == "webhook.test" and payload["data"] == {"test": True}

    rotated = await http.post(f"/v1/webhooks/{made['id']}/rotate-secret", headers=h(account))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != made["secret"]
    assert rotated.json()["previous_secret_expires_at"] is not None
    got = (await http.get(f"/v1/webhooks/{made['id']}", headers=h(account))).json()
    assert got["previous_secret_expires_at"] == rotated.json()["previous_secret_expires_at"]


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"url": URL, "events": ["email.delivered", "email.exploded"]}, "email.exploded"),
    ({"url": URL, "events": ["webhook.test"]}, "webhook.test"),
    ({"url": "ftp://example.com/hook"}, "http"),
    ({"url": "http:///nohost"}, "host"),
    ({"url": "https://user:pw@example.com/"}, "password"),
    ({"url": "https://example.com/" + "a" * 2100}, "url"),
    ({"events": ["email.sent"]}, "url"),
    ({"url": URL, "enabled": "perhaps"}, "enabled"),
]


async def test_invalid_webhooks_are_422(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    for body, words in INVALID:
        response = await http.post("/v1/webhooks", json=body, headers=h(account))
        assert response.status_code == 422, (body, response.text)
        assert words in response.json()["detail"], body
    assert (await http.get("/v1/webhooks", headers=h(account))).json()["total"] == 0


async def test_vietnamese_messages(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    response = await http.post(
        "/v1/webhooks",
        json={"url": URL, "events": ["nope"]},
        headers={**h(account), "Content-Language": "vi"},
    )
    assert response.status_code == 422 and "sự kiện" in response.json()["detail"]


async def test_pagination(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    ids = [(await create(http, account))["id"] for _ in range(3)]
    first = (await http.get("/v1/webhooks?per_page=2", headers=h(account))).json()
    second = (await http.get("/v1/webhooks?per_page=2&page=2", headers=h(account))).json()
    assert first["total"] == second["total"] == 3
    assert (first["page"], first["per_page"], second["page"]) == (1, 2, 2)
    assert [w["id"] for w in first["data"] + second["data"]] == ids[::-1]  # newest first
    too_many = await http.get("/v1/webhooks?per_page=101", headers=h(account))
    assert too_many.status_code == 422


@pytest.mark.parametrize("permission", ["sending_access", "read_only"])
async def test_only_full_access_changes_webhooks(
    http: httpx.AsyncClient, account: dict[str, str], permission: str
) -> None:
    made = await create(http, account)
    path = f"/v1/webhooks/{made['id']}"
    key = h(account, permission)
    denied = [
        await http.post("/v1/webhooks", json={"url": URL}, headers=key),
        await http.patch(path, json={"enabled": False}, headers=key),
        await http.delete(path, headers=key),
        await http.post(f"{path}/test", headers=key),
        await http.post(f"{path}/rotate-secret", headers=key),
        await http.post(f"{path}/deliveries/msg_x/retry", headers=key),
    ]
    assert [r.status_code for r in denied] == [403] * len(denied)
    for read in ("/v1/webhooks", path, f"{path}/deliveries"):
        assert (await http.get(read, headers=key)).status_code == 200
    assert (await http.get(path, headers=h(account))).json()["enabled"] is True


async def test_another_accounts_webhook_is_404(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    other = await services.accounts.create_account("globex")
    their_key = (await services.accounts.create_key(other.id, name="theirs")).key
    theirs = await http.post("/v1/webhooks", json={"url": URL}, headers={"X-API-KEY": their_key})
    assert theirs.status_code == 200
    path = f"/v1/webhooks/{theirs.json()['id']}"
    key = h(account)
    answers = [
        await http.get(path, headers=key),
        await http.patch(path, json={"enabled": False}, headers=key),
        await http.delete(path, headers=key),
        await http.post(f"{path}/test", headers=key),
        await http.post(f"{path}/rotate-secret", headers=key),
        await http.get(f"{path}/deliveries", headers=key),
        await http.post(f"{path}/deliveries/msg_x/retry", headers=key),
    ]
    assert [r.status_code for r in answers] == [404] * len(answers)
    assert (await http.get("/v1/webhooks", headers=key)).json()["total"] == 0
    mine = await create(http, account)
    unknown = await http.post(
        f"/v1/webhooks/{mine['id']}/deliveries/msg_unknown/retry", headers=key
    )
    assert unknown.status_code == 404


@pytest.fixture
async def strict_http(
    tmp_path: Path, settings: Settings, services: Services, db: Database, dns: DnsServer
) -> AsyncIterator[httpx.AsyncClient]:
    """The API as deployed: webhooks to private addresses are refused."""
    strict = settings.model_copy(update={"webhook_allow_private": False})
    strict_services = dataclasses.replace(
        services, webhooks=Webhooks(db, strict, DnsHostResolver(strict))
    )
    server = LiveServer(strict, strict_services)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        await server.stop()


REFUSED = [
    ("http://127.0.0.1:8000/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://10.0.0.5/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://[fd00::1]/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://internal.example.test/hook", "private"),
    ("http://mixed.example.test/hook", "loopback"),  # one bad address is enough
    ("http://nowhere.example.test/hook", "does not resolve"),
]


async def test_private_destinations_are_refused_at_save(
    strict_http: httpx.AsyncClient, account: dict[str, str], dns: DnsServer
) -> None:
    dns.add("internal.example.test", "A", "192.168.10.20")
    dns.add("mixed.example.test", "A", "93.184.216.34")
    dns.add("mixed.example.test", "A", "127.0.0.1")
    for url, problem in REFUSED:
        response = await strict_http.post("/v1/webhooks", json={"url": url}, headers=h(account))
        assert response.status_code == 422, (url, response.text)
        assert problem in response.json()["detail"], url
    assert (await strict_http.get("/v1/webhooks", headers=h(account))).json()["total"] == 0


async def test_a_public_destination_is_accepted_and_private_refused_on_update(
    strict_http: httpx.AsyncClient, account: dict[str, str], dns: DnsServer
) -> None:
    # Only resolved here, never connected to.
    dns.add("hooks.example.test", "A", "93.184.216.34")
    dns.add("hooks.example.test", "AAAA", "2606:2800:220:1:248:1893:25c8:1946")
    made = await strict_http.post(
        "/v1/webhooks", json={"url": "https://hooks.example.test/in"}, headers=h(account)
    )
    assert made.status_code == 200, made.text
    moved = await strict_http.patch(
        f"/v1/webhooks/{made.json()['id']}",
        json={"url": "http://127.0.0.1:8000/"},
        headers=h(account),
    )
    assert moved.status_code == 422 and "loopback" in moved.json()["detail"]


async def test_metadata_is_refused_even_when_private_destinations_are_allowed(
    http: httpx.AsyncClient, account: dict[str, str], dns: DnsServer
) -> None:
    """Tests and internal receivers may allow private addresses; the cloud metadata endpoint
    stays out of reach all the same, as a literal or behind a name."""
    dns.add("meta.example.test", "A", "169.254.169.254")
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://meta.example.test/hook",
    ):
        response = await http.post("/v1/webhooks", json={"url": url}, headers=h(account))
        assert response.status_code == 422, (url, response.text)
        assert "metadata" in response.json()["detail"], url
    allowed = await http.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:8000/hook"}, headers=h(account)
    )
    assert allowed.status_code == 200, allowed.text
