"""Throttling failed logins per client network: the arithmetic, pure; the caller passes the time.

Password guessing is cheap for the client and costs us an argon2 check each time. After
``limit`` failures within ``window`` seconds from one client network, further attempts are
refused without looking at the credentials, for as long as that many failures stay inside the
window. The refusal is the same whether or not the user exists. Used by SMTP AUTH (which then
answers 421 and closes the session, RFC 5321 §3.8) and by the BizMail token endpoint (429).
A success clears nothing: one valid login must not buy an attacker on the same network a fresh
round of guesses against other users.

IPv4 clients are counted per address; IPv6 clients per /64, the usual allocation to one site
(RFC 6177), since a single host can pick any address inside it.

Failures are counted in buckets of ``window / BUCKETS`` seconds (whole seconds), so that every
process of a deployment can share one count as a few small rows per client network in the
database (``store/login_failures.py``). A failure counts from its bucket's start until
``window`` seconds after that bucket's end: never for less than ``window`` seconds.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass

IPV6_PREFIX = 64
BUCKETS = 6  # buckets per window: a failure counts for at most 1/6 of a window too long


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


@dataclass(frozen=True, slots=True)
class FailureWindow:
    """``limit`` failures per ``seconds``; a limit of 0 or less means no limit."""

    limit: int
    seconds: int

    @property
    def bucket_seconds(self) -> int:
        return max(1, math.ceil(self.seconds / BUCKETS))

    def bucket(self, now: float) -> int:
        """The start (whole seconds) of the bucket a failure at ``now`` is counted in."""
        size = self.bucket_seconds
        return int(now // size) * size

    def oldest_counted(self, now: float) -> int:
        """The start of the oldest bucket whose failures still count at ``now``."""
        # A bucket starting at s counts while now < s + bucket_seconds + seconds.
        return self.bucket(now - self.seconds)

    def counted(self, buckets: Iterable[tuple[int, int]], now: float) -> int:
        """How many of the failures in ``(bucket start, failures)`` count at ``now``."""
        oldest = self.oldest_counted(now)
        return sum(failures for start, failures in buckets if start >= oldest)

    def retry_after(self, buckets: Iterable[tuple[int, int]], now: float) -> float:
        """Seconds from ``now`` until the network may try again; 0 when it may now.

        That is when enough of the oldest counted buckets have left the window for fewer than
        ``limit`` failures to remain.
        """
        if self.limit <= 0:
            return 0.0
        oldest = self.oldest_counted(now)
        live = sorted((start, n) for start, n in buckets if start >= oldest)
        remaining = sum(n for _, n in live)
        for start, failures in live:  # oldest first
            if remaining < self.limit:
                break
            remaining -= failures
            if remaining < self.limit:
                return max(0.0, start + self.bucket_seconds + self.seconds - now)
        return 0.0
