"""The Received trace field the submission server puts on top of each message (pure).

RFC 5321 §4.4: an SMTP server that accepts a message for relaying or delivery MUST insert a
Received line at the top, naming the client (its EHLO name and its address literal), itself,
the protocol and the time. Protocol names come from RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA)
and RFC 6531 §3.7.3 (UTF8SMTP…). The recipient is named only for a single-recipient message,
so Bcc recipients do not learn of each other (RFC 5321 §7.2).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import lru_cache

MAX_HELO = 255  # RFC 5321 §4.5.3.1.2: a domain name is at most 255 octets
_HELO_CHARS = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
_FOLD = "\r\n\t"  # RFC 5322 §2.2.3: folding white space


@lru_cache(maxsize=1024)  # a client sends many messages; parsing its address is not free
def address_literal(ip: str) -> str:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "[unknown]"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"[{address.ipv4_mapped}]"
        return f"[IPv6:{address.compressed}]"
    return f"[{address}]"


def clean_helo(name: str, fallback: str) -> str:
    """The client's EHLO name, reduced to domain and address-literal characters.

    It is the client's own text and goes into a header: nothing in it may break the field
    (CR, LF, parentheses, semicolons). An empty result becomes ``fallback``.
    """
    cleaned = _HELO_CHARS.sub("", name)[:MAX_HELO]
    return cleaned or fallback


def protocol_name(*, utf8: bool, tls: bool, authenticated: bool) -> str:
    """``ESMTP`` with ``S`` for TLS and ``A`` for AUTH; ``UTF8SMTP…`` for SMTPUTF8 mail."""
    base = "UTF8SMTP" if utf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def received_field(
    *,
    helo: str,
    ip: str,
    by: str,
    protocol: str,
    tls: str | None,
    recipients: list[str],
    when: datetime,
) -> bytes:
    """The whole field, folded, ending in CRLF, ready to put in front of the message."""
    literal = address_literal(ip)
    parts = [f"Received: from {clean_helo(helo, literal)} ({literal})"]
    parts.append(f"by {by} (Posthorn) with {protocol}")
    if tls:
        parts.append(f"({tls})")  # a comment, as Postfix writes it
    if len(recipients) == 1 and "\r" not in recipients[0] and "\n" not in recipients[0]:
        parts.append(f"for <{recipients[0]}>")
    parts[-1] += ";"
    parts.append(_date(when.replace(microsecond=0), when.utcoffset()))
    return (_FOLD.join(parts) + "\r\n").encode("utf-8")


@lru_cache(maxsize=4)  # the messages of one second share one date
def _date(when: datetime, _offset: timedelta | None) -> str:
    # The offset is part of the key: equal instants in two time zones are written apart.
    return format_datetime(when)
