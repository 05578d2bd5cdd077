"""RFC 2047 encoded words: the only way to put non-ASCII text into a classic header.

Lives in ``domain`` (not ``mime``) because display names need it too and ``domain`` may not
import ``mime``. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Iterator

# RFC 2047 §2: "An 'encoded-word' may not be more than 75 characters long".
MAX_WORD = 75

_PREFIX_Q = "=?utf-8?q?"
_PREFIX_B = "=?utf-8?b?"
_OVERHEAD = len(_PREFIX_B) + len("?=")
# One four-byte UTF-8 character is 12 characters in Q; a word must hold at least that.
MIN_WORD = _OVERHEAD + 12

# RFC 2047 §5 (3): inside a phrase only letters, digits and "!*+-/" may appear unencoded in Q
# text. Using the phrase rules everywhere makes one encoder safe for Subject and for names.
_Q_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_TABLE: tuple[str, ...] = tuple(
    "_" if byte == 0x20 else chr(byte) if byte in _Q_LITERAL else f"={byte:02X}"
    for byte in range(256)
)

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_WHITESPACE_ONLY = re.compile(r"[ \t\r\n]*")


def encode_words(text: str, *, first_limit: int = MAX_WORD, limit: int = MAX_WORD) -> list[str]:
    """Encode ``text`` as UTF-8 encoded words, each at most ``limit`` characters.

    ``first_limit`` caps the first word, so that it can share a line with the header name.
    Words are meant to be joined by folding white space, which readers drop between adjacent
    encoded words (RFC 2047 §6.2), so the decoded text is exactly ``text``.
    """
    if min(first_limit, limit) < MIN_WORD:
        raise ValueError(f"an encoded word needs at least {MIN_WORD} characters")
    if not text:
        return []
    data = text.encode("utf-8")
    q_length = sum(len(_Q_TABLE[byte]) for byte in data)
    b_length = 4 * ((len(data) + 2) // 3)
    # Q keeps mostly-ASCII text legible in raw form; B is shorter once many bytes need escaping.
    if q_length <= b_length:
        return [f"{_PREFIX_Q}{chunk}?=" for chunk in _q_chunks(text, first_limit, limit)]
    return [f"{_PREFIX_B}{chunk}?=" for chunk in _b_chunks(data, first_limit, limit)]


def _q_chunks(text: str, first_limit: int, limit: int) -> Iterator[str]:
    room = first_limit - _OVERHEAD
    current: list[str] = []
    used = 0
    # RFC 2047 §5: each encoded word must hold whole characters, so split between characters.
    for char in text:
        encoded = "".join(_Q_TABLE[byte] for byte in char.encode("utf-8"))
        if used + len(encoded) > room and current:
            yield "".join(current)
            current, used, room = [], 0, limit - _OVERHEAD
        current.append(encoded)
        used += len(encoded)
    if current:
        yield "".join(current)


def _b_chunks(data: bytes, first_limit: int, limit: int) -> Iterator[str]:
    room = first_limit - _OVERHEAD
    start = 0
    while start < len(data):
        end = min(len(data), start + (room // 4) * 3)
        # Back off to a character boundary: UTF-8 continuation bytes are 0b10xxxxxx.
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1
        yield base64.b64encode(data[start:end]).decode("ascii")
        start = end
        room = limit - _OVERHEAD


def decode_words(text: str) -> str:
    """Decode the RFC 2047 encoded words in ``text``; malformed words are left as they are."""
    if "=?" not in text:
        return text
    pieces: list[str] = []
    pending = bytearray()
    pending_charset = ""
    last_end = 0
    last_was_word = False
    for match in _ENCODED_WORD.finditer(text):
        between = text[last_end : match.start()]
        decoded = _decode_one(match)
        if decoded is None:
            continue
        charset, raw = decoded
        # RFC 2047 §6.2: white space between two adjacent encoded words is not displayed.
        if not (last_was_word and _WHITESPACE_ONLY.fullmatch(between)):
            pieces.append(_flush(pending, pending_charset))
            pending.clear()
            pieces.append(between)
        elif charset != pending_charset:
            pieces.append(_flush(pending, pending_charset))
            pending.clear()
        # Same-charset neighbours are joined as bytes first: some senders split a multi-byte
        # character across two words, which RFC 2047 §5 forbids but readers tolerate.
        pending += raw
        pending_charset = charset
        last_end = match.end()
        last_was_word = True
    pieces.append(_flush(pending, pending_charset))
    pieces.append(text[last_end:])
    return "".join(pieces)


def _decode_one(match: re.Match[str]) -> tuple[str, bytes] | None:
    # RFC 2231 §5 lets a language tag follow the charset: "utf-8*en".
    charset = match.group(1).partition("*")[0].lower()
    payload = match.group(3)
    try:
        codecs.lookup(charset)
        if match.group(2) in "bB":
            raw = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        else:
            raw = binascii.a2b_qp(payload.encode("ascii"), header=True)
    except (LookupError, ValueError, binascii.Error):
        return None
    return charset, raw


def _flush(pending: bytearray, charset: str) -> str:
    if not pending:
        return ""
    return bytes(pending).decode(charset, errors="replace")
