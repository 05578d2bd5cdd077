"""Content-Transfer-Encodings (RFC 2045 §6): 7bit, quoted-printable and base64, CRLF only."""

from __future__ import annotations

import binascii
from typing import Literal

TransferEncoding = Literal["7bit", "quoted-printable", "base64"]

# RFC 2045 §6.7 (5) and §6.8: encoded lines are at most 76 characters.
MAX_ENCODED_LINE = 76
# RFC 5322 §2.1.1 and RFC 2045 §2.7: 7bit lines are at most 998 octets plus CRLF.
MAX_7BIT_LINE = 998

# RFC 2045 §2.7: 7bit data has no NUL and no CR or LF outside CRLF; other controls are legal
# but unreliable in transit, so they push the part to quoted-printable too.
_7BIT_SAFE = bytes([0x09, 0x0A, *range(0x20, 0x7F)])
_ASCII = bytes(range(0x80))

_HEX = "0123456789ABCDEF"
# RFC 2045 §6.7 (2): printable ASCII except "=" stands for itself.
_QP_LITERAL = frozenset(range(33, 127)) - {ord("=")}


def encode_text(text: str) -> tuple[TransferEncoding, bytes]:
    """Encode a text body part as UTF-8 with CRLF line endings.

    ASCII text with lines of legal length goes as 7bit, readable in any raw view. Other text
    goes as quoted-printable, which stays legible for mostly-Latin scripts, or as base64 when
    that is smaller; both keep every line within 76 characters.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii():
        data = text.encode("ascii")
        # Deleting the allowed bytes leaves nothing exactly when every byte is allowed.
        if not data.translate(None, _7BIT_SAFE) and (
            len(data) <= MAX_7BIT_LINE or max(map(len, data.split(b"\n"))) <= MAX_7BIT_LINE
        ):
            return "7bit", data.replace(b"\n", b"\r\n")
    data = text.replace("\n", "\r\n").encode("utf-8")
    # Quoted-printable spends three characters on every non-ASCII byte, base64 four on every
    # three bytes: past one non-ASCII byte in six (CJK, Cyrillic, Thai) base64 is smaller.
    if 6 * len(data.translate(None, _ASCII)) > len(data):
        return "base64", base64_lines(data)
    return "quoted-printable", quoted_printable(data)


def quoted_printable(data: bytes) -> bytes:
    """RFC 2045 §6.7 quoted-printable of ``data``, whose line breaks must already be CRLF.

    Output lines are at most 76 characters; "=", controls, non-ASCII and white space before a
    line break are escaped. A line starting with "From " gets its "F" escaped so that mbox
    storage on the way cannot mangle it into ">From ".
    """
    # binascii picks its line ending from the first one in the data, so give it a CRLF to see.
    if b"\n" not in data:
        encoded = binascii.b2a_qp(data + b"\r\n", istext=True)[:-2]
    else:
        encoded = binascii.b2a_qp(data, istext=True)
    if (
        encoded.startswith(b"From ")
        or b"\nFrom " in encoded
        # binascii lets a line of 74 characters plus white space before CRLF become "=20"
        # at columns 75-77, one past the limit.
        or max(map(len, encoded.split(b"\r\n"))) > MAX_ENCODED_LINE
    ):
        return _quoted_printable_slow(data)
    return encoded


def _quoted_printable_slow(data: bytes) -> bytes:
    """The same encoding in plain Python, with "From " and a leading "." escaped."""
    out: list[str] = []
    for number, line in enumerate(data.split(b"\r\n")):
        if number:
            out.append("\r\n")
        column = 0
        for index, byte in enumerate(line):
            at_end = index == len(line) - 1
            if byte in _QP_LITERAL and not (
                column == 0
                and (byte == 0x2E or (byte == 0x46 and line[index:].startswith(b"From ")))
            ):
                piece = chr(byte)
            elif byte in (0x20, 0x09) and not at_end:
                # RFC 2045 §6.7 (3): white space is literal except right before a line break.
                piece = chr(byte)
            else:
                piece = f"={_HEX[byte >> 4]}{_HEX[byte & 15]}"
            # A soft break "=" needs the last column, unless this piece ends the line.
            limit = MAX_ENCODED_LINE if at_end else MAX_ENCODED_LINE - 1
            if column + len(piece) > limit:
                out.append("=\r\n")
                column = 0
                if piece == "." or (piece == "F" and line[index:].startswith(b"From ")):
                    piece = f"={byte:02X}"
            out.append(piece)
            column += len(piece)
    return "".join(out).encode("ascii")


def base64_lines(data: bytes) -> bytes:
    """RFC 2045 §6.8 base64 in 76-character lines joined by CRLF (no final CRLF)."""
    encoded = binascii.b2a_base64(data, newline=False)
    if len(encoded) <= MAX_ENCODED_LINE:
        return encoded
    return b"\r\n".join(
        [
            encoded[start : start + MAX_ENCODED_LINE]
            for start in range(0, len(encoded), MAX_ENCODED_LINE)
        ]
    )
