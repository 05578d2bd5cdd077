"""Where mail for a domain goes: MX look-up, address look-up and the private-address filter.

RFC 5321 §5.1 in order: the MX records sorted by preference (equal preferences shuffled), or
the domain itself when it has no MX ("implicit MX"); a null MX (RFC 7505) means the domain
accepts no mail. Every DNS outcome is a value: a :class:`Route` to try, or a
:class:`DnsFailure` that says whether trying again later can help.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass
from itertools import groupby
from typing import Final

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdtypes.ANY.MX
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.resolver

from posthorn.delivery.dns_query import build_resolver
from posthorn.settings import Settings

# RFC 5321 §5.1 asks for a configurable limit on the MX hosts tried; nobody needs more.
MAX_MX_HOSTS: Final = 10
_NULL_MX_PREFERENCE: Final = 0  # RFC 7505 §3


@dataclass(frozen=True, slots=True)
class Destination:
    """One MX host (or the domain itself, for an implicit MX) and its usable addresses."""

    host: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Route:
    """The hosts to try for a domain, best first; each has at least one usable address."""

    domain: str
    destinations: tuple[Destination, ...]
    implicit_mx: bool = False


@dataclass(frozen=True, slots=True)
class DnsFailure:
    """No route: ``permanent`` when the DNS says so, temporary when it could not answer."""

    domain: str
    reason: str
    permanent: bool
    enhanced_code: str
    suppress: bool = False


def address_problem(address: str) -> str | None:
    """Why mail must not go to this IP address, or None when it may.

    Delivering to loopback, private, link-local or otherwise non-public addresses would let
    anyone who controls a domain's DNS make us connect into our own network. IPv4-mapped and
    6to4 IPv6 addresses are judged by the IPv4 address they carry.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return address_problem(str(embedded))
    checks = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "not globally routable"),
    )
    for failed, problem in checks:
        if failed:
            return problem
    return None


def to_a_label(domain: str) -> str:
    """The domain in ASCII (IDNA 2008 A-labels, RFC 5890), lower case, without a final dot.

    Raises ValueError when the text is not a valid domain name.
    """
    text = domain.strip().rstrip(".").lower()
    if not text:
        raise ValueError("empty domain")
    codec = (
        dns.name.IDNA_2008_Practical if dns.name.have_idna_2008 else dns.name.IDNA_2003_Practical
    )
    try:
        name = dns.name.from_unicode(text, idna_codec=codec)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ValueError(f"invalid domain {domain!r}: {exc}") from exc
    return name.to_text(omit_final_dot=True)


