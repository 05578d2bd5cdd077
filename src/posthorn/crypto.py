"""Sealing secrets at rest (DKIM private keys, relay passwords) with the server secret.

A sealed token is ``"v1:" + base64url(nonce || ciphertext || tag)`` without padding, where the
ciphertext is AES-256-GCM (NIST SP 800-38D) under a key derived from the server secret with
HKDF-SHA256 (RFC 5869). The ``purpose`` goes into both the HKDF ``info`` and the GCM
associated data, so a token sealed for one use cannot be unsealed, or swapped in, for another.
Pure: no I/O beyond the operating system's random numbers for the nonce.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["SealError", "seal", "unseal"]

_VERSION = "v1:"
# NIST SP 800-38D §8.2.2: 96-bit random nonces are safe for up to 2^32 messages per key,
# far beyond the number of secrets one server ever seals.
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_BYTES = 32


class SealError(ValueError):
    """A token that cannot be unsealed: wrong secret, wrong purpose, damaged or not a token."""


def seal(secret_key: str, plaintext: bytes, *, purpose: str) -> str:
    """Encrypt and authenticate ``plaintext`` for storage; a fresh nonce every call."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _cipher(secret_key, purpose).encrypt(nonce, plaintext, _context(purpose))
    return _VERSION + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")


def unseal(secret_key: str, token: str, *, purpose: str) -> bytes:
    """The plaintext of a :func:`seal` token; :class:`SealError` if it does not check out."""
    if not token.startswith(_VERSION):
        raise SealError("not a sealed token (or an unknown version)")
    encoded = token[len(_VERSION) :]
    try:
        padded = encoded + "=" * (-len(encoded) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SealError("the sealed token is not base64url") from exc
    if len(raw) < _NONCE_BYTES + _TAG_BYTES:
        raise SealError("the sealed token is too short")
    nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    try:
        return _cipher(secret_key, purpose).decrypt(nonce, sealed, _context(purpose))
    except InvalidTag as exc:
        raise SealError("wrong secret or purpose, or the token was altered") from exc


def _context(purpose: str) -> bytes:
    return b"posthorn:" + purpose.encode("utf-8")


@functools.lru_cache(maxsize=16)
def _cipher(secret_key: str, purpose: str) -> AESGCM:
    """The AES-256-GCM key for one purpose, derived once per (secret, purpose)."""
    if not secret_key:
        raise ValueError("the server secret is empty")
    # No salt (optional, RFC 5869 §3.1): the server secret is the only per-installation input,
    # and ``info`` already separates the keys of different purposes (RFC 5869 §3.2).
    key = HKDF(
        algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=_context(purpose)
    ).derive(secret_key.encode("utf-8"))
    return AESGCM(key)
