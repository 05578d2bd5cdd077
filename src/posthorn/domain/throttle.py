"""Throttling failed logins per client network: pure, the caller passes the time.

Password guessing is cheap for the client and costs us an argon2 check each time. After
``limit`` failures within ``window`` seconds from one client network, further attempts are
refused without looking at the credentials, for as long as that many failures stay inside the
window. The refusal is the same whether or not the user exists. Used by SMTP AUTH (which then
answers 421 and closes the session, RFC 5321 §3.8) and by the BizMail token endpoint (429).
A success clears nothing: one valid login must not buy an attacker on the same network a fresh
round of guesses against other users.

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
        return self.retry_after(ip, now) > 0

    def retry_after(self, ip: str, now: float) -> float:
        """Seconds from ``now`` until ``ip``'s network may try again; 0 when it may now.

        That is when the oldest of the last ``limit`` failures leaves the window.
        """
        if self._limit <= 0:
            return 0.0
        times = self._failures.get(client_key(ip))
        if times is None or len(times) < self._limit:
            return 0.0
        return max(0.0, times[0] + self._window - now)

    def charge(self, ip: str, now: float) -> float:
        """Start an attempt from ``ip``'s network, counted as failed until :meth:`refund`.

        Returns 0 when the attempt may go ahead, else the seconds to wait (and nothing is
        counted). Counting before the outcome is known means attempts checked concurrently
        cannot together exceed the limit.
        """
        wait = self.retry_after(ip, now)
        if wait == 0:
            self.record(ip, now)
        return wait

    def refund(self, ip: str, charged_at: float) -> None:
        """Take back the failure :meth:`charge` counted at ``charged_at``: it did not fail."""
        key = client_key(ip)
        times = self._failures.get(key)
        if times is None or charged_at not in times:
            return
        times.remove(charged_at)
        if not times:
            del self._failures[key]

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
