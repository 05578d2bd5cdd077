"""What comes back to a VERP return path, read without I/O: bounces, complaints, or neither.

:func:`parse_report` turns the bytes of a received message into one of

- :class:`DeliveryReport`: a delivery status notification, RFC 3464 (``multipart/report;
  report-type=delivery-status``, RFC 6522), or its internationalised form with a
  ``message/global-delivery-status`` part (RFC 6533). One :class:`Bounce` per recipient the
  report says failed or is delayed; recipients reported delivered, relayed or expanded are
  left out. Bounces that follow no standard (qmail, old Exim and Exchange texts) are read by
  flufl.bounce's heuristics, but only when the message is not a report at all;
- :class:`Complaint`: a feedback report, RFC 5965 (ARF, ``report-type=feedback-report``);
- :class:`Ignored`: anything else, auto-replies above all (RFC 3834 ``Auto-Submitted``,
  vacation and out-of-office messages): they reach the return path too, and are not bounces.

Whether a bounce condemns the address is :func:`suppresses`, with the semantics of
:func:`posthorn.domain.replies.should_suppress`: 5.1.x mailbox problems do, 5.7.x policy
blocks do not.

The report's parts are split here from the raw bytes (RFC 2046 §5.1.1) instead of by the
``email`` package, which reads every ``message/*`` body as an encapsulated message: that
loses ``message/global-delivery-status`` (RFC 6533 §6) and any transfer encoding of a report
part. Headers are still parsed by the ``email`` package.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from typing import Final

from flufl.bounce import all_failures

from posthorn.domain.replies import classify_reply, parse_enhanced_code, should_suppress

MAX_DEPTH: Final = 6  # nesting of multiparts looked into
MAX_PARTS: Final = 64  # parts of one multipart looked at
MAX_DIAGNOSTIC: Final = 1000  # characters of a diagnostic kept


@dataclass(frozen=True, slots=True)
class Bounce:
    """One recipient's entry in a delivery status notification (RFC 3464 §2.3)."""

    recipient: str  # Final-Recipient (§2.3.2), else Original-Recipient (§2.3.1)
    status: str  # Status (§2.3.4): an RFC 3463 code such as "5.1.1"
    action: str  # Action (§2.3.3): "failed" or "delayed"
    diagnostic: str  # Diagnostic-Code (§2.3.6) without its type, e.g. "550 5.1.1 <x>: ..."
    permanent: bool  # "failed": the reporting MTA gave up; "delayed" is only a warning
    reply_code: int | None = None  # the SMTP reply code when the diagnostic type is smtp


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    bounces: tuple[Bounce, ...]
    source: str  # "dsn" (RFC 3464) | "heuristic" (a bounce in no standard format)
    reporting_mta: str | None = None  # Reporting-MTA (§2.2.2)


@dataclass(frozen=True, slots=True)
class Complaint:
    """A feedback report (RFC 5965 §3): someone marked the message as spam, fraud, ..."""

    feedback_type: str  # Feedback-Type (§3.5, §7.3): abuse | fraud | virus | other
    recipient: str | None  # Original-Rcpt-To (§3.2), else To of the returned message
    user_agent: str | None = None  # who generated the report (§3.1)
    recipient_stated: bool = False  # the recipient is the report's Original-Rcpt-To


@dataclass(frozen=True, slots=True)
class Ignored:
    reason: str


Report = DeliveryReport | Complaint | Ignored

# RFC 3464 §2.1 and RFC 6533 §6.1: the machine-readable part of a delivery report.
_DELIVERY_STATUS_TYPES: Final = frozenset(
    {"message/delivery-status", "message/global-delivery-status"}
)
# RFC 3464 §2.3.3 actions that report a problem; delivered, relayed and expanded do not.
_PROBLEM_ACTIONS: Final = frozenset({"failed", "delayed"})
# RFC 5965 §7.3 lists abuse, fraud, other and virus; RFC 6591 added auth-failure (a DMARC or
# DKIM failure report, about the message's authentication, not the recipient's wishes) and
# RFC 6650 §3 not-spam (the user says it is wanted). Neither is a complaint.
_NOT_COMPLAINTS: Final = frozenset({"auth-failure", "not-spam"})

