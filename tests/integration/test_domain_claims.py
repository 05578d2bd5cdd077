"""Several accounts may claim a domain name; the one that proves it in the DNS owns it.

A claim that proves nothing (no records published) never blocks the real owner, and the
claims that lose say so. Over real HTTP with the real DNS server, on both databases (the
partial unique index on verified names is what settles two verifications at once).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from posthorn.services.container import Services
from posthorn.services.signing import DkimSigner
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.tables import domains
from tests.support.dns import DnsServer
from tests.support.domains import owner as full_access
from tests.support.domains import publish

NAME = "shop.test"


async def tenant(services: Services, name: str) -> dict[str, str]:
    account = await services.accounts.create_account(name)
    key = (await services.accounts.create_key(account.id, name="k")).key
    return {"account_id": account.id, "X-API-KEY": key}


def headers(who: dict[str, str]) -> dict[str, str]:
    return {"X-API-KEY": who["X-API-KEY"]}


async def claim(http: httpx.AsyncClient, who: dict[str, str], name: str = NAME) -> dict[str, Any]:
    response = await http.post("/v1/domains", json={"domain": name}, headers=headers(who))
    assert response.status_code == 200, response.text
    return dict(response.json())


def publish_dkim(dns: DnsServer, domain: dict[str, Any]) -> None:
    """Only the claim's DKIM records: SPF and MX are the same for every account."""
    dkim = [r for r in domain["dns_records"] if r["purpose"] == "dkim"]
    publish(dns, domain["domain"], dkim)


async def verify(http: httpx.AsyncClient, who: dict[str, str], domain_id: str) -> httpx.Response:
    return await http.post(f"/v1/domains/{domain_id}/verify", headers=headers(who))


async def verified_claims(db: Database, name: str) -> int:
    async with db.read() as conn:
        found = await conn.execute(
            select(func.count()).where(domains.c.name == name, domains.c.status == "verified")
        )
        return int(found.scalar_one())


async def test_a_squatters_pending_claim_does_not_block_the_owner(
    http: httpx.AsyncClient, services: Services, dns: DnsServer, db: Database
) -> None:
    squatter = await tenant(services, "squatter")
    owner = await tenant(services, "owner")
    squatted = await claim(http, squatter)
    # The real owner can claim the name all the same (409 before), publish, and verify.
    owned = await claim(http, owner)
    assert owned["status"] == "pending" and owned["verified_elsewhere"] is False
    publish(dns, NAME, owned["dns_records"])
    won = await verify(http, owner, owned["id"])
    assert won.status_code == 200, won.text
    assert won.json()["status"] == "verified"

    # The squatter's claim says it lost, on reading and on verifying.
    seen = (await http.get(f"/v1/domains/{squatted['id']}", headers=headers(squatter))).json()
    assert seen["status"] == "pending" and seen["verified_elsewhere"] is True
    listed = (await http.get("/v1/domains", headers=headers(squatter))).json()["data"]
    assert [(d["domain"], d["verified_elsewhere"]) for d in listed] == [(NAME, True)]
    lost = await verify(http, squatter, squatted["id"])
    assert lost.status_code == 409
    assert NAME in lost.json()["detail"] and "another account" in lost.json()["detail"]
    assert owner["account_id"] not in lost.text

    # A verified name is owned: a new claim is a 409 that does not say by whom.
    late = await tenant(services, "late")
    refused = await http.post("/v1/domains", json={"domain": NAME}, headers=headers(late))
    assert refused.status_code == 409 and owner["account_id"] not in refused.text

    # Only the owner sends from it, and only the owner's key signs it.
    email = {"from": f"hi@{NAME}", "to": ["x@example.net"], "subject": "s", "text": "t"}
    assert (await http.post("/v1/emails", json=email, headers=headers(squatter))).status_code == 403
    assert (await http.post("/v1/emails", json=email, headers=headers(owner))).status_code == 200
    keys = await DkimSigner(db, services.settings).keys(NAME)
    assert len(keys) == 1  # the owner's RSA key, not the squatter's as well
    assert await verified_claims(db, NAME) == 1


