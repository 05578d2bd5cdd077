"""``/v1/api-keys`` over real HTTP: shown once, masked after, permissions, revocation, allowlists."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from posthorn.services.container import Services, build_services
from posthorn.settings import Settings
from posthorn.store.database import Database
from tests.conftest import LiveServer, make_settings


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


async def test_create_list_get_delete_in_the_seed_shapes(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    response = await http.post(
        "/v1/api-keys",
        json={"name": "Production Server", "permission": "sending_access", "expires_in_days": 365},
        headers=h(account),
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert set(created) >= {"id", "name", "key", "permission", "expires_at", "created_at"}
    assert created["permission"] == "sending_access"
    assert created["key"].startswith("phk_") and len(created["key"]) > 40
    assert created["expires_at"].endswith("Z")

    listed = (await http.get("/v1/api-keys?per_page=100", headers=h(account))).json()
    assert listed["total"] == 4  # the three of the fixture and this one
    mine = next(k for k in listed["data"] if k["id"] == created["id"])
    assert mine["key"] == "phk_..." + created["key"][-4:]
    assert created["key"] not in str(listed)
    assert mine["is_expired"] is False

    detail = (
        await http.get(f"/v1/api-keys/{created['id']}", headers=h(account, "read_only"))
    ).json()
    assert detail["active"] is True and detail["is_expired"] is False
    assert "key" not in detail and set(detail) >= {"updated_at", "created_at", "permission"}

    # The new key works, until it is revoked; revocation applies to the very next request.
    assert (await http.get("/v1/emails", headers={"X-API-KEY": created["key"]})).status_code == 200
    deleted = await http.delete(f"/v1/api-keys/{created['id']}", headers=h(account))
    assert deleted.json() == {"id": created["id"], "deleted": True}
    assert (await http.get("/v1/emails", headers={"X-API-KEY": created["key"]})).status_code == 401
    assert (await http.get(f"/v1/api-keys/{created['id']}", headers=h(account))).status_code == 404
    again = await http.delete(f"/v1/api-keys/{created['id']}", headers=h(account))
    assert again.status_code == 404


@pytest.mark.parametrize("permission", ["sending_access", "read_only"])
async def test_only_full_access_manages_keys(
    http: httpx.AsyncClient, account: dict[str, str], permission: str
) -> None:
    create = await http.post("/v1/api-keys", json={"name": "x"}, headers=h(account, permission))
    assert create.status_code == 403
    keys = (await http.get("/v1/api-keys", headers=h(account))).json()["data"]
    delete = await http.delete(f"/v1/api-keys/{keys[0]['id']}", headers=h(account, permission))
    assert delete.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "expires_in_days": 10}, "expires_in_days"),
        ({"name": "x", "permission": "superuser"}, "permission"),
        ({"name": ""}, "name"),
        ({"name": "x", "ip_allowlist": ["10.0.0.0/33"]}, "ip_allowlist"),
        ({"name": "x", "ip_allowlist": ["example.com"]}, "ip_allowlist"),
    ],
)
async def test_invalid_key_requests(
    http: httpx.AsyncClient, account: dict[str, str], body: dict[str, object], field: str
) -> None:
    response = await http.post("/v1/api-keys", json=body, headers=h(account))
    assert response.status_code == 422
    assert field in response.json()["detail"]


async def test_keys_of_another_account_are_404(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    other = await services.accounts.create_account("globex")
    theirs = await services.accounts.create_key(other.id, name="theirs")
    assert (await http.get(f"/v1/api-keys/{theirs.row.id}", headers=h(account))).status_code == 404
    assert (
        await http.delete(f"/v1/api-keys/{theirs.row.id}", headers=h(account))
    ).status_code == 404
    assert (await http.get("/v1/emails", headers={"X-API-KEY": theirs.key})).status_code == 200


async def test_ip_allowlist(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    async def key_with(allowlist: list[str]) -> dict[str, str]:
        made = await http.post(
            "/v1/api-keys", json={"name": "ip", "ip_allowlist": allowlist}, headers=h(account)
        )
        assert made.status_code == 200, made.text
        return {"X-API-KEY": made.json()["key"]}

    outside = await key_with(["10.0.0.0/8", "2001:db8::/32"])
    response = await http.get("/v1/emails", headers=outside)
    assert response.status_code == 403 and "127.0.0.1" in response.json()["detail"]
    # A client cannot talk its way in with its own X-Forwarded-For: no proxy is trusted.
    spoofed = await http.get("/v1/emails", headers={**outside, "X-Forwarded-For": "10.1.2.3"})
    assert spoofed.status_code == 403
    inside = await key_with(["192.0.2.0/24", "127.0.0.0/8"])
    assert (await http.get("/v1/emails", headers=inside)).status_code == 200


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    tmp_path: Path, database_url: str, services: Services, account: dict[str, str]
) -> None:
    behind_proxy = make_settings(tmp_path, database_url, trusted_proxies=["127.0.0.1/32"])
    server = LiveServer(behind_proxy, services)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            made = await client.post(
                "/v1/api-keys",
                json={"name": "p", "ip_allowlist": ["10.0.0.0/8"]},
                headers=h(account),
            )
            key = {"X-API-KEY": made.json()["key"]}
            ok = await client.get("/v1/emails", headers={**key, "X-Forwarded-For": "10.1.2.3"})
            assert ok.status_code == 200
            # The left-most entry is whatever the client claimed; only the proxy's hop counts.
            forged = await client.get(
                "/v1/emails", headers={**key, "X-Forwarded-For": "10.1.2.3, 203.0.113.9"}
            )
            assert forged.status_code == 403
    finally:
        await server.stop()


async def test_a_key_revoked_by_another_process_cannot_send_even_while_cached(
    http: httpx.AsyncClient, account: dict[str, str], settings: Settings, services: Services
) -> None:
    """The send path reuses a recently read key row; revocation is checked where the email
    is queued, so a key revoked by another process stops sending on its very next request."""
    message = {"from": "hello@acme.test", "to": ["a@example.test"], "subject": "s", "text": "t"}
    first = await http.post("/v1/emails", json=message, headers=h(account, "sending_access"))
    assert first.status_code == 200  # the key's row is now in this process's cache

    elsewhere = Database(settings.effective_database_url)  # another process: its own cache
    other = build_services(settings, elsewhere)
    try:
        listed = await http.get("/v1/api-keys", headers=h(account))
        key_id = next(k["id"] for k in listed.json()["data"] if k["name"] == "sending_access")
        await other.accounts.revoke_key(account["account_id"], key_id)
    finally:
        await other.close()
        await elsewhere.dispose()

    refused = await http.post("/v1/emails", json=message, headers=h(account, "sending_access"))
    assert refused.status_code == 401, refused.text
    assert "detail" in refused.json()
    batch = await http.post(
        "/v1/emails/batch", json=[message], headers=h(account, "sending_access")
    )
    assert batch.status_code == 200 and batch.json()["data"][0]["error"]["status"] == 401
    emails = await http.get("/v1/emails", headers=h(account))
    assert emails.json()["total"] == 1  # only the email sent before the revocation
    reads = await http.get("/v1/emails", headers=h(account, "sending_access"))
    assert reads.status_code == 401  # everything but sending checks the key in full
