"""VERP return paths: ``bounce+<token>@<bounce domain>`` says what a bounce is about.

Two kinds of token, each an id and a truncated HMAC-SHA256 of it under the server secret, in
lower-case base32 (local parts are often case-folded on the way back), so that a bounce can
only be matched to mail we really sent, and tokens cannot be guessed or forged:

- ``<delivery id>.<mac>`` names one delivery: a message sent to one recipient;
- ``g<delivery id>.<mac>`` names the *group* a delivery led: one transaction that carried the
  same message to several recipients of its email (one MAIL FROM, several RCPT TO). A bounce
  to it is matched to the recipient by the address the report names (RFC 3464 §2.3.2
  Final-Recipient), among the deliveries of that delivery's email.

The MAC covers the kind, so a group token cannot be turned into a delivery token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

PREFIX = "bounce+"
GROUP = "g"
MAC_BYTES = 10  # 80 bits: forging one takes 2^80 guesses
_MAX_DIGITS = 18  # a 64-bit id


@dataclass(frozen=True, slots=True)
class Token:
    """What a return path of ours names: one delivery, or the group ``delivery_id`` led."""

    delivery_id: int
    group: bool = False


def _mac(secret: str, subject: str) -> bytes:
    key = hashlib.sha256(b"posthorn:verp:" + secret.encode()).digest()
    return hmac.new(key, subject.encode(), hashlib.sha256).digest()[:MAC_BYTES]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def _subject(token: Token) -> str:
    return (GROUP if token.group else "") + str(token.delivery_id)


def return_path(secret: str, delivery_id: int, bounce_domain: str) -> str:
    """The return path of a message sent to one recipient, naming its delivery."""
    return address_for(secret, Token(delivery_id), bounce_domain)


def group_return_path(secret: str, lead_delivery_id: int, bounce_domain: str) -> str:
    """The return path of one transaction to several recipients of an email, named after one
    of its deliveries (the lead); the report says which recipient a bounce is about."""
    return address_for(secret, Token(lead_delivery_id, group=True), bounce_domain)


def address_for(secret: str, token: Token, bounce_domain: str) -> str:
    subject = _subject(token)
    # RFC 5321 §4.5.3.1.1: at most 64 octets in the local part; this is at most 43.
    return f"{PREFIX}{subject}.{_b32(_mac(secret, subject))}@{bounce_domain}"


def parse(secret: str, address: str, bounce_domain: str) -> Token | None:
    """The token in a VERP address of ours, or ``None`` for anything else."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    if domain.lower() != bounce_domain.lower() or not local.lower().startswith(PREFIX):
        return None
    subject, _, mac = local[len(PREFIX) :].lower().partition(".")
    group = subject.startswith(GROUP)
    number = subject.removeprefix(GROUP)
    if not (number.isascii() and number.isdigit() and mac.isascii()) or len(number) > _MAX_DIGITS:
        return None
    token = Token(int(number), group=group)
    if _subject(token) != subject:  # leading zeros: not a form we ever send
        return None
    expected = _b32(_mac(secret, subject))
    return token if hmac.compare_digest(expected, mac) else None


def delivery_id_from(secret: str, address: str, bounce_domain: str) -> int | None:
    """The delivery id in a one-recipient VERP address of ours, or ``None`` for anything
    else (group return paths included: see :func:`parse`)."""
    token = parse(secret, address, bounce_domain)
    return token.delivery_id if token is not None and not token.group else None