_ENHANCED_ANYWHERE: Final = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_REPLY: Final = re.compile(r"^([245]\d\d)(?:[ -]|$)")
# RFC 3464 §2.3.2 addresses of type utf-8 (RFC 6533 §3) escape characters as \x{HEX}; xtext
# (RFC 3461 §4) as +HH.
_UNITEXT_ESCAPE: Final = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_XTEXT_ESCAPE: Final = re.compile(r"\+([0-9A-F]{2})")
_FOLD: Final = re.compile(r"\r?\n[ \t]+")
_BLOCK_SEPARATOR: Final = re.compile(r"\r?\n[ \t]*\r?\n")

# RFC 3834 §5: Auto-Submitted other than "no" marks an automatic message. MTAs set it on
# their bounces too (Postfix, Exim, Exchange), so it only means "auto-reply" for a message
# that is not a delivery report and does not come from a mail system's own address.
_MAILER_DAEMON: Final = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon)@", re.IGNORECASE)
_AUTO_REPLY_HEADERS: Final = ("x-autoreply", "x-autorespond", "x-vacation", "x-autoresponder")
_AUTO_REPLY_SUBJECT: Final = re.compile(
    r"^\s*(?:auto(?:matic)?[\s_-]*(?:reply|response|antwort|answer)|autoreply|auto:"
    r"|out\s+of\s+(?:the\s+)?office|on\s+vacation|vacation\s+(?:reply|notice)"
    r"|abwesenheitsnotiz|r[ée]ponse\s+automatique|respuesta\s+autom[áa]tica)",
    re.IGNORECASE,
)
# Where the copy of the original message starts in a bounce without MIME structure: nothing
# past it is the mail system's explanation.
_RETURNED_COPY: Final = re.compile(
    r"^(?:-{2,}.*(?:copy of|original message|returned message|below this line|undelivered)"
    r"|return-path:|received:)",
    re.IGNORECASE | re.MULTILINE,
)
_REPLY_IN_TEXT: Final = re.compile(r"\b([45]\d\d)[ -]([45]\.\d{1,3}\.\d{1,3})\b[^\r\n]*")


def parse_report(message: bytes) -> Report:
    """What a message received at a return path reports; see the module docstring."""
    top = _Part.split(message)
    report = _find_report(top, MAX_DEPTH)
    if report is not None:
        return _read_report(report)
    auto = _auto_reply(top.headers)
    if auto is not None:
        return Ignored(auto)
    return _heuristic(message)


def suppresses(bounce: Bounce) -> bool:
    """Whether this bounce says the address cannot receive mail at all (5.1.1, 5.1.10, ...):
    :func:`~posthorn.domain.replies.should_suppress` applied to the remote server's answer."""
    if not bounce.permanent:
        return False
    code = bounce.reply_code
    if code is None or classify_reply(code) == "ok":
        # No SMTP reply reported (the failure was found otherwise, RFC 3464 §2.3.6): the
        # status class stands for it.
        code = 550 if bounce.status.startswith("5") else 450
    text = bounce.diagnostic
    match = _SMTP_REPLY.match(text)
    if match is not None:
        text = text[match.end() :]
    if parse_enhanced_code(text) != bounce.status:
        text = f"{bounce.status} {text}"
    return should_suppress(code, text)


def for_recipient(report: DeliveryReport, recipient: str) -> Bounce | None:
    """The entry about ``recipient``: VERP already says which delivery a report is about, so
    when no entry names the address (a forwarding address failed, say), the first failure
    stands for it."""
    wanted = recipient.strip().lower()
    for bounce in report.bounces:
        if bounce.recipient.lower() == wanted:
            return bounce
    failed = [b for b in report.bounces if b.permanent]
    if failed:
        return failed[0]
    return report.bounces[0] if report.bounces else None


