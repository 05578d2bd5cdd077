"""Client addresses and IP allowlists: pure rules over the ``ipaddress`` module."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Sequence[str]) -> list[Network]:
    """IPs and CIDRs (IPv4 and IPv6) → networks; raises ``ValueError`` naming a bad entry."""
    networks: list[Network] = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(item) from exc
    return networks


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def ip_allowed(client: str, allowlist: Sequence[str] | None) -> bool:
    """Whether ``client`` is inside the allowlist; no allowlist allows every address."""
    if not allowlist:
        return True
    address = _ip(client)
    if address is None:
        return False
    return any(address in network for network in parse_networks(allowlist))


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: Sequence[str]) -> str:
    """The address of the client, believing ``X-Forwarded-For`` only from trusted proxies.

    The header is read from the right (the hop nearest to us) and each hop is believed only
    while the hop that reported it is a trusted proxy, so a client cannot forge its address by
    sending its own ``X-Forwarded-For``.
    """
    if not forwarded_for or not trusted_proxies:
        return peer
    trusted = parse_networks(trusted_proxies)

    def is_trusted(text: str) -> bool:
        address = _ip(text)
        return address is not None and any(address in network for network in trusted)

    current = peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not is_trusted(current):
            break
        current = hop
    return current
