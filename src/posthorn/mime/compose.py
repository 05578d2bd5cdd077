"""Build a complete RFC 5322 message, as CRLF bytes ready for SMTP DATA, from a value.

The shape follows what mail clients expect (RFC 2046 §5.1):

    text or html only        a single text/plain or text/html part
    text and html            multipart/alternative: text first, html last (the preferred one)
    with attachments         multipart/mixed: the body above, then each attachment in base64

There is deliberately no Bcc field: blind recipients exist only in the SMTP envelope.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from posthorn.domain.addresses import Address
from posthorn.mime.dkim_canon import CRLF, split_message
from posthorn.mime.encoding import base64_lines, encode_text, quoted_printable
from posthorn.mime.headers import (
    MAX_LINE,
    HeaderError,
    format_address_header,
    format_date,
    format_header,
)

# RFC 6838 §4.2 type and subtype names, optionally followed by printable-ASCII parameters.
_CONTENT_TYPE = re.compile(
    r"[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*(?:;[ -~]*)?", re.ASCII
)
# RFC 5322 §3.6.4 msg-id without its angle brackets: id-left "@" id-right, no white space.
_MESSAGE_ID = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")
# The composer writes these itself; a second copy from the caller would be ambiguous at best
# (RFC 5322 §3.6 allows one of each) and a Bcc would leak the blind recipients.
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
    }
)
# RFC 2231 §7 attribute-char, the characters that need no %-escape in filename*.
_ATTR_SAFE = "!#$&+-.^_`|~"
# A plain quoted filename longer than this would push its header line past 78 characters.
_LONGEST_PLAIN_FILENAME = 60
_RFC2231_SEGMENT = 60


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"

    def __post_init__(self) -> None:
        if not _CONTENT_TYPE.fullmatch(self.content_type):
            raise ValueError(f"invalid attachment content type {self.content_type!r}")


@dataclass(frozen=True, slots=True)
class MessageSpec:
    from_address: Address
    to: tuple[Address, ...]
    subject: str
    message_id: str
    date: datetime
    html: str | None = None
    text: str | None = None
    cc: tuple[Address, ...] = ()
    reply_to: Address | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.date.utcoffset() is None:
            raise ValueError("the date must be timezone-aware")
        if not _MESSAGE_ID.fullmatch(self.message_id):
            raise ValueError(f"invalid message id {self.message_id!r} (no angle brackets)")


# One MIME entity: its header fields (each ending in CRLF) and its encoded body.
_Entity = tuple[bytes, bytes]


def compose(spec: MessageSpec) -> bytes:
    """The whole message: headers in a fixed order, then the MIME body, CRLF throughout."""
    fields = [format_address_header("From", (spec.from_address,))]
    if spec.to:
        fields.append(format_address_header("To", spec.to))
    if spec.cc:
        fields.append(format_address_header("Cc", spec.cc))
    if spec.reply_to is not None:
        fields.append(format_address_header("Reply-To", (spec.reply_to,)))
    fields.append(format_header("Subject", spec.subject))
    fields.append(
        f"Date: {format_date(spec.date)}\r\n"
        f"Message-ID: <{spec.message_id}>\r\n"
        "MIME-Version: 1.0\r\n".encode("ascii")
    )
    for name, value in spec.headers:
        if name.lower() in _RESERVED_HEADERS:
            raise HeaderError(f"{name} is set by the composer and cannot be a custom header")
        fields.append(format_header(name, value, encode_long_words=False))
    entity_head, body = _body(spec)
    fields.append(entity_head)
    fields.append(b"\r\n")
    fields.append(body)
    if body and not body.endswith(b"\r\n"):
        fields.append(b"\r\n")
    return b"".join(fields)


def _body(spec: MessageSpec) -> _Entity:
    parts: list[_Entity] = []
    if spec.text is not None:
        parts.append(_text_part("plain", spec.text))
    if spec.html is not None:
        parts.append(_text_part("html", spec.html))
    if not parts:
        parts.append(_text_part("plain", ""))
    # Only the text parts can hold arbitrary lines; base64 never contains "=" followed by "_",
    # nor does quoted-printable (its "=" is always followed by hex digits or CRLF).
    texts = [body for _, body in parts]
    body = parts[0] if len(parts) == 1 else _multipart("alternative", parts, texts)
    if spec.attachments:
        body = _multipart("mixed", [body, *map(_attachment_part, spec.attachments)], texts)
    return body


def replace_text_parts(
    message: bytes,
    *,
    text: str | None,
    html: str | None,
    drop_fields: Collection[str] = (),
    add_fields: bytes = b"",
) -> bytes:
    """A message :func:`compose` made, with its text/plain and text/html parts encoded anew
    from ``text`` and ``html`` (a part whose new text is None stays as it was), and in its
    header the fields called one of ``drop_fields`` (any case) removed and ``add_fields``
    (formatted, each ending in CRLF) added where compose puts custom fields.

    Every other byte is kept: the attachments, which compose puts after the text parts, are
    neither decoded nor searched, so this costs one copy of the message, not a composition.
    """
    header_end = message.index(b"\r\n\r\n") + 2
    # The entity's own fields end the header, and no custom field can have their names.
    entity_start = message.rindex(b"\r\nContent-Type: ", 0, header_end) + 2
    head = message[:entity_start]
    if drop_fields:
        unwanted = {name.lower().encode("ascii") for name in drop_fields}
        kept, _ = split_message(head + CRLF)
        head = b"".join(f.name + b":" + f.value + CRLF for f in kept if f.key not in unwanted)
    texts = {b"plain": text, b"html": html}
    entity = _replace_texts(message, entity_start, header_end, len(message), texts, ())
    chunks: list[bytes | memoryview] = [head, add_fields, *entity]
    if len(chunks[-1]) and chunks[-1][-2:] != CRLF:
        chunks.append(CRLF)  # as compose ends a message
    return b"".join(chunks)


_MULTIPART_HEAD = re.compile(rb'Content-Type: multipart/\w+; boundary="([^"]+)"\r\n')
_TEXT_HEAD = b"Content-Type: text/"


def _replace_texts(
    message: bytes,
    head_start: int,
    head_end: int,
    end: int,
    texts: dict[bytes, str | None],
    boundaries: tuple[bytes, ...],
) -> list[bytes | memoryview]:
    """The entity of ``message`` whose fields run from ``head_start`` to ``head_end`` (and
    its body from the empty line after them to ``end``), with its text parts replaced; the
    new text must hold none of the ``boundaries`` of the multiparts around it."""
    head = message[head_start:head_end]
    body_start = head_end + 2
    if head.startswith(_TEXT_HEAD) and b"Content-Disposition" not in head:
        subtype = head[len(_TEXT_HEAD) : head.index(b";")]
        new_text = texts.get(subtype)
        if new_text is None:
            return [memoryview(message)[head_start:end]]
        new_head, body = _text_part(subtype.decode("ascii"), new_text, boundaries)
        return [new_head, CRLF, body]
    multipart = _MULTIPART_HEAD.fullmatch(head)
    if multipart is None:
        return [memoryview(message)[head_start:end]]
    delimiter = CRLF + b"--" + multipart[1]
    boundaries = (*boundaries, multipart[1])
    # RFC 2046 §5.1.1: compose starts the body with the first delimiter (the CRLF before each
    # later one belongs to that delimiter), each followed by CRLF and a part.
    part = body_start + len(delimiter) - len(CRLF)
    chunks: list[bytes | memoryview] = [memoryview(message)[head_start:part]]
    while message.startswith(CRLF, part):
        part += 2
        part_head_end = message.find(b"\r\n\r\n", part, end) + 2
        part_head = message[part:part_head_end]
        if (
            part_head_end < 2
            or not part_head.startswith((_TEXT_HEAD, b"Content-Type: multipart/"))
            or b"Content-Disposition" in part_head
        ):
            break  # an attachment: compose puts every text part before the first one
        part_end = message.find(delimiter, part_head_end + 2, end)
        if part_end < 0:
            break
        chunks.append(CRLF)
        chunks += _replace_texts(message, part, part_head_end, part_end, texts, boundaries)
        chunks.append(delimiter)
        part = part_end + len(delimiter)
    else:
        chunks.append(memoryview(message)[part:end])
        return chunks
    chunks.append(memoryview(message)[part - 2 : end])
    return chunks


def _text_part(subtype: str, text: str, boundaries: Sequence[bytes] = ()) -> _Entity:
    encoding, body = encode_text(text)
    if encoding == "7bit" and any(boundary in body for boundary in boundaries):
        # A boundary chosen for other text: quoted-printable can hold no "=_" (RFC 2045 §6.7).
        encoding, body = "quoted-printable", quoted_printable(body)
    head = (
        f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n"
    )
    return head.encode("ascii"), body


def _multipart(subtype: str, parts: Sequence[_Entity], texts: Sequence[bytes]) -> _Entity:
    boundary = _boundary(subtype[0], texts)
    delimiter = b"--" + boundary
    # RFC 2046 §5.1.1: the CRLF before each delimiter belongs to the delimiter, not the part.
    chunks: list[bytes] = []
    for head, body in parts:
        chunks += (delimiter, b"\r\n", head, b"\r\n", body, b"\r\n")
    chunks += (delimiter, b"--")
    # RFC 2045 §5.1: "=" is a tspecial, so the boundary parameter must be quoted.
    head = b"Content-Type: multipart/" + subtype.encode("ascii") + b'; boundary="' + boundary
    return head + b'"\r\n', b"".join(chunks)


def _boundary(kind: str, texts: Sequence[bytes]) -> bytes:
    """A fresh boundary (RFC 2046 §5.1.1) starting with "=_" and a letter per nesting level.

    "=_" never occurs in base64 or quoted-printable output, and the letter after it keeps the
    mixed and alternative boundaries from being prefixes of each other; 7bit text is checked.
    """
    while True:
        boundary = f"=_{kind}{secrets.token_hex(12)}".encode("ascii")
        if not any(boundary in text for text in texts):
            return boundary


def _attachment_part(attachment: Attachment) -> _Entity:
    name = attachment.filename
    if name.isascii() and name.isprintable() and len(name) <= _LONGEST_PLAIN_FILENAME:
        quoted = _quote(name or "attachment")
        params = [f"filename={quoted}"]
    else:
        quoted = _quote(_ascii_fallback(name))
        # RFC 2231 §4: readers that predate it see only the plain ASCII fallback. filename*
        # goes first because some readers (Python's email package) keep the first spelling.
        params = [*_rfc2231_params("filename", name), f"filename={quoted}"]
    head = (
        f"{_fold_params(f'Content-Type: {attachment.content_type}', [f'name={quoted}'])}\r\n"
        f"{_fold_params('Content-Disposition: attachment', params)}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
    )
    return head.encode("ascii"), base64_lines(attachment.content)


def _quote(value: str) -> str:
    # RFC 2045 §5.1 parameter value as a quoted-string (RFC 5322 §3.2.4 escaping).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ascii_fallback(name: str) -> str:
    """A readable ASCII stand-in: "Übersicht.pdf" becomes "Ubersicht.pdf"."""
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_name = "".join(char for char in decomposed if " " <= char <= "~").strip()
    root, dot, extension = ascii_name.rpartition(".")
    if not dot or len(extension) > 10:
        root, extension = ascii_name, ""
    root = root.strip()[: _LONGEST_PLAIN_FILENAME - len(extension) - 1] or "attachment"
    return f"{root}.{extension}" if extension else root


def _rfc2231_params(attribute: str, value: str) -> list[str]:
    """``attribute*`` in RFC 2231 §3-4 form, split into numbered sections when long."""
    encoded = "utf-8''" + quote(value.encode("utf-8"), safe=_ATTR_SAFE)
    if len(encoded) <= _RFC2231_SEGMENT:
        return [f"{attribute}*={encoded}"]
    sections: list[str] = []
    start = 0
    while start < len(encoded):
        end = min(start + _RFC2231_SEGMENT, len(encoded))
        # Never cut a %XX escape in two.
        percent = encoded.rfind("%", end - 2, end)
        if percent != -1 and end < len(encoded):
            end = percent
        sections.append(f"{attribute}*{len(sections)}*={encoded[start:end]}")
        start = end
    return sections


def _fold_params(head: str, params: Sequence[str]) -> str:
    """``head; p1; p2`` with a fold before any parameter that would pass 78 characters."""
    line_length = len(head)
    out = [head]
    for param in params:
        if line_length + 2 + len(param) > MAX_LINE:
            out.append(";\r\n ")
            line_length = 1 + len(param)
        else:
            out.append("; ")
            line_length += 2 + len(param)
        out.append(param)
    return "".join(out)
