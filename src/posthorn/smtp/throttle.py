"""Throttling failed SMTP authentication per client network: pure, the caller passes the time.

Password guessing over SMTP AUTH is cheap for the client and costs us an argon2 check each
time. After ``limit`` failures within ``window`` seconds from one client network, further
attempts are refused without looking at the credentials (and the session is closed with 421,
RFC 5321 §3.8), for as long as that many failures stay inside the window. The refusal is the
same whether or not the user exists.

IPv4 clients are counted per address; IPv6 clients per /64, the usual allocation to one site
(RFC 6177), since a single host can pick any address inside it.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque

IPV6_PREFIX = 64
DEFAULT_MAX_CLIENTS = 100_000  # networks remembered; the least recently failing are forgotten


def client_key(ip: str) -> str:
    """The network an address is counted in: the address itself, or its IPv6 /64."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class FailureThrottle:
    """Failures per client network in a sliding window, in bounded memory."""

    def __init__(
        self, *, limit: int, window: float, max_clients: int = DEFAULT_MAX_CLIENTS
    ) -> None:
        self._limit = limit
        self._window = window
        self._max_clients = max_clients
        # Per network, the times of its most recent failures (at most ``limit`` of them).
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked(self, ip: str, now: float) -> bool:
        """Whether attempts from ``ip``'s network are refused at ``now``."""
        if self._limit <= 0:
            return False
        times = self._failures.get(client_key(ip))
        return times is not None and len(times) >= self._limit and times[0] > now - self._window

    def record(self, ip: str, now: float) -> None:
        """Count one failed attempt from ``ip``'s network at ``now``."""
        if self._limit <= 0:
            return
        key = client_key(ip)
        times = self._failures.pop(key, None)
        if times is None:
            times = deque(maxlen=self._limit)
        times.append(now)
        self._failures[key] = times  # now the most recently failing network
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)
