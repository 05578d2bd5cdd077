"""What goes over the wire, checked and encoded once before any connection.

Pure: the envelope addresses as SMTP paths (domains in A-labels, RFC 5890), whether SMTPUTF8
is needed (RFC 6531), and the message with CRLF line ends and dot-stuffing (RFC 5321 §2.3.8,
§4.5.2), ready to be written after DATA on any number of connections. A :class:`Batch` of
recipients becomes one :class:`OutgoingMessage` per transaction it needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
class Batch:
    """One message, byte for byte the same, for several recipients: one transaction per next
    hop, one MAIL FROM, an RCPT TO per recipient and one DATA (RFC 5321 §3.3)."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """What one transaction sends: a message encoded for SMTP and the recipients it is for,
    all at ``recipient_domain`` (or all through one relay) and all alike in needing SMTPUTF8."""

    mail_from: str
    recipients: tuple[str, ...]
    recipient_domain: str  # the first recipient's; the only one for direct delivery
    smtputf8: bool
    eight_bit: bool
    size: int
    payload: bytes  # dot-stuffed, ends with CRLF, without the terminating "."

    def __repr__(self) -> str:  # never the content
        return (
            f"OutgoingMessage({self.mail_from!r} -> {', '.join(self.recipients)!r}, "
            f"{self.size} bytes)"
        )

    def only(self, positions: Sequence[int]) -> OutgoingMessage:
        """The same message for some of its recipients (by position)."""
        return replace(self, recipients=tuple(self.recipients[i] for i in positions))


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch as transactions: each message with the positions of its recipients in the
    batch; and the recipients that cannot be sent to at all, by position."""

    messages: tuple[tuple[tuple[int, ...], OutgoingMessage], ...]
    refused: dict[int, EnvelopeError]


def prepare(envelope: Envelope) -> OutgoingMessage:
    """Encode a one-recipient envelope; raises EnvelopeError when it cannot be sent at all."""
    prepared = prepare_batch(
        Batch(envelope.mail_from, (envelope.recipient,), envelope.data), by_domain=True
    )
    if prepared.refused:
        raise prepared.refused[0]
    ((_, message),) = prepared.messages
    return message


def prepare_batch(batch: Batch, *, by_domain: bool) -> PreparedBatch:
    """Encode a batch once, split into transactions: by recipient domain when ``by_domain``
    (each domain has its own MX hosts), and apart for addresses that need SMTPUTF8 (RFC 6531
    §3.4: without it the server could refuse the whole transaction for their sake).

    A sender that cannot be sent refuses every recipient, with its error.
    """
    try:
        mail_from, sender_utf8 = smtp_path(batch.mail_from, null_allowed=True)
    except ValueError as exc:
        # RFC 3463 X.1.7: bad sender's mailbox address syntax.
        error = EnvelopeError(f"sender: {exc}", enhanced_code="5.1.7")
        return PreparedBatch((), dict.fromkeys(range(len(batch.recipients)), error))
    refused: dict[int, EnvelopeError] = {}
    groups: dict[tuple[str, bool], list[tuple[int, str]]] = {}
    for position, address in enumerate(batch.recipients):
        try:
            recipient, recipient_utf8 = smtp_path(address, null_allowed=False)
        except ValueError as exc:
            # RFC 3463 X.1.3: bad destination mailbox address syntax.
            refused[position] = EnvelopeError(f"recipient: {exc}", enhanced_code="5.1.3")
            continue
        domain = recipient.rpartition("@")[2].lower() if by_domain else ""
        groups.setdefault((domain, recipient_utf8), []).append((position, recipient))
    if not groups:
        return PreparedBatch((), refused)
    data = batch.data
    # RFC 5321 §2.3.8: CR and LF only as CRLF; receivers increasingly refuse bare ones.
    if _BARE_LINE_END.search(data):
        data = _BARE_LINE_END.sub(b"\r\n", data)
    # RFC 5321 §4.1.1.4: the terminating dot must start a line of its own.
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    # RFC 5321 §4.5.2: a line starting with "." gets another one in front.
    payload = _LEADING_DOT.sub(b"..", data)
    messages = []
    for (_, recipient_utf8), members in groups.items():
        recipients = tuple(recipient for _, recipient in members)
        message = OutgoingMessage(
            mail_from=mail_from,
            recipients=recipients,
            recipient_domain=recipients[0].rpartition("@")[2],
            smtputf8=sender_utf8 or recipient_utf8,
            eight_bit=not data.isascii(),
            size=len(data),
            payload=payload,
        )
        messages.append((tuple(position for position, _ in members), message))
    return PreparedBatch(tuple(messages), refused)


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
