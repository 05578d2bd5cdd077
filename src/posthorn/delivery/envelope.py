"""What goes over the wire for one recipient, checked and encoded once before any connection.

Pure: the envelope addresses as SMTP paths (domains in A-labels, RFC 5890), whether SMTPUTF8
is needed (RFC 6531), and the message with CRLF line ends and dot-stuffing (RFC 5321 §2.3.8,
§4.5.2), ready to be written after DATA on any number of connections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from posthorn.delivery.mx import to_a_label

# RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
MAX_PATH_OCTETS: Final = 256
_BARE_LINE_END: Final = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_LEADING_DOT: Final = re.compile(rb"(?m)^\.")


class EnvelopeError(ValueError):
    """An envelope address that cannot be put on the wire."""

    def __init__(self, message: str, *, enhanced_code: str) -> None:
        super().__init__(message)
        self.enhanced_code = enhanced_code


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message for one recipient.

    ``mail_from`` is the envelope sender ("" for the null reverse-path of bounces, RFC 5321
    §4.5.5); ``data`` the complete RFC 5322 message with CRLF line endings.
    """

    mail_from: str
    recipient: str
    data: bytes


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """An :class:`Envelope` encoded for SMTP."""

    mail_from: str
    recipient: str
    recipient_domain: str
    smtputf8: bool
    eight_bit: bool
    size: int
    payload: bytes  # dot-stuffed, ends with CRLF, without the terminating "."

    def __repr__(self) -> str:  # never the content
        return f"OutgoingMessage({self.mail_from!r} -> {self.recipient!r}, {self.size} bytes)"


def prepare(envelope: Envelope) -> OutgoingMessage:
    """Encode an envelope; raises EnvelopeError when an address cannot be sent at all."""
    try:
        mail_from, sender_utf8 = smtp_path(envelope.mail_from, null_allowed=True)
    except ValueError as exc:
        # RFC 3463 X.1.7: bad sender's mailbox address syntax.
        raise EnvelopeError(f"sender: {exc}", enhanced_code="5.1.7") from exc
    try:
        recipient, recipient_utf8 = smtp_path(envelope.recipient, null_allowed=False)
    except ValueError as exc:
        # RFC 3463 X.1.3: bad destination mailbox address syntax.
        raise EnvelopeError(f"recipient: {exc}", enhanced_code="5.1.3") from exc
    data = envelope.data
    # RFC 5321 §2.3.8: CR and LF only as CRLF; receivers increasingly refuse bare ones.
    if _BARE_LINE_END.search(data):
        data = _BARE_LINE_END.sub(b"\r\n", data)
    # RFC 5321 §4.1.1.4: the terminating dot must start a line of its own.
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return OutgoingMessage(
        mail_from=mail_from,
        recipient=recipient,
        recipient_domain=recipient.rpartition("@")[2],
        smtputf8=sender_utf8 or recipient_utf8,
        eight_bit=not data.isascii(),
        size=len(data),
        # RFC 5321 §4.5.2: a line starting with "." gets another one in front.
        payload=_LEADING_DOT.sub(b"..", data),
    )


def smtp_path(address: str, *, null_allowed: bool) -> tuple[str, bool]:
    """``local@domain`` as it goes between the angle brackets, and whether SMTPUTF8 is needed.

    The domain is converted to A-labels so that only a non-ASCII local part needs SMTPUTF8
    (RFC 6531 §3.2).
    """
    if address == "" and null_allowed:
        return "", False
    if any(ord(char) < 32 or ord(char) == 127 or char in "<>" for char in address):
        raise ValueError(f"invalid characters in address {address!r}")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an address: {address!r}")
    quoted = len(local) >= 2 and local.startswith('"') and local.endswith('"')
    if (not quoted and any(char.isspace() for char in local)) or any(
        char.isspace() for char in domain
    ):
        raise ValueError(f"whitespace in address {address!r}")
    path = f"{local}@{to_a_label(domain)}"
    if len(path.encode()) + 2 > MAX_PATH_OCTETS:
        raise ValueError(f"address longer than {MAX_PATH_OCTETS} octets (RFC 5321 §4.5.3.1.3)")
    return path, not local.isascii()
