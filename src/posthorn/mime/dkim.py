"""DKIM signatures (RFC 6376) with RSA-SHA256 and Ed25519-SHA256 (RFC 8463), bytes in and out.

Every signature uses ``relaxed/relaxed`` canonicalisation (see :mod:`posthorn.mime.dkim_canon`)
and covers the whole body. The private keys are parsed once and kept, so signing costs one
public-key operation and two SHA-256 passes per key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from posthorn.mime.dkim_canon import (
    DkimError,
    HeaderField,
    normalize_line_endings,
    relaxed_body,
    relaxed_header,
    split_message,
)

__all__ = [
    "SIGNED_HEADERS",
    "Algorithm",
    "DkimError",
    "DkimKey",
    "dns_record_value",
    "generate_ed25519_key",
    "generate_rsa_key",
    "sign",
]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

# The fields a recipient shows or acts on (RFC 6376 §5.4.1 lists the recommended set). The
# List-Unsubscribe pair is signed because RFC 8058 §4 requires it for one-click unsubscribe.
SIGNED_HEADERS = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
_SIGNED_KEYS = tuple((name, name.lower().encode("ascii")) for name in SIGNED_HEADERS)
# Listing From once more than it occurs signs its absence: a relay cannot add a second From
# that some readers would display instead (RFC 6376 §5.4.2 and §8.15).
_OVERSIGNED = "From"

_FIELD_NAME = "DKIM-Signature"
# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters, CRLF excluded.
_MAX_LINE = 78
# RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits (and SHOULD use 2048).
_MIN_RSA_BITS = 1024
# d= is a domain name and s= a dot-separated list of sub-domains (RFC 6376 §3.5 and §3.1, in
# the RFC 5321 §4.1.2 grammar): letters, digits and inner hyphens, A-labels for IDNs.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
_KEY_TYPES: dict[Algorithm, str] = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}

_PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A signing identity: the key published at ``<selector>._domainkey.<domain>``."""

    domain: str  # d=
    selector: str  # s=
    private_key_pem: bytes = field(repr=False)  # PKCS#8 PEM, RSA or Ed25519
    algorithm: Algorithm

    def __post_init__(self) -> None:
        if self.algorithm not in _KEY_TYPES:
            raise DkimError(f"unknown DKIM algorithm {self.algorithm!r}")
        for tag, value in (("d", self.domain), ("s", self.selector)):
            if not _DOMAIN.fullmatch(value):
                raise DkimError(f"{tag}={value!r} is not an ASCII domain name")

    def check(self) -> None:
        """Raise :class:`DkimError` unless the PEM holds a usable key of ``algorithm``.

        Signing does the same check on first use; this lets a caller refuse a key when it is
        stored rather than when the first message goes out.
        """
        _load_private_key(self.private_key_pem, self.algorithm)


def sign(message: bytes, keys: Sequence[DkimKey], *, timestamp: int | None = None) -> bytes:
    """Return ``message`` with one DKIM-Signature field per key prepended, in ``keys`` order.

    ``h=`` names the :data:`SIGNED_HEADERS` present, each once per instance, plus one extra
    From. Bare LFs become CRLF and a final CRLF is added, since that is what SMTP transmits.
    ``timestamp`` (seconds since the epoch) becomes ``t=``. Raises :class:`DkimError` for a
    message without a From field or with a malformed header, and for an unusable key.
    """
    message = normalize_line_endings(message)
    if not keys:
        return message
    if timestamp is not None and timestamp < 0:
        raise ValueError("timestamp must not be negative")
    fields, body = split_message(message)
    names, header_data = _select_headers(fields)
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode("ascii")
    signatures = [
        _signature_field(
            key, names=names, header_data=header_data, body_hash=body_hash, timestamp=timestamp
        )
        for key in keys
    ]
    return b"".join(signatures) + message


def generate_rsa_key(bits: int = 2048) -> tuple[bytes, str]:
    """A new RSA key: (PKCS#8 PEM private key, base64 DER SubjectPublicKeyInfo for ``p=``).

    The SubjectPublicKeyInfo form is what ``openssl rsa -pubout`` writes and what every
    verifier reads (RFC 6376 §3.6.1). At 2048 bits ``p=`` is 392 characters, more than one
    255-octet TXT string, so the DNS record must be split into several strings.
    """
    if bits < _MIN_RSA_BITS:
        raise ValueError(f"RSA keys must have at least {_MIN_RSA_BITS} bits (RFC 8301 §3.2)")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _private_pem(key), base64.b64encode(public).decode("ascii")


