"""DNS look-ups through the configured nameservers: the resolver and the TXT/MX queries that
domain verification makes. Verification asks the DNS afresh every time (no cache): a user who
has just published a record expects the next check to see it."""

from __future__ import annotations

import asyncio
import ipaddress

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from posthorn.domain.dns_records import Observed
from posthorn.settings import Settings


def parse_nameserver(entry: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:5353"``, ``"::1"`` or ``"10.0.0.1"`` as (address, port).

    Raises ValueError for anything else: a wrong resolver setting is a start-up error.
    """
    text = entry.strip()
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"invalid nameserver {entry!r}")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid nameserver {entry!r}")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"invalid nameserver port in {entry!r}")
    return host, port


def build_resolver(settings: Settings, *, cache: bool) -> dns.asyncresolver.Resolver:
    """A resolver on ``POSTHORN_DNS_NAMESERVERS`` (``host[:port]``), or the system's."""
    if settings.dns_nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port)
            for host, port in map(parse_nameserver, settings.dns_nameservers)
        ]
    else:
        resolver = dns.asyncresolver.Resolver(configure=True)
    resolver.lifetime = settings.dns_timeout
    resolver.timeout = settings.dns_timeout
    if cache:
        resolver.cache = dns.resolver.LRUCache(4096)
    return resolver


class DnsQuery:
    def __init__(self, settings: Settings) -> None:
        self._resolver = build_resolver(settings, cache=False)

    async def txt(self, name: str) -> list[str] | None:
        """The TXT strings at ``name`` (each record's strings joined, RFC 7208 §3.3)."""
        try:
            answer = await self._resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return None
        except dns.exception.DNSException:
            return None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    async def mx(self, name: str) -> list[tuple[int, str]] | None:
        try:
            answer = await self._resolver.resolve(name, "MX")
        except dns.exception.DNSException:
            return None
        return [(int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in answer]

    async def observe(self, domain: str, txt_names: list[str]) -> Observed:
        """Everything domain verification needs, looked up in parallel."""
        root_txt, root_mx, *others = await asyncio.gather(
            self.txt(domain), self.mx(domain), *(self.txt(n) for n in txt_names)
        )
        return Observed(
            root_txt=root_txt,  # type: ignore[arg-type]
            root_mx=root_mx,  # type: ignore[arg-type]
            txt_by_name=dict(zip(txt_names, others, strict=True)),  # type: ignore[arg-type]
        )
