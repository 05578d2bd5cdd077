"""Checking DKIM signatures with an independent verifier (dkimpy) against the test DNS."""

from __future__ import annotations

import dkim
import dns.resolver

from tests.support.dns import DnsServer


def dkim_verifies(message: bytes, dns_server: DnsServer) -> bool:
    """Whether every DKIM-Signature of the message verifies, keys looked up on ``dns_server``."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server.host]
    resolver.port = dns_server.port

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes:
        qname = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(qname, "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return b""
        return b"".join(b"".join(r.strings) for r in answer)

    count = message.count(b"DKIM-Signature:")
    if count == 0:
        return False
    verifier = dkim.DKIM(message)
    return all(verifier.verify(idx=i, dnsfunc=dnsfunc) for i in range(count))
