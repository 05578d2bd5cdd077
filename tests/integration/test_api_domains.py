"""``/v1/domains`` over real HTTP with a real DNS server: records, verification, quotas,
rotation, deletion, and the rule that only verified domains send."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from posthorn.services.container import Services
from posthorn.services.signing import DkimSigner
from posthorn.store.tables import dkim_keys, emails, senders
from tests.support.dns import DnsServer
from tests.support.domains import owner, publish


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


async def create(http: httpx.AsyncClient, account: dict[str, str], name: str) -> dict[str, Any]:
    response = await http.post("/v1/domains", json={"domain": name}, headers=h(account))
    assert response.status_code == 200, response.text
    return dict(response.json())


def by_purpose(records: list[dict[str, Any]], purpose: str) -> list[dict[str, Any]]:
    return [r for r in records if r["purpose"] == purpose]


async def test_create_returns_the_records_to_publish(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    domain = await create(http, account, "Mail.Example.Test")
    assert domain["id"].startswith("dom_")
    assert domain["domain"] == "mail.example.test"
    assert domain["status"] == "pending"
    assert domain["created_at"].endswith("Z")
    records = domain["dns_records"]
    (spf,) = by_purpose(records, "spf")
    assert spf == {
        "type": "TXT",
        "name": "@",
        "value": "v=spf1 include:_spf.posthorn.test ~all",
        "purpose": "spf",
    }
    (mx,) = by_purpose(records, "mx")
    assert mx == {
        "type": "MX",
        "name": "@",
        "value": "posthorn.test",
        "priority": 10,
        "purpose": "mx",
    }
    rsa = [r for r in by_purpose(records, "dkim") if "k=rsa" in r["value"]]
    assert len(rsa) == 1 and rsa[0]["name"].endswith("._domainkey")
    assert rsa[0]["value"].startswith("v=DKIM1; k=rsa; p=MIIBIjANBgkqh")  # RSA-2048 SPKI
    (dmarc,) = by_purpose(records, "dmarc")
    assert dmarc["name"] == "_dmarc" and dmarc["value"].startswith("v=DMARC1")


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "192.168.1.1",
        "[::1]",
        "co.uk",
        "com",
        "a" * 64 + ".com",
        ".".join(["abcdefgh"] * 30) + ".com",
        "exa mple.com",
        "-bad.com",
        "bad-.com",
        "",
    ],
)
async def test_invalid_domain_names_are_422(
    http: httpx.AsyncClient, account: dict[str, str], name: str
) -> None:
    response = await http.post("/v1/domains", json={"domain": name}, headers=h(account))
    assert response.status_code == 422
    assert "domain" in response.json()["detail"]


async def test_a_verified_domain_belongs_to_one_account(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    await create(http, account, "shop.test")
    again = await http.post("/v1/domains", json={"domain": "SHOP.test."}, headers=h(account))
    assert again.status_code == 409
    other = await services.accounts.create_account("globex")
    other_key = (await services.accounts.create_key(other.id, name="k")).key
    # acme.test is verified by the account fixture's account.
    theirs = await http.post(
        "/v1/domains", json={"domain": "acme.test"}, headers={"X-API-KEY": other_key}
    )
    assert theirs.status_code == 409
    assert "acme" not in theirs.text.replace("acme.test", "")
    assert account["account_id"] not in theirs.text


@pytest.mark.parametrize("permission", ["sending_access", "read_only"])
async def test_only_full_access_manages_domains(
    http: httpx.AsyncClient, account: dict[str, str], permission: str
) -> None:
    denied = await http.post(
        "/v1/domains", json={"domain": "x.test"}, headers=h(account, permission)
    )
    assert denied.status_code == 403
    verify = await http.post(
        f"/v1/domains/{account['domain_id']}/verify", headers=h(account, permission)
    )
    assert verify.status_code == 403
    delete = await http.delete(
        f"/v1/domains/{account['domain_id']}", headers=h(account, permission)
    )
    assert delete.status_code == 403
    assert (await http.get("/v1/domains", headers=h(account, permission))).status_code == 200


async def test_verification_follows_the_dns(
    http: httpx.AsyncClient, account: dict[str, str], dns: DnsServer
) -> None:
    domain = await create(http, account, "news.test")
    failed = (await http.post(f"/v1/domains/{domain['id']}/verify", headers=h(account))).json()
    assert failed["status"] == "pending"
    assert failed["verified_at"] is None
    assert all(r["verified"] is False for r in failed["dns_records"])

    # Publish everything except the MX record, and an SPF record that forgot our include.
    records = domain["dns_records"]
    publish(dns, "news.test", [r for r in records if r["purpose"] in ("dkim", "dmarc")])
    dns.add("news.test", "TXT", "v=spf1 include:_spf.google.com ~all")
    partial = (await http.post(f"/v1/domains/{domain['id']}/verify", headers=h(account))).json()
    assert partial["status"] == "pending"
    states = {r["purpose"]: r for r in partial["dns_records"]}
    assert states["dkim"]["verified"] is True
    assert states["mx"]["verified"] is False and states["mx"]["found"] == []
    assert states["spf"]["verified"] is False
    assert states["spf"]["found"] == ["v=spf1 include:_spf.google.com ~all"]

    dns.remove("news.test", "TXT")
    publish(dns, "news.test", [r for r in records if r["purpose"] in ("spf", "mx")])
    done = (await http.post(f"/v1/domains/{domain['id']}/verify", headers=h(account))).json()
    assert done["status"] == "verified" and done["verified_at"].endswith("Z")
    assert all(r["verified"] for r in done["dns_records"] if r["purpose"] in ("spf", "mx", "dkim"))

    # GET shows the live state: take the MX away and it says so at once.
    dns.remove("news.test", "MX")
    live = (await http.get(f"/v1/domains/{domain['id']}", headers=h(account, "read_only"))).json()
    assert by_purpose(live["dns_records"], "mx")[0]["verified"] is False


async def test_list_search_and_counts(http: httpx.AsyncClient, account: dict[str, str]) -> None:
    for name in ("alpha.test", "beta.test", "alphabet.test"):
        await create(http, account, name)
    everything = (await http.get("/v1/domains?per_page=2", headers=h(account))).json()
    assert everything["total"] == 4 and everything["total_verified"] == 1  # acme.test
    assert len(everything["data"]) == 2 and everything["per_page"] == 2
    alpha = (await http.get("/v1/domains?search=alpha", headers=h(account))).json()
    assert sorted(d["domain"] for d in alpha["data"]) == ["alpha.test", "alphabet.test"]
    assert alpha["total"] == 2 and alpha["total_verified"] == 0
    assert set(alpha["data"][0]) == {"id", "domain", "status", "verified_elsewhere", "created_at"}


async def test_other_accounts_domains_are_404(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    other = await services.accounts.create_account("globex")
    key = {"X-API-KEY": (await services.accounts.create_key(other.id, name="k")).key}
    for method, path in [
        ("GET", ""),
        ("POST", "/verify"),
        ("GET", "/quota"),
        ("DELETE", ""),
        ("PATCH", ""),
    ]:
        response = await http.request(
            method,
            f"/v1/domains/{account['domain_id']}{path}",
            headers=key,
            json={} if method == "PATCH" else None,
        )
        assert response.status_code == 404, (method, path)


MESSAGE = {"from": "hello@acme.test", "subject": "Hi", "text": "hello"}


async def test_only_verified_domains_of_the_account_may_send(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    await create(http, account, "pending.test")
    for sender in ("hello@pending.test", "hello@nowhere.test"):
        response = await http.post(
            "/v1/emails",
            json={**MESSAGE, "from": sender, "to": ["u@example.test"]},
            headers=h(account),
        )
        assert response.status_code == 403
        assert sender.split("@")[1] in response.json()["detail"]


async def test_quota_is_counted_and_enforced(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    quota_url = f"/v1/domains/{account['domain_id']}/quota"
    before = (await http.get(quota_url, headers=h(account))).json()
    assert before == {
        "domain": "acme.test",
        "daily_limit": 20000,
        "daily_used": 0,
        "daily_remaining": 20000,
        "hourly_limit": 833,
        "hourly_used": 0,
        "hourly_remaining": 833,
        "monthly_limit": 600000,
        "monthly_used": 0,
        "monthly_remaining": 600000,
        "pack_code": "ET20",
        "pack_name": "ET20 - Starter",
    }
    three = {**MESSAGE, "to": ["a@example.test", "b@example.test"], "cc": ["c@example.test"]}
    assert (await http.post("/v1/emails", json=three, headers=h(account))).status_code == 200
    after = (await http.get(quota_url, headers=h(account))).json()
    assert after["daily_used"] == 3 and after["hourly_remaining"] == 830

    patched = await http.patch(
        f"/v1/domains/{account['domain_id']}", json={"hourly_limit": 4}, headers=h(account)
    )
    assert patched.status_code == 200 and patched.json()["hourly_limit"] == 4
    refused = await http.post("/v1/emails", json=three, headers=h(account))
    assert refused.status_code == 429
    assert "hourly limit of domain acme.test" in refused.json()["detail"]
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    one = {**MESSAGE, "to": ["d@example.test"]}
    assert (await http.post("/v1/emails", json=one, headers=h(account))).status_code == 200
    assert (await http.post("/v1/emails", json=one, headers=h(account))).status_code == 429
    async with services.db.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(emails))).scalar_one()
    assert count == 2  # nothing of the refused requests was queued

    reset = await http.patch(
        f"/v1/domains/{account['domain_id']}", json={"hourly_limit": None}, headers=h(account)
    )
    assert reset.json()["hourly_limit"] is None
    assert (await http.post("/v1/emails", json=one, headers=h(account))).status_code == 200


async def test_concurrent_requests_never_overrun_a_quota(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    import asyncio

    await http.patch(
        f"/v1/domains/{account['domain_id']}", json={"daily_limit": 10}, headers=h(account)
    )
    one = {**MESSAGE, "to": ["d@example.test"]}
    responses = await asyncio.gather(
        *(http.post("/v1/emails", json=one, headers=h(account)) for _ in range(25))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 10 and codes.count(429) == 15


async def test_rotation_keeps_the_old_key_until_the_new_record_verifies(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, dns: DnsServer
) -> None:
    signer = DkimSigner(services.db, services.settings)
    (old,) = [k.selector for k in await signer.keys("acme.test")]
    rotated = await http.post(f"/v1/domains/{account['domain_id']}/dkim/rotate", headers=h(account))
    assert rotated.status_code == 200
    pending = [r for r in rotated.json()["dns_records"] if r.get("pending")]
    assert len(pending) == 1
    new = pending[0]["name"].removesuffix("._domainkey")
    assert new != old
    twice = await http.post(f"/v1/domains/{account['domain_id']}/dkim/rotate", headers=h(account))
    assert twice.status_code == 409

    # Not published yet: the domain stays verified and the old key signs.
    still = (
        await http.post(f"/v1/domains/{account['domain_id']}/verify", headers=h(account))
    ).json()
    assert still["status"] == "verified"
    assert [
        k.selector for k in await DkimSigner(services.db, services.settings).keys("acme.test")
    ] == [old]

    publish(dns, "acme.test", pending)
    await http.post(f"/v1/domains/{account['domain_id']}/verify", headers=h(account))
    assert [
        k.selector for k in await DkimSigner(services.db, services.settings).keys("acme.test")
    ] == [new]
    async with services.db.read() as conn:
        states = dict((await conn.execute(select(dkim_keys.c.selector, dkim_keys.c.state))).all())
    assert states[old] == "retired" and states[new] == "active"


async def test_private_keys_are_sealed_at_rest(services: Services, account: dict[str, str]) -> None:
    async with services.db.read() as conn:
        stored = (await conn.execute(select(dkim_keys.c.private_key))).scalars().all()
    assert stored and all(s.startswith("v1:") and "PRIVATE KEY" not in s for s in stored)


async def test_delete_removes_keys_and_senders_but_keeps_history(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    sent = await http.post(
        "/v1/emails", json={**MESSAGE, "to": ["u@example.test"]}, headers=h(account)
    )
    await services.senders.create(
        owner(account["account_id"]),
        address="app@acme.test",
        domain="acme.test",
        password="s3cret-pass",
    )
    deleted = await http.delete(f"/v1/domains/{account['domain_id']}", headers=h(account))
    assert deleted.json() == {"id": account["domain_id"], "deleted": True}
    assert (
        await http.get(f"/v1/domains/{account['domain_id']}", headers=h(account))
    ).status_code == 404
    async with services.db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(dkim_keys))).scalar_one() == 0
        assert (await conn.execute(select(func.count()).select_from(senders))).scalar_one() == 0
    history = await http.get(f"/v1/emails/{sent.json()['id']}", headers=h(account))
    assert history.status_code == 200
    again = await http.post(
        "/v1/emails", json={**MESSAGE, "to": ["u@example.test"]}, headers=h(account)
    )
    assert again.status_code == 403