# --- MIME, from the raw bytes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Part:
    headers: EmailMessage
    body: bytes  # still transfer-encoded

    @classmethod
    def split(cls, data: bytes) -> _Part:
        # RFC 5322 §2.1: the header ends at the first empty line.
        if data.startswith((b"\r\n", b"\n")):
            head, body = b"", data.split(b"\n", 1)[1]
        else:
            match = re.search(rb"\r?\n\r?\n", data)
            head, body = (
                (data, b"") if match is None else (data[: match.start()], data[match.end() :])
            )
        parser = BytesHeaderParser(_class=EmailMessage, policy=email.policy.default)
        return cls(parser.parsebytes(head + b"\n\n"), body)

    @property
    def content_type(self) -> str:
        return self.headers.get_content_type()

    def children(self) -> list[_Part]:
        """The parts of a multipart (RFC 2046 §5.1.1); none for anything else."""
        boundary = self.headers.get_boundary()
        if self.headers.get_content_maintype() != "multipart" or not boundary:
            return []
        delimiter = re.compile(
            rb"^--" + re.escape(boundary.encode("utf-8", "replace")) + rb"(--)?[ \t]*\r?$",
            re.MULTILINE,
        )
        parts: list[_Part] = []
        start: int | None = None
        for match in delimiter.finditer(self.body):
            if start is not None:
                parts.append(_Part.split(_strip_newline(self.body[start : match.start()])))
                if len(parts) >= MAX_PARTS:
                    return parts
            if match.group(1):  # the close delimiter
                return parts
            start = match.end() + 1  # past the delimiter line's LF
        if start is not None:  # no close delimiter: the last part runs to the end
            parts.append(_Part.split(self.body[start:]))
        return parts

    def decoded(self) -> bytes:
        encoding = _header(self.headers, "content-transfer-encoding").strip().lower()
        if encoding == "base64":
            cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", self.body)
            try:
                return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
            except binascii.Error:
                return b""
        if encoding == "quoted-printable":
            return binascii.a2b_qp(self.body)
        return self.body

    def text(self) -> str:
        charset = self.headers.get_content_charset() or "utf-8"
        try:
            return self.decoded().decode(charset, "replace")
        except LookupError:
            return self.decoded().decode("utf-8", "replace")


def _header(headers: EmailMessage, name: str, default: str = "") -> str:
    """A header's value, or ``default``. The email package's header parser raises on some
    malformed values (``From: John <`` gives an IndexError) instead of recording a defect;
    a report from an odd mail system is no reason to fail."""
    try:
        return str(headers.get(name, default))
    except Exception:
        return default


def _strip_newline(data: bytes) -> bytes:
    # RFC 2046 §5.1.1: the line break before a delimiter belongs to the delimiter.
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


def _find_report(part: _Part, depth: int) -> _Part | None:
    if part.content_type == "multipart/report":
        return part
    if depth <= 0 or part.headers.get_content_maintype() != "multipart":
        return None
    for child in part.children():
        found = _find_report(child, depth - 1)
        if found is not None:
            return found
    return None


# --- Reports ----------------------------------------------------------------------------------


def _read_report(report: _Part) -> Report:
    report_type = str(report.headers.get_param("report-type", "") or "")
    parts = report.children()
    kinds = {p.content_type for p in parts}
    # RFC 6522 §3: the report-type names the second part's type; some generators leave the
    # parameter out, so the part itself decides too.
    status_part = next((p for p in parts if p.content_type in _DELIVERY_STATUS_TYPES), None)
    if status_part is not None and report_type.lower() in ("", "delivery-status"):
        return _delivery_report(status_part)
    feedback = next((p for p in parts if p.content_type == "message/feedback-report"), None)
    if feedback is not None:
        return _complaint(feedback, parts)
    kind = report_type.lower() or ", ".join(sorted(kinds)) or "empty"
    return Ignored(f"{kind} report")