def order_mx(records: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """MX records by preference, equal preferences in random order (RFC 5321 §5.1).

    Duplicated hosts keep their best preference only.
    """
    best: dict[str, int] = {}
    for preference, host in records:
        best[host] = min(preference, best.get(host, preference))
    ordered: list[tuple[int, str]] = []
    by_preference = sorted(best.items(), key=lambda item: item[1])
    for preference, group in groupby(by_preference, key=lambda item: item[1]):
        hosts = [host for host, _ in group]
        random.shuffle(hosts)
        ordered.extend((preference, host) for host in hosts)
    return ordered


@dataclass(frozen=True, slots=True)
class _Addresses:
    addresses: tuple[str, ...]
    temporary_failure: bool


class MxResolver:
    """Resolves recipient domains to routes with the configured nameservers."""

    def __init__(self, settings: Settings) -> None:
        self._allow_private = settings.mx_allow_private
        # Bulk sends hit the same few domains over and over; answers are kept for their TTL.
        self._resolver = build_resolver(settings, cache=True)
        self._in_flight: dict[str, asyncio.Future[Route | DnsFailure]] = {}

    async def resolve_destinations(self, domain: str) -> Route | DnsFailure:
        """The hosts that accept mail for ``domain``, or why there are none.

        Concurrent look-ups of one domain share one query: a burst of mail to one domain
        would otherwise send hundreds of identical queries before the first answer is cached.
        """
        key = domain.lower()
        pending = self._in_flight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve(domain))
            self._in_flight[key] = pending
            pending.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(pending)

    async def _resolve(self, domain: str) -> Route | DnsFailure:
        try:
            name = to_a_label(domain)
        except ValueError as exc:
            return DnsFailure(domain, str(exc), permanent=True, enhanced_code="5.1.3")
        try:
            answer = await self._resolver.resolve(name, "MX", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return DnsFailure(
                name,
                f"domain {name} does not exist (NXDOMAIN)",
                permanent=True,
                enhanced_code="5.1.2",
                suppress=True,
            )
        except dns.exception.DNSException as exc:
            return _temporary(name, "MX", exc)

        records = [
            (int(rdata.preference), _host_name(rdata.exchange))
            for rdata in (answer.rrset or ())
            if isinstance(rdata, dns.rdtypes.ANY.MX.MX)
        ]
        if records and all(host == "" for _, host in records):
            # RFC 7505 §3: a single MX with the root as exchange: the domain takes no mail.
            return DnsFailure(
                name,
                f"domain {name} accepts no mail (null MX, RFC 7505)",
                permanent=True,
                enhanced_code="5.1.10",
                suppress=True,
            )
        # A null MX mixed with real ones is a misconfiguration; the real ones are used.
        mx = [(preference, host) for preference, host in records if host != ""]
        if not mx:
            # RFC 5321 §5.1: no MX records, so the domain itself is the implicit MX.
            return await self._route(name, [(_NULL_MX_PREFERENCE, name)], implicit=True)
        return await self._route(name, order_mx(mx)[:MAX_MX_HOSTS], implicit=False)

    async def _route(
        self, domain: str, hosts: list[tuple[int, str]], *, implicit: bool
    ) -> Route | DnsFailure:
        found = await asyncio.gather(*(self._addresses(host) for _, host in hosts))
        destinations: list[Destination] = []
        refused: list[str] = []
        temporary = False
        for (preference, host), result in zip(hosts, found, strict=True):
            temporary = temporary or result.temporary_failure
            usable = []
            for address in result.addresses:
                problem = None if self._allow_private else address_problem(address)
                if problem is None:
                    usable.append(address)
                else:
                    refused.append(f"{host} [{address}] is {problem}")
            if usable:
                destinations.append(Destination(host, preference, tuple(usable)))
        if destinations:
            return Route(domain, tuple(destinations), implicit_mx=implicit)
        if temporary:
            # A host that could not be resolved now may have a usable address later.
            return DnsFailure(
                domain,
                f"could not resolve the mail hosts of {domain}",
                permanent=False,
                enhanced_code="4.4.3",
            )
        if refused:
            return DnsFailure(
                domain,
                "no public address to deliver to: " + "; ".join(refused[:5]),
                permanent=True,
                enhanced_code="5.4.4",
            )
        what = (
            f"{domain} has no MX and no address records"
            if implicit
            else (f"no MX host of {domain} has an address: " + ", ".join(host for _, host in hosts))
        )
        # RFC 3463: X.4.4 unable to route; X.1.2 the destination system does not exist.
        return DnsFailure(
            domain, what, permanent=True, enhanced_code="5.1.2" if implicit else "5.4.4"
        )

    async def _addresses(self, host: str) -> _Addresses:
        # IPv4 first: many senders have no working IPv6 route, and a blackholed one costs a
        # whole connect timeout before the next address is tried.
        results = await asyncio.gather(self._lookup(host, "A"), self._lookup(host, "AAAA"))
        addresses = tuple(address for found, _ in results for address in found)
        return _Addresses(addresses, temporary_failure=any(failed for _, failed in results))

    async def _lookup(self, host: str, rdtype: str) -> tuple[list[str], bool]:
        """Addresses of one type, and whether the look-up failed for a temporary reason."""
        try:
            answer = await self._resolver.resolve(host, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return [], False
        except dns.exception.DNSException:
            return [], True
        return [
            str(rdata.address)
            for rdata in (answer.rrset or ())
            if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA)
        ], False


def _host_name(name: dns.name.Name) -> str:
    """An MX exchange as text; the root (a null MX) becomes ""."""
    if name == dns.name.root:
        return ""
    return name.to_text(omit_final_dot=True).lower()


def _temporary(domain: str, rdtype: str, exc: dns.exception.DNSException) -> DnsFailure:
    if isinstance(exc, dns.exception.Timeout):
        reason = f"DNS {rdtype} look-up for {domain} timed out"
    elif isinstance(exc, dns.resolver.NoNameservers):
        reason = f"DNS {rdtype} look-up for {domain} failed (SERVFAIL)"
    else:
        reason = f"DNS {rdtype} look-up for {domain} failed: {exc.__class__.__name__}"
    # RFC 3463 X.4.3: directory server failure.
    return DnsFailure(domain, reason, permanent=False, enhanced_code="4.4.3")
