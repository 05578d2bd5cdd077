"""Header fields as bytes: RFC 2047 encoding, RFC 5322 folding, dates.

Every function returns one complete field ending in CRLF, ready to be concatenated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from posthorn.domain.addresses import Address, format_address
from posthorn.domain.encoded_words import MAX_WORD, MIN_WORD, encode_words

# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters and MUST be at most 998.
MAX_LINE = 78
HARD_MAX_LINE = 998

# RFC 5322 §2.2: a field name is printable US-ASCII except ":".
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# Anything that cannot be sent as-is in a classic header: non-ASCII, and controls other than
# HTAB (RFC 5322 §3.2.5 unstructured text is VCHAR and WSP only).
_UNSAFE = re.compile(r"[^\t -~]")
# RFC 2047 §6.1: a reader decodes any white-space-delimited word of this shape, so plain text
# that looks like one must itself be encoded to come through unchanged.
_LOOKS_ENCODED = re.compile(r"(?:^|[ \t])=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=(?=[ \t]|$)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FOLD = re.compile(r"\r\n(?=[ \t])")
# Fold points: each token is its leading white space plus one word, so breaking a line before
# a token only ever inserts CRLF before existing white space (RFC 5322 §2.2.3).
_TOKENS = re.compile(r"[ \t]*[^ \t]+|[ \t]+")

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class HeaderError(ValueError):
    """A header field name or value that cannot be written safely."""


def format_header(name: str, value: str, *, encode_long_words: bool = True) -> bytes:
    """One unstructured field (RFC 5322 §3.6.5), encoded and folded, ending in CRLF.

    Line breaks inside ``value`` become spaces, so a value can never start a new field.
    Non-ASCII text becomes RFC 2047 encoded words. With ``encode_long_words`` (the default,
    right for Subject) a word too long for a 78-character line is encoded too, since encoded
    words can be split; pass ``False`` for caller-supplied fields that may be structured, such
    as List-Unsubscribe, where long words are kept whole up to the 998-octet limit.
    """
    _check_name(name)
    if "\r" in value or "\n" in value:
        # RFC 5322 §2.2.3: unfolding removes a CRLF that precedes white space; any other
        # break is not allowed in a field body at all.
        value = _LINE_BREAK.sub(" ", _FOLD.sub("", value))
    if _UNSAFE.search(value) is None and ("=?" not in value or not _LOOKS_ENCODED.search(value)):
        line = f"{name}: {value}"
        if len(line) <= MAX_LINE:
            return f"{line}\r\n".encode("ascii")
        lines = _fold(name, value)
        longest = max(len(line) for line in lines)
        if longest <= MAX_LINE or (not encode_long_words and longest <= HARD_MAX_LINE):
            return ("\r\n".join(lines) + "\r\n").encode("ascii")
        if not encode_long_words:
            raise HeaderError(f"{name} has a word longer than {HARD_MAX_LINE} octets")
    return _encoded(name, value)


def format_address_header(name: str, addresses: Sequence[Address]) -> bytes:
    """An address-list field (RFC 5322 §3.6.2-3), folded after the commas when long."""
    _check_name(name)
    value = ", ".join([format_address(address) for address in addresses])
    if "\r" in value or "\n" in value or "\x00" in value:
        # Names with controls are always encoded, so this can only be a hand-built email.
        raise HeaderError(f"{name} address contains a line break or NUL")
    line = f"{name}: {value}"
    if len(line) > MAX_LINE:
        line = "\r\n".join(_fold(name, value))
    # RFC 6532 §3.2: an internationalised local part is sent as raw UTF-8 (SMTPUTF8).
    return f"{line}\r\n".encode()


def format_date(moment: datetime) -> str:
    """RFC 5322 §3.3 date-time, e.g. ``Mon, 23 Nov 2026 18:41:30 +0000``."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("the date must be timezone-aware")
    # Plain integers: timedelta arithmetic costs more than the rest of the header together.
    seconds = offset.days * 86400 + offset.seconds
    sign = "-" if seconds < 0 else "+"
    minutes = abs(seconds) // 60
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


def _check_name(name: str) -> None:
    if not _FIELD_NAME.fullmatch(name):
        raise HeaderError(f"invalid header name {name!r}")


def _fold(name: str, value: str) -> list[str]:
    """Greedy folding at white space; a word longer than a line stays whole on its own line."""
    lines: list[str] = []
    line = f"{name}:"
    has_text = False
    for token in _TOKENS.findall(f" {value}"):
        # Never break before white space alone: RFC 5322 §3.2.2 forbids a folded line made
        # only of white space.
        if has_text and len(line) + len(token) > MAX_LINE and not token[-1].isspace():
            lines.append(line)
            line = token
        else:
            line += token
            has_text = True
    lines.append(line)
    return lines


def _encoded(name: str, value: str) -> bytes:
    # RFC 2047 §2: each encoded word at most 75 characters; the first also shares its line
    # with "Name: " (but always holds at least one character, as some readers mishandle a
    # value that starts on a continuation line). Each later word has a line to itself.
    room = min(max(MAX_LINE - len(name) - 2, MIN_WORD), MAX_WORD)
    words = encode_words(value, first_limit=room)
    return (f"{name}: " + "\r\n ".join(words) + "\r\n").encode("ascii")
