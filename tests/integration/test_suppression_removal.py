"""Who may lift a suppression: only a full_access key, and a complaint only with ``force``.

The suppressions are written with the store function the worker and the inbound listener use
when a bounce or a spam complaint arrives; everything else goes over real HTTP.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from posthorn.services.container import Services
from posthorn.store import suppressions as store
from posthorn.store.tables import events, suppressions, utcnow

COMPLAINED = "complained@example.test"
BOUNCED = "bounced@example.test"


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


async def suppress(services: Services, account_id: str, address: str, reason: str) -> None:
    async with services.db.write() as conn:
        await store.add(conn, account_id=account_id, address=address, reason=reason, now=utcnow())


async def reasons(services: Services, account_id: str, address: str) -> list[str]:
    async with services.db.read() as conn:
        found = await conn.execute(
            select(suppressions.c.reason).where(
                suppressions.c.account_id == account_id, suppressions.c.address == address
            )
        )
        return sorted(found.scalars())


@pytest.mark.parametrize("permission", ["sending_access", "read_only"])
async def test_only_a_full_access_key_lifts_a_suppression(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, permission: str
) -> None:
    account_id = account["account_id"]
    for address, reason in ((COMPLAINED, "complaint"), (BOUNCED, "bounce")):
        await suppress(services, account_id, address, reason)
    await http.post("/v1/suppressions", json={"address": "manual@example.test"}, headers=h(account))
    for address in (COMPLAINED, BOUNCED, "manual@example.test"):
        for force in ("", "?force=true"):
            denied = await http.delete(
                f"/v1/suppressions/{address}{force}", headers=h(account, permission)
            )
            assert denied.status_code == 403, denied.text
            assert f"({permission})" in denied.json()["detail"]
    assert await reasons(services, account_id, COMPLAINED) == ["complaint"]
    assert await reasons(services, account_id, BOUNCED) == ["bounce"]
    assert await reasons(services, account_id, "manual@example.test") == ["manual"]


async def test_a_complaint_is_lifted_only_with_force(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    account_id = account["account_id"]
    await suppress(services, account_id, COMPLAINED, "complaint")
    refused = await http.delete(f"/v1/suppressions/{COMPLAINED}", headers=h(account))
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert COMPLAINED in detail and "force=true" in detail
    assert await reasons(services, account_id, COMPLAINED) == ["complaint"]
    assert (
        await http.delete(f"/v1/suppressions/{COMPLAINED}?force=false", headers=h(account))
    ).status_code == 409
    assert (
        await http.delete(f"/v1/suppressions/{COMPLAINED}?force=maybe", headers=h(account))
    ).status_code == 422

    lifted = await http.delete(f"/v1/suppressions/{COMPLAINED}?force=true", headers=h(account))
    assert lifted.status_code == 200, lifted.text
    assert lifted.json() == {"address": COMPLAINED, "deleted": True}
    assert await reasons(services, account_id, COMPLAINED) == []
    async with services.db.read() as conn:
        deleted = await conn.execute(
            select(events.c.recipient).where(events.c.type == "suppression.deleted")
        )
        assert deleted.scalars().all() == [COMPLAINED]


async def test_a_bounce_is_lifted_by_full_access_without_force(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    await suppress(services, account["account_id"], BOUNCED, "bounce")
    lifted = await http.delete(f"/v1/suppressions/{BOUNCED.upper()}", headers=h(account))
    assert lifted.status_code == 200, lifted.text
    assert await reasons(services, account["account_id"], BOUNCED) == []
    gone = await http.delete(f"/v1/suppressions/{BOUNCED}", headers=h(account))
    assert gone.status_code == 404


async def test_a_complaint_survives_lifting_a_list_unsubscribe_through_v2(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    """The v2 dialect's subscribeEmail (sending_access, as in its seed) lifts the address's
    unsubscriptions from lists, never the account-wide complaint."""
    from tests.support.domains import owner

    who = owner(account["account_id"])
    created = await services.lists.create(who, "News")
    await services.lists.add_contacts(who, created["id"], [{"email": COMPLAINED}])
    token = account["sending_access"]
    out = await http.post("/api/v2/unsubscribeEmail", data={"token": token, "email": COMPLAINED})
    assert out.json() == {"status": "OK"}
    await suppress(services, account["account_id"], COMPLAINED, "complaint")
    back = await http.post("/api/v2/subscribeEmail", data={"token": token, "email": COMPLAINED})
    assert back.json() == {"status": "OK"}
    assert await reasons(services, account["account_id"], COMPLAINED) == ["complaint"]