def _delivery_report(part: _Part) -> Report:
    # RFC 3464 §2.1: per-message fields, then one block of per-recipient fields per recipient.
    blocks = list(_field_blocks(part.decoded().decode("utf-8", "replace")))
    reporting_mta = None
    bounces: list[Bounce] = []
    for fields in blocks:
        if "reporting-mta" in fields:
            reporting_mta = _after_type(fields["reporting-mta"])
        bounce = _recipient_entry(fields)
        if bounce is not None:
            bounces.append(bounce)
    if not bounces:
        return Ignored("delivery status notification without failures")
    return DeliveryReport(tuple(bounces), "dsn", reporting_mta)


def _recipient_entry(fields: dict[str, str]) -> Bounce | None:
    recipient = _address(fields.get("final-recipient") or fields.get("original-recipient") or "")
    status = parse_enhanced_code(fields.get("status", "")) or ""
    diagnostic_type, diagnostic = _diagnostic(fields.get("diagnostic-code", ""))
    action = fields.get("action", "").split("(")[0].strip().lower()
    if not action and status:
        # A generator that forgot Action: the status class says what it meant.
        action = {"5": "failed", "4": "delayed"}.get(status[0], "")
    if action not in _PROBLEM_ACTIONS or not (recipient or status):
        return None
    reply_code = None
    if diagnostic_type == "smtp":
        match = _SMTP_REPLY.match(diagnostic)
        reply_code = int(match.group(1)) if match else None
    status = _refine(status, diagnostic, failed=action == "failed")
    return Bounce(
        recipient=recipient,
        status=status,
        action=action,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC],
        permanent=action == "failed",
        reply_code=reply_code,
    )


def _refine(status: str, diagnostic: str, *, failed: bool) -> str:
    """The Status field, or the remote server's more precise code when the field is only the
    generic x.0.0 of its class (Exim reports every SMTP rejection as 5.0.0)."""
    found = _ENHANCED_ANYWHERE.search(diagnostic)
    precise = None if found is None else parse_enhanced_code(found.group(0))
    if not status:
        return precise or ("5.0.0" if failed else "4.0.0")
    if status.endswith(".0.0") and precise and precise[0] == status[0]:
        return precise
    return status


def _diagnostic(value: str) -> tuple[str, str]:
    """(type, text) of a Diagnostic-Code, RFC 3464 §2.3.6: ``smtp; 550 5.1.1 ...``.

    A multi-line SMTP reply repeats its codes on every line (RFC 5321 §4.2.1, RFC 2034 §4);
    joined into one field they are noise, and only the first is kept.
    """
    kind, sep, text = value.partition(";")
    if not sep:
        kind, text = "", value
    text = " ".join(text.split())
    match = re.match(r"([245]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})\s", text)
    if match is not None:
        code, enhanced = match.groups()
        repeated = re.compile(rf"\s{code}[ -]{re.escape(enhanced)}(?=\s)")
        rest = repeated.sub("", text[match.end() :])
        text = " ".join(f"{code} {enhanced} {rest}".split())
    return kind.strip().lower(), text.strip()


def _complaint(feedback: _Part, parts: list[_Part]) -> Report:
    fields = next(_field_blocks(feedback.decoded().decode("utf-8", "replace")), {})
    feedback_type = fields.get("feedback-type", "").strip().lower() or "abuse"
    if feedback_type in _NOT_COMPLAINTS:
        return Ignored(f"{feedback_type} feedback report")
    stated = _address(fields.get("original-rcpt-to", ""))
    recipient = stated or _returned_recipient(parts)
    return Complaint(
        feedback_type=feedback_type,
        recipient=recipient or None,
        user_agent=fields.get("user-agent") or None,
        recipient_stated=bool(stated),
    )


def _returned_recipient(parts: list[_Part]) -> str:
    """The To of the message returned in the report's third part (RFC 5965 §2 (d)), which
    providers often leave in while they redact Original-Rcpt-To."""
    for part in parts:
        if part.content_type in ("message/rfc822", "text/rfc822-headers", "message/global"):
            returned = _Part.split(part.decoded())
            addresses = [a for _, a in getaddresses([_header(returned.headers, "to")]) if a]
            if len(addresses) == 1:
                return addresses[0]
    return ""


