"""Reading just enough of a message someone else wrote: its header fields, unfolded.

SMTP submissions are passed on as their author wrote them; Posthorn only needs a few header
values (From, To, Cc, Subject, Message-ID) to route, check and show the message.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from email.utils import getaddresses

from posthorn.domain.encoded_words import decode_words
from posthorn.mime.dkim_canon import CRLF, split_message


def read_headers(message: bytes) -> dict[str, list[str]]:
    """Lower-cased field name → the unfolded values, in order; RFC 2047 words decoded."""
    fields, _ = split_message(message)
    headers: dict[str, list[str]] = {}
    for field in fields:
        name = field.key.decode("ascii", "replace")
        raw = field.value.decode("utf-8", "replace")
        # RFC 5322 §2.2.3: unfolding removes the CRLF before folding white space.
        value = raw.replace("\r\n", "").replace("\n", "").strip()
        headers.setdefault(name, []).append(decode_words(value))
    return headers


def first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name.lower())
    return values[0] if values else None


def address_list(headers: dict[str, list[str]], name: str) -> list[str]:
    """The bare addresses in every ``name`` field (To, Cc, …)."""
    values = headers.get(name.lower(), [])
    if len(values) == 1 and (bare := _LONE_ADDRESS.fullmatch(values[0])):
        # The usual field, one plain address: what getaddresses would give, without it.
        return [bare.group(1) or bare.group(2)]
    return [addr for _, addr in getaddresses(values) if "@" in addr]


# One addr-spec, bare or in angle brackets, with nothing getaddresses would read differently
# (no quotes, comments, groups, routes, lists or white space inside).
_ATOMS = r'[^\s<>()\[\]\\",;:@]+'
_LONE_ADDRESS = re.compile(rf"[ \t]*(?:({_ATOMS}@{_ATOMS})|<({_ATOMS}@{_ATOMS})>)[ \t]*")


def prepend_header(message: bytes, name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode() + message


def replace_fields(message: bytes, names: Collection[str], fields: bytes) -> bytes:
    """The message without its fields called one of ``names`` (any case), and with
    ``fields`` (formatted, each ending in CRLF) added at the end of its header. Every other
    field and the body are kept byte for byte."""
    unwanted = {name.lower().encode("ascii") for name in names}
    kept, body = split_message(message)
    head = b"".join(f.name + b":" + f.value + CRLF for f in kept if f.key not in unwanted)
    return head + fields + CRLF + body
