"""DKIM canonicalisation (RFC 6376 §3.4) and the header parsing it needs, on bytes.

Both algorithms are here for headers and bodies; the signer uses ``relaxed`` for both, which
survives the re-folding and white-space changes that relays commonly make (RFC 6376 §3.4).
Body length limits (the ``l=`` tag) are deliberately absent: a signature that covers only a
prefix of the body lets anyone append content under the signer's name (RFC 6376 §8.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CRLF = b"\r\n"

_BARE_LF = re.compile(rb"(?<!\r)\n")


class DkimError(ValueError):
    """A message or key that cannot be used to make a DKIM signature."""


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field as it appears in the message.

    ``name`` is everything before the first colon (RFC 5322 §4.5.2 obsolete syntax allows
    white space before it); ``value`` is everything after it, folding CRLFs included, without
    the CRLF that ends the field.
    """

    name: bytes
    value: bytes

    @property
    def key(self) -> bytes:
        """The lower-cased field name, as matched against the ``h=`` tag (RFC 6376 §3.5)."""
        return self.name.rstrip(b" \t").lower()


def normalize_line_endings(message: bytes) -> bytes:
    """Turn bare LFs into CRLF and end a non-empty message with CRLF.

    SMTP carries lines ending in CRLF (RFC 5321 §2.3.8) and the client adds a final CRLF
    before the terminating "." if the data lacks one (RFC 5321 §4.1.1.4), so this is the form
    the receiver will canonicalise; signing any other form would sign bytes nobody receives.
    """
    if message.count(b"\n") != message.count(CRLF):
        message = _BARE_LF.sub(CRLF, message)
    if message and not message.endswith(CRLF):
        message += CRLF
    return message


def split_message(message: bytes) -> tuple[list[HeaderField], bytes]:
    """Split a CRLF message into its header fields and its body (RFC 5322 §2.1).

    The header ends at the first empty line; without one the whole message is header and the
    body is empty. Raises :class:`DkimError` for a line that is neither a field nor a
    continuation, since receivers would each parse it differently.
    """
    if message.startswith(CRLF):
        return [], message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head, body = message.removesuffix(CRLF), b""
    else:
        head, body = message[:end], message[end + 4 :]
    fields: list[HeaderField] = []
    name = value = b""
    for line in head.split(CRLF):
        if line[:1] in (b" ", b"\t"):
            # RFC 5322 §2.2.3: a line starting with WSP continues the field above it.
            if not name:
                raise DkimError("the message starts with a folded continuation line")
            value += CRLF + line
            continue
        if name:
            fields.append(HeaderField(name, value))
        name, colon, value = line.partition(b":")
        if not colon or not name.strip(b" \t"):
            raise DkimError(f"not a header field: {line[:40]!r}")
    if name:
        fields.append(HeaderField(name, value))
    return fields, body


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """The ``relaxed`` header canonicalisation (RFC 6376 §3.4.2), ending in CRLF.

    Lower-case the name, unfold, collapse WSP runs to one SP, and drop WSP at the ends of the
    value and around the colon.
    """
    value = _collapse_wsp(value.replace(CRLF, b"")).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + CRLF


def simple_header(name: bytes, value: bytes) -> bytes:
    """The ``simple`` header canonicalisation (RFC 6376 §3.4.1): the field unchanged."""
    return name + b":" + value + CRLF


def relaxed_body(body: bytes) -> bytes:
    """The ``relaxed`` body canonicalisation (RFC 6376 §3.4.4).

    Drop WSP at line ends, collapse WSP runs to one SP, drop empty lines at the end, and end
    a non-empty body with CRLF. A body of nothing but empty lines hashes as nothing.
    """
    if body and not body.endswith(CRLF):
        # Added first so that WSP on an unterminated last line is dropped like any other.
        body += CRLF
    # Once every WSP run is one SP, white space at a line end is exactly one SP before CRLF.
    body = _collapse_wsp(body).replace(b" \r\n", CRLF)
    body = _strip_trailing_empty_lines(body)
    return b"" if body == CRLF else body


def simple_body(body: bytes) -> bytes:
    """The ``simple`` body canonicalisation (RFC 6376 §3.4.3).

    Drop empty lines at the end; an empty body, or one without a final CRLF, gets one CRLF.
    """
    if not body.endswith(CRLF):
        body += CRLF
    return _strip_trailing_empty_lines(body)


def _collapse_wsp(data: bytes) -> bytes:
    """Turn every run of WSP (SP or HTAB, RFC 6376 §2.8) into a single SP.

    Plain replaces run at memory speed where a regular expression steps through every byte in
    Python's engine; each pass halves the longest run, so a few passes suffice.
    """
    data = data.replace(b"\t", b" ")
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data


def _strip_trailing_empty_lines(body: bytes) -> bytes:
    """Reduce any run of CRLFs at the end of ``body`` (which ends in CRLF) to one."""
    end = len(body)
    # Walking back pair by pair, rather than rstrip(b"\r\n"), keeps a bare CR that precedes
    # the last CRLF: it is content, not an empty line.
    while end >= 4 and body[end - 4 : end] == b"\r\n\r\n":
        end -= 2
    return body[:end]
