"""Identifiers that sort by creation time.

An email's id is a UUID version 7 (RFC 9562, section 5.7): 48 bits of Unix time in
milliseconds, then 74 random bits. The ids of mail accepted together are neighbours in every
index keyed by them (the emails' primary key, the deliveries' and events' ``email_id``), so a
commit of a few hundred emails writes a few index pages instead of one page per email, on
SQLite and PostgreSQL alike. The creation time they show is in the email anyway, 74 random
bits leave nothing to guess, and every look-up is scoped to its account as well.
"""

from __future__ import annotations

import secrets
import time
import uuid

_RAND_A = (1 << 12) - 1
_RAND_B = (1 << 62) - 1


def uuid7(now_ns: int | None = None) -> uuid.UUID:
    """A version 7 UUID for ``now_ns`` (nanoseconds since the epoch; default: now)."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = secrets.randbits(74)
    value = (
        (millis & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | (rand >> 62 & _RAND_A) << 64
        | 0b10 << 62
        | rand & _RAND_B
    )
    return uuid.UUID(int=value)


def new_email_id() -> str:
    return str(uuid7())
