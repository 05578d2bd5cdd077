"""What one delivery attempt came to: a value, never an exception.

The transport turns every remote outcome (a reply code, a refused connection, a timeout, a TLS
failure) into one of these; the worker records it. ``Delivered`` means the next hop took
responsibility for the message: the recipient's MX (status ``delivered``) or an upstream relay
(``via_relay=True``, status ``sent``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Attempt:
    """What we know about the remote side of one attempt."""

    remote_host: str | None = None
    remote_ip: str | None = None
    tls_version: str | None = None
    code: int | None = None
    enhanced_code: str | None = None
    message: str = ""
    transcript: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Delivered:
    attempt: Attempt
    via_relay: bool = False


@dataclass(frozen=True, slots=True)
class SoftFail:
    """Temporary failure: try again later (``retry_after`` when the reply asked for a time)."""

    attempt: Attempt
    reason: str
    retry_after: timedelta | None = None
    possible_duplicate: bool = False


@dataclass(frozen=True, slots=True)
class HardFail:
    """Permanent failure: the message bounces. ``suppress`` when the address itself is bad."""

    attempt: Attempt
    reason: str
    suppress: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    """Not sent at all: Posthorn itself refused (e.g. the recipient is suppressed)."""

    attempt: Attempt
    reason: str


DeliveryResult = Delivered | SoftFail | HardFail | Refused