def generate_ed25519_key() -> tuple[bytes, str]:
    """A new Ed25519 key: (PKCS#8 PEM private key, base64 of the raw 32-byte public key).

    RFC 8463 §4.2: ``p=`` is the bare key, not wrapped in ASN.1 as RSA keys are.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return _private_pem(key), base64.b64encode(public).decode("ascii")


def dns_record_value(algorithm: Algorithm, public_b64: str) -> str:
    """The TXT record text for ``<selector>._domainkey.<domain>`` (RFC 6376 §3.6.1)."""
    if algorithm not in _KEY_TYPES:
        raise DkimError(f"unknown DKIM algorithm {algorithm!r}")
    try:
        base64.b64decode(public_b64, validate=True)
    except binascii.Error as exc:
        raise DkimError("the public key is not base64") from exc
    return f"v=DKIM1; k={_KEY_TYPES[algorithm]}; p={public_b64}"


def _select_headers(fields: Sequence[HeaderField]) -> tuple[list[str], bytes]:
    """The ``h=`` names and the canonicalised fields they select, in hashing order."""
    by_key: dict[bytes, list[HeaderField]] = {}
    for header in fields:
        by_key.setdefault(header.key, []).append(header)
    if b"from" not in by_key:
        # RFC 6376 §5.4: the From field MUST be signed.
        raise DkimError("the message has no From field to sign")
    names: list[str] = []
    data: list[bytes] = []
    for name, key in _SIGNED_KEYS:
        # RFC 6376 §5.4.2: each repetition of a name in h= selects the next instance from the
        # bottom, so listing a name once per instance signs them all, last first.
        for header in reversed(by_key.get(key, ())):
            names.append(name)
            data.append(relaxed_header(header.name, header.value))
    names.append(_OVERSIGNED)
    return names, b"".join(data)


def _signature_field(
    key: DkimKey, *, names: Sequence[str], header_data: bytes, body_hash: str, timestamp: int | None
) -> bytes:
    """One complete DKIM-Signature field, folded, ending in CRLF."""
    private_key = _load_private_key(key.private_key_pem, key.algorithm)
    tags = ["v=1;", f"a={key.algorithm};", "c=relaxed/relaxed;", f"d={key.domain};"]
    tags.append(f"s={key.selector};")
    if timestamp is not None:
        tags.append(f"t={timestamp};")
    lines = [_FIELD_NAME + ":"]
    for tag in tags:
        _append(lines, tag, separator=" ")
    # RFC 6376 §3.5: FWS may surround each ":" in h=, so the list can fold between names.
    _append(lines, f"h={names[0]}:", separator=" ")
    for name in names[1:-1]:
        _append(lines, f"{name}:", separator="")
    _append(lines, f"{names[-1]};", separator="")
    _append(lines, f"bh={body_hash};", separator=" ")
    _append(lines, "b=", separator=" ")
    # RFC 6376 §3.7: the field itself is hashed last, with an empty b= and no final CRLF.
    unsigned = "\r\n".join(lines).encode("ascii")
    field_name, _, field_value = unsigned.partition(b":")
    data = header_data + relaxed_header(field_name, field_value)[:-2]
    signature = base64.b64encode(_signature(private_key, data)).decode("ascii")
    # Base64 may be folded anywhere (RFC 6376 §2.10 base64string). b= comes last, so the part
    # already hashed keeps exactly the folding it was hashed with.
    room = max(_MAX_LINE - len(lines[-1]), 0)
    lines[-1] += signature[:room]
    step = _MAX_LINE - 1
    lines.extend(" " + signature[i : i + step] for i in range(room, len(signature), step))
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _append(lines: list[str], text: str, *, separator: str) -> None:
    """Add ``text`` to the last line, or start a new one if it would pass 78 characters."""
    if len(lines[-1]) + len(separator) + len(text) <= _MAX_LINE:
        lines[-1] += separator + text
    else:
        # RFC 5322 §2.2.3: folding is a CRLF followed by white space.
        lines.append(" " + text)


def _signature(private_key: _PrivateKey, data: bytes) -> bytes:
    """Sign the SHA-256 hash of the canonicalised header data (RFC 6376 §3.7)."""
    digest = hashlib.sha256(data).digest()
    if isinstance(private_key, rsa.RSAPrivateKey):
        # RFC 6376 §3.3.2: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2).
        return private_key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    # RFC 8463 §3: PureEdDSA over the SHA-256 hash, not over the data itself.
    return private_key.sign(digest)


@functools.lru_cache(maxsize=256)
def _load_private_key(pem: bytes, algorithm: Algorithm) -> _PrivateKey:
    """Parse a PEM key once per (PEM, algorithm) and keep it for every later signature."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise DkimError("the DKIM private key is not an unencrypted PEM key") from exc
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimError("an rsa-sha256 DKIM key must be an RSA key")
        if key.key_size < _MIN_RSA_BITS:
            raise DkimError(f"RSA keys must have at least {_MIN_RSA_BITS} bits (RFC 8301 §3.2)")
        return key
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimError("an ed25519-sha256 DKIM key must be an Ed25519 key")
    return key


def _private_pem(key: _PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