def _field_blocks(text: str) -> Iterator[dict[str, str]]:
    """Blocks of ``Name: value`` fields separated by empty lines, names lower-cased, folded
    lines joined (RFC 3464 §2.1, RFC 5965 §3.1); the first of a repeated field wins."""
    for block in _BLOCK_SEPARATOR.split(text.strip()):
        fields: dict[str, str] = {}
        for line in _FOLD.sub(" ", block).splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() and not name[:1].isspace():
                fields.setdefault(name.strip().lower(), value.strip())
        if fields:
            yield fields


def _after_type(value: str) -> str:
    """``dns; mx.example`` -> ``mx.example`` (RFC 3464 §2.2.2 type ";" name)."""
    return value.partition(";")[2].strip() if ";" in value else value.strip()


def _address(value: str) -> str:
    """The address in an ``address-type; address`` field (RFC 3464 §2.3.1-2)."""
    kind, sep, address = value.partition(";")
    if not sep:
        kind, address = "rfc822", value
    address = address.strip().strip("<>").strip()
    if kind.strip().lower() == "utf-8":
        address = _UNITEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), address)
        address = _XTEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), address)
    return address


# --- Not a report -----------------------------------------------------------------------------


def _auto_reply(headers: EmailMessage) -> str | None:
    for name in _AUTO_REPLY_HEADERS:
        if name in headers:
            return f"auto-reply ({name})"
    if _header(headers, "precedence").strip().lower() == "auto_reply":
        return "auto-reply (precedence)"
    if _AUTO_REPLY_SUBJECT.match(_header(headers, "subject")):
        return "auto-reply (subject)"
    auto = _header(headers, "auto-submitted", "no").split(";")[0].split("(")[0].strip().lower()
    sender = parseaddr(_header(headers, "from"))[1]
    if auto and auto != "no" and not _MAILER_DAEMON.match(sender):
        return f"automatic message (Auto-Submitted: {auto})"
    return None


def _heuristic(message: bytes) -> Report:
    """A bounce in no standard format, as flufl.bounce's detectors recognise it."""
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    try:
        temporary, permanent = all_failures(parsed)
    except Exception as exc:  # a third-party heuristic failing on odd input
        return Ignored(f"unreadable ({type(exc).__name__})")
    if not temporary and not permanent:
        return Ignored("not a delivery report")
    reply = _REPLY_IN_TEXT.search(_explanation(_Part.split(message)))
    diagnostic = " ".join(reply.group(0).split())[:MAX_DIAGNOSTIC] if reply else ""
    bounces = [
        _heuristic_bounce(address, diagnostic, failed=True, reply=reply)
        for address in sorted(permanent)
    ] + [
        _heuristic_bounce(address, diagnostic, failed=False, reply=reply)
        for address in sorted(temporary - permanent)
    ]
    return DeliveryReport(tuple(bounces), "heuristic")


def _heuristic_bounce(
    address: bytes, diagnostic: str, *, failed: bool, reply: re.Match[str] | None
) -> Bounce:
    status = "5.0.0" if failed else "4.0.0"
    code = None
    if reply is not None and reply.group(2)[0] == status[0]:
        status, code = parse_enhanced_code(reply.group(2)) or status, int(reply.group(1))
    return Bounce(
        recipient=address.decode("utf-8", "replace"),
        status=status,
        action="failed" if failed else "delayed",
        diagnostic=diagnostic if code is not None else "",
        permanent=failed,
        reply_code=code,
    )


def _explanation(top: _Part) -> str:
    """The mail system's own words: the first text part, up to the copy of the message."""
    part = top
    for _ in range(MAX_DEPTH):
        children = part.children()
        if not children:
            break
        part = next(
            (c for c in children if c.headers.get_content_maintype() in ("multipart", "text")),
            children[0],
        )
    text = part.text() if part.headers.get_content_maintype() in ("text", "multipart") else ""
    cut = _RETURNED_COPY.search(text)
    return text[: cut.start()] if cut else text
