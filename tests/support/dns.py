"""An authoritative DNS server for tests, on 127.0.0.1 (UDP and TCP on one free port).

Built on dnslib's threaded ``DNSServer`` with a resolver over an in-memory table that tests
edit while it runs::

    with DnsServer() as dns:
        dns.add("example.test", "MX", "mx.example.test", priority=10)
        dns.add("mx.example.test", "A", "127.0.0.1")
        settings = Settings(dns_nameservers=[dns.nameserver], ...)

Unknown names answer NXDOMAIN; a known name (or an empty non-terminal, RFC 8020) without
records of the asked type answers NOERROR with no records (NODATA). CNAMEs are followed inside
the table as an authoritative server does (RFC 1034 §4.3.2). Independent of the product.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TXT, A, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

RecordType = Literal["A", "AAAA", "MX", "TXT", "CNAME"]

_MAX_CNAME_CHAIN = 8
_BIND_ATTEMPTS = 20
_POLL_SECONDS = 0.02
# RFC 1035 §3.3.14: a TXT record is one or more character-strings of at most 255 octets each.
_MAX_CHARACTER_STRING = 255


@dataclass(frozen=True)
class _Record:
    rtype: str
    value: str
    priority: int
    ttl: int


def _key(name: str) -> str:
    return name.strip().rstrip(".").lower()


def split_txt(value: str) -> list[bytes]:
    """A TXT value as character-strings of at most 255 octets."""
    data = value.encode("utf-8")
    if not data:
        return [b""]
    return [data[i : i + _MAX_CHARACTER_STRING] for i in range(0, len(data), _MAX_CHARACTER_STRING)]


class _TableResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()  # sets QR, copies RD; AA is set below
        reply.header.aa = 1
        question = request.q
        qtype = QTYPE.get(question.qtype)
        name = _key(str(question.qname))
        records, servfail = self._server._snapshot()
        for _ in range(_MAX_CNAME_CHAIN):
            if name in servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            entries = records.get(name, [])
            cnames = [entry for entry in entries if entry.rtype == "CNAME"]
            if cnames and qtype != "CNAME":
                target = cnames[0].value
                reply.add_answer(
                    RR(DNSLabel(name), QTYPE.CNAME, ttl=cnames[0].ttl, rdata=CNAME(target))
                )
                name = _key(target)
                continue
            if not self._server._exists(records, name):
                # RFC 6604 §3: the rcode describes the last name in a CNAME chain.
                reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for entry in entries:
                if entry.rtype == qtype:
                    reply.add_answer(_resource(name, entry))
            return reply
        reply.header.rcode = RCODE.SERVFAIL  # a CNAME loop
        return reply


def _resource(name: str, entry: _Record) -> RR:
    label = DNSLabel(name)
    rdata: Any
    if entry.rtype == "A":
        rdata = A(entry.value)
    elif entry.rtype == "AAAA":
        rdata = AAAA(entry.value)
    elif entry.rtype == "MX":
        # RFC 7505 §3: the null MX is "." with preference 0.
        exchange = "." if entry.value.strip() in ("", ".") else entry.value
        rdata = MX(exchange, preference=entry.priority)
    elif entry.rtype == "TXT":
        rdata = TXT(split_txt(entry.value))
    else:
        rdata = CNAME(entry.value)
    return RR(label, getattr(QTYPE, entry.rtype), ttl=entry.ttl, rdata=rdata)


class DnsServer:
    """A threaded authoritative DNS server whose records tests change at will."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._lock = threading.Lock()
        self._records: dict[str, list[_Record]] = {}
        self._servfail: set[str] = set()
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def nameserver(self) -> str:
        """``"127.0.0.1:PORT"``, ready for ``Settings.dns_nameservers``."""
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        if self._servers:
            raise RuntimeError("DNS server already started")
        resolver = _TableResolver(self)
        logger = DNSLogger(log="-request,-reply,-truncated", prefix=False)
        # UDP first on a kernel-chosen port, then TCP on the same number; if that one is taken
        # for TCP, try another (a bounded number of times).
        for _ in range(_BIND_ATTEMPTS):
            udp = DNSServer(resolver, address=self.host, port=0, tcp=False, logger=logger)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(resolver, address=self.host, port=port, tcp=True, logger=logger)
            except OSError:
                udp.server.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        for server in self._servers:
            # A short poll interval makes stop() quick (socketserver checks for shutdown
            # between polls; its default is half a second).
            thread = threading.Thread(
                target=server.server.serve_forever,
                kwargs={"poll_interval": _POLL_SECONDS},
                name=f"dns-{self.port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # The table.

    def add(
        self,
        name: str,
        rtype: RecordType,
        value: str,
        *,
        priority: int = 10,
        ttl: int = 60,
    ) -> None:
        """Add a record. MX ``value`` is the exchange (``"."`` with priority 0: null MX)."""
        if rtype not in ("A", "AAAA", "MX", "TXT", "CNAME"):
            raise ValueError(f"unsupported record type {rtype!r}")
        if rtype in ("A", "AAAA"):
            family = socket.AF_INET if rtype == "A" else socket.AF_INET6
            socket.inet_pton(family, value)  # fail in the test, not in the server thread
        with self._lock:
            self._records.setdefault(_key(name), []).append(_Record(rtype, value, priority, ttl))

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Remove all records of ``name``, or only those of ``rtype``."""
        key = _key(name)
        with self._lock:
            if rtype is None:
                self._records.pop(key, None)
                return
            kept = [entry for entry in self._records.get(key, []) if entry.rtype != rtype]
            if kept:
                self._records[key] = kept
            else:
                self._records.pop(key, None)

    def servfail(self, name: str) -> None:
        """Answer SERVFAIL for every query about ``name``."""
        with self._lock:
            self._servfail.add(_key(name))

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._servfail.clear()

    # Used from the server threads.

    def _snapshot(self) -> tuple[dict[str, list[_Record]], frozenset[str]]:
        with self._lock:
            return {key: list(value) for key, value in self._records.items()}, frozenset(
                self._servfail
            )

    @staticmethod
    def _exists(records: dict[str, list[_Record]], name: str) -> bool:
        if name in records:
            return True
        suffix = "." + name
        return any(key.endswith(suffix) for key in records)
