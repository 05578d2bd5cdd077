"""Resolving webhook hosts with the configured nameservers (``POSTHORN_DNS_NAMESERVERS``).

The same resolver serves the check when a URL is saved and the connection at send time, and
nothing else resolves webhook hosts: the connection goes to an address this module returned
and the SSRF check passed, never to a name the operating system resolves again.
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


class DnsHostResolver:
    def __init__(self, settings: Settings) -> None:
        # No cache: a rebinding attacker's short TTLs must not outlive their purpose, and the
        # send-time check must see what the connection will use.
        self._resolver: dns.asyncresolver.Resolver = build_resolver(settings, cache=False)

    async def addresses(self, host: str) -> list[str]:
        """The host's IPv4 then IPv6 addresses; an IP literal is its own address. Empty when
        the name does not exist, has no address, or the DNS could not answer."""
        literal = literal_ip(host)
        if literal is not None:
            return [str(literal)]
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
