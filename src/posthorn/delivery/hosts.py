"""Resolving the hosts of webhook URLs and accounts' relays with the configured nameservers
(``POSTHORN_DNS_NAMESERVERS``).

The same resolver serves the check when a URL or relay is saved and the connection at send
time, and nothing else resolves those hosts: the connection goes to an address this module
returned and the SSRF check (``domain/ssrf.py``) passed, never to a name the operating system
resolves again.
"""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import dns.exception
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA

from posthorn.delivery.dns_query import build_resolver
from posthorn.domain.ssrf import literal_ip
from posthorn.settings import Settings

# RFC 6761 §6.3: "localhost" and the names under it are the loopback interface, answered
# without asking the DNS (which may not know them, or may answer anything).
LOCALHOST = ("127.0.0.1", "::1")


def is_localhost(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


class DnsHostResolver:
    def __init__(self, settings: Settings, *, cache: bool = False) -> None:
        # Without a cache by default: a rebinding attacker's short TTLs must not outlive their
        # purpose, and the send-time check must see what the connection will use. With one
        # (answers kept for their TTL) the check still sees what the connection uses, since
        # the connection goes to the address checked.
        self._resolver: dns.asyncresolver.Resolver = build_resolver(settings, cache=cache)

    async def addresses(self, host: str) -> list[str]:
        """The host's IPv4 then IPv6 addresses; an IP literal is its own address. Empty when
        the name does not exist, has no address, or the DNS could not answer."""
        literal = literal_ip(host)
        if literal is not None:
            return [str(literal)]
        if is_localhost(host):
            return list(LOCALHOST)
        found = await asyncio.gather(self._lookup(host, "A"), self._lookup(host, "AAAA"))
        return [address for group in found for address in group]

    async def _lookup(self, host: str, rdtype: str) -> list[str]:
        try:
            answer = await self._resolver.resolve(host, rdtype, raise_on_no_answer=False)
        except dns.exception.DNSException:
            return []
        return [
            str(rdata.address)
            for rdata in (answer.rrset or ())
            if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA)
        ]