async def test_the_squatter_cannot_verify_without_the_records(
    http: httpx.AsyncClient, services: Services, dns: DnsServer
) -> None:
    """SPF and MX are the same for everyone: publishing the owner's records does not verify
    another account's claim, whose DKIM key is not in the DNS."""
    squatter = await tenant(services, "squatter")
    owner = await tenant(services, "owner")
    squatted = await claim(http, squatter)
    owned = await claim(http, owner)
    publish(dns, NAME, owned["dns_records"])
    tried = (await verify(http, squatter, squatted["id"])).json()
    assert tried["status"] == "pending"
    assert next(r["purpose"] for r in tried["dns_records"] if not r["verified"]) == "dkim"
    assert (await verify(http, owner, owned["id"])).json()["status"] == "verified"


async def test_a_name_changes_hands_when_the_owners_records_leave_the_dns(
    http: httpx.AsyncClient, services: Services, dns: DnsServer, db: Database
) -> None:
    before = await tenant(services, "before")
    after = await tenant(services, "after")
    old = await claim(http, before)
    publish(dns, NAME, old["dns_records"])
    assert (await verify(http, before, old["id"])).json()["status"] == "verified"
    refused = await http.post("/v1/domains", json={"domain": NAME}, headers=headers(after))
    assert refused.status_code == 409
    sender = {"account": f"noreply@{NAME}", "domain": NAME, "password": "a long password"}
    made = await http.post("/v1/senders", json=sender, headers=headers(before))
    assert made.status_code == 200, made.text

    # The name's DNS now publishes someone else's key instead: they claim it and verify.
    for record in old["dns_records"]:
        if record["purpose"] == "dkim":
            dns.remove(f"{record['name']}.{NAME}")
    new = await claim(http, after)
    publish_dkim(dns, new)
    taken = await verify(http, after, new["id"])
    assert taken.status_code == 200, taken.text
    assert taken.json()["status"] == "verified"
    gone = (await http.get(f"/v1/domains/{old['id']}", headers=headers(before))).json()
    assert gone["status"] == "pending" and gone["verified_elsewhere"] is True
    assert await verified_claims(db, NAME) == 1
    # The old owner's SMTP credentials on the name went with it; the address is free.
    assert (await http.get("/v1/senders", headers=headers(before))).json()["total"] == 0
    again = await http.post("/v1/senders", json=sender, headers=headers(after))
    assert again.status_code == 200, again.text


async def test_two_accounts_verifying_at_once_only_one_wins(
    http: httpx.AsyncClient, services: Services, dns: DnsServer, db: Database
) -> None:
    """Both have their DKIM key in the DNS (whoever runs it published both): exactly one
    verification wins, the other is a 409, for every round."""
    for round_ in range(4):
        name = f"race{round_}.test"
        first = await tenant(services, f"first{round_}")
        second = await tenant(services, f"second{round_}")
        a = await claim(http, first, name)
        b = await claim(http, second, name)
        publish(dns, name, a["dns_records"])
        publish_dkim(dns, b)
        answers = await asyncio.gather(verify(http, first, a["id"]), verify(http, second, b["id"]))
        codes = sorted(r.status_code for r in answers)
        assert codes == [200, 409], [r.text for r in answers]
        assert await verified_claims(db, name) == 1


async def test_the_database_refuses_a_second_verified_claim(
    services: Services, db: Database, settings: Settings
) -> None:
    """The rule holds below the service too (the partial unique index, on both databases)."""
    one = await services.accounts.create_account("one")
    two = await services.accounts.create_account("two")
    rows = []
    for account_id in (one.id, two.id):
        created = await services.domains.create(full_access(account_id), NAME)
        rows.append(created.row["id"])
    async with db.write() as conn:
        await conn.execute(update(domains).where(domains.c.id == rows[0]).values(status="verified"))
    with pytest.raises(IntegrityError):
        async with db.write() as conn:
            await conn.execute(
                update(domains).where(domains.c.id == rows[1]).values(status="verified")
            )
    assert await verified_claims(db, NAME) == 1
