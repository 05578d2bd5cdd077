"""Setting up sending domains in tests the way a user does: create, publish, verify."""

from __future__ import annotations

from typing import Any

from posthorn.domain.permissions import Permission
from posthorn.services.accounts import Principal
from posthorn.services.container import Services
from tests.support.dns import DnsServer


def publish(dns: DnsServer, domain: str, records: list[dict[str, Any]]) -> None:
    """Put a domain's records on the test DNS server, as its owner would at their DNS host."""
    for record in records:
        name = domain if record["name"] == "@" else f"{record['name']}.{domain}"
        dns.add(name, record["type"], record["value"], priority=int(record.get("priority", 10)))


def owner(account_id: str) -> Principal:
    return Principal(account_id=account_id, key_id="test", permission=Permission.FULL_ACCESS)


async def verified_domain(
    services: Services, dns: DnsServer, account_id: str, name: str = "acme.test"
) -> dict[str, Any]:
    created = await services.domains.create(owner(account_id), name)
    publish(dns, created.row["name"], created.records)
    verified = await services.domains.verify(owner(account_id), created.row["id"])
    assert verified.row["status"] == "verified", verified.records
    return verified.row
