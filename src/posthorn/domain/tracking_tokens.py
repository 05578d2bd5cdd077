"""Signed tokens for tracking pixels, click redirects and unsubscribe links.

A token carries everything its endpoint needs, so nothing is stored per link: the kind, the
account, the email, the recipient, and for a click the exact URL to redirect to (an
unsubscribe token may name a list). It is authenticated with HMAC-SHA256 (RFC 2104) under a
key derived from the server secret, truncated to 128 bits, which is what makes the click
redirect safe: only URLs that Posthorn itself put into a message can ever be redirected to.

Layout, before URL-safe base64 without padding (RFC 4648 §5)::

    version  kind  account  email  recipient  list  url   mac (16 bytes)

Each text field is a one-byte form (``0`` UTF-8 text with a varint length, ``1`` a UUID as 16
bytes, ``2`` absent). A URL is stored after a one-byte code for its common prefix, and deflated
when that makes it shorter. Reading never raises: any malformed, truncated, altered or
foreign token, or one of another kind, reads as ``None``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import zlib
from dataclasses import dataclass
from enum import Enum

VERSION = 1
MAC_BYTES = 16  # 128 bits
# Links in mail are rarely over 2 KB; a longer one is left untracked rather than risking a
# request line that servers and proxies refuse (8 KB is a common limit).
MAX_TOKEN_CHARS = 6000
_KEY_LABEL = b"posthorn tracking token v1"
_MAX_FIELD = 4096
_MAX_URL = 16384

_TEXT, _UUID, _ABSENT = 0, 1, 2
# A UUID as Posthorn writes ids (str(uuid.uuid4())): kept as its 16 bytes.
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_URL_PLAIN, _URL_DEFLATED = 0, 1
# Index = prefix code. Longest first, so the first match is the best one.
_URL_PREFIXES = ("https://www.", "http://www.", "https://", "http://", "")


class Kind(Enum):
    OPEN = 1
    CLICK = 2
    UNSUBSCRIBE = 3


@dataclass(frozen=True, slots=True)
class TokenData:
    kind: Kind
    account_id: str
    email_id: str
    recipient: str
    url: str | None = None  # clicks only: where the redirect goes
    list_id: str | None = None  # unsubscribes only: the suppression scope

    def __post_init__(self) -> None:
        if (self.kind is Kind.CLICK) != (self.url is not None):
            raise ValueError("a click token, and only a click token, carries a URL")
        if self.list_id is not None and self.kind is not Kind.UNSUBSCRIBE:
            raise ValueError("only an unsubscribe token names a list")


def derive_key(secret: str) -> bytes:
    """The token key: separate from the secret itself, so that no other use of the secret can
    produce or check a tracking token."""
    if not secret:
        raise ValueError("the server secret is empty")
    return hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def make_token(key: bytes, data: TokenData) -> str:
    """The token for ``data``; ``ValueError`` when it would be too long (a huge URL)."""
    payload = bytearray((VERSION, data.kind.value))
    payload += _fields(data.account_id, data.email_id, data.recipient, data.list_id)
    if data.url is not None:
        payload += _pack_url(data.url)
    payload += _mac(key, payload)
    token = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError("too much to carry in a token")
    return token


def read_token(key: bytes, token: str, *, kind: Kind) -> TokenData | None:
    """The token's data when it is genuine and of ``kind``; ``None`` for anything else."""
    raw = _decode(token)
    if raw is None or len(raw) < 2 + MAC_BYTES:
        return None
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    # Authenticated from here on: the rest only fails for a token of another format version.
    if payload[0] != VERSION or payload[1] != kind.value:
        return None
    try:
        reader = _Reader(payload, 2)
        account_id = reader.field()
        email_id = reader.field()
        recipient = reader.field()
        list_id = reader.field()
        url = _unpack_url(reader.rest()) if kind is Kind.CLICK else None
        if account_id is None or email_id is None or recipient is None:
            return None
        if kind is not Kind.CLICK and not reader.done():
            return None
        return TokenData(kind, account_id, email_id, recipient, url=url, list_id=list_id)
    except (ValueError, IndexError, zlib.error):
        return None


def _mac(key: bytes, payload: bytes | bytearray) -> bytes:
    return hmac.digest(key, payload, "sha256")[:MAC_BYTES]


def _decode(token: str) -> bytes | None:
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    # Base64 has spare bits in its last character; a token that decodes to the same bytes
    # but is spelled differently is not one we issued.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        return None
    return raw


@functools.lru_cache(maxsize=1024)
def _fields(account_id: str, email_id: str, recipient: str, list_id: str | None) -> bytes:
    """The fields shared by every token of one recipient (a message has dozens of links)."""
    out = bytearray()
    for value in (account_id, email_id, recipient, list_id):
        _put_field(out, value)
    return bytes(out)


def _put_field(out: bytearray, value: str | None) -> None:
    if value is None:
        out.append(_ABSENT)
        return
    if _UUID_TEXT.fullmatch(value):
        out.append(_UUID)
        out += bytes.fromhex(value.replace("-", ""))
        return
    data = value.encode("utf-8")
    if len(data) > _MAX_FIELD:
        raise ValueError("token field too long")
    out.append(_TEXT)
    _put_varint(out, len(data))
    out += data


def _put_varint(out: bytearray, number: int) -> None:
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)


def _pack_url(url: str) -> bytes:
    code = next(i for i, p in enumerate(_URL_PREFIXES) if url.startswith(p))
    rest = url[len(_URL_PREFIXES[code]) :].encode("utf-8")
    if len(rest) > _MAX_URL:
        raise ValueError("URL too long for a token")
    # Raw deflate (RFC 1951) with a 512-byte window and the smallest state: a URL is short,
    # and setting up the default 32 KB window costs ten times more than compressing it.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -9, 1)
    deflated = compressor.compress(rest) + compressor.flush()
    if len(deflated) < len(rest):
        return bytes((code, _URL_DEFLATED)) + deflated
    return bytes((code, _URL_PLAIN)) + rest


def _unpack_url(data: bytes) -> str:
    code, form, rest = data[0], data[1], data[2:]
    if code >= len(_URL_PREFIXES):
        raise ValueError("unknown URL prefix")
    if form == _URL_DEFLATED:
        inflater = zlib.decompressobj(-15)
        rest = inflater.decompress(rest, _MAX_URL + 1)
        if len(rest) > _MAX_URL or not inflater.eof:
            raise ValueError("bad URL")
    elif form != _URL_PLAIN:
        raise ValueError("unknown URL form")
    return _URL_PREFIXES[code] + rest.decode("utf-8")


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._at = offset

    def field(self) -> str | None:
        form = self._data[self._at]
        self._at += 1
        if form == _ABSENT:
            return None
        if form == _UUID:
            digits = self._take(16).hex()
            return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))
        if form != _TEXT:
            raise ValueError("unknown field form")
        return self._take(self._varint()).decode("utf-8")

    def rest(self) -> bytes:
        chunk = self._data[self._at :]
        self._at = len(self._data)
        return chunk

    def done(self) -> bool:
        return self._at == len(self._data)

    def _varint(self) -> int:
        number = shift = 0
        while True:
            byte = self._data[self._at]
            self._at += 1
            number |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return number
            shift += 7
            if shift > 28:
                raise ValueError("varint too long")

    def _take(self, count: int) -> bytes:
        end = self._at + count
        if end > len(self._data):
            raise ValueError("truncated")
        chunk = self._data[self._at : end]
        self._at = end
        return chunk
