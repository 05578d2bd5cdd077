"""VERP return paths: ``bounce+<token>@<bounce domain>`` names the delivery a bounce is about.

The token is the delivery id and a truncated HMAC-SHA256 of it under the server secret, in
lower-case base32 (local parts are often case-folded on the way back), so a bounce can only
be matched to a delivery we really sent, and tokens cannot be guessed or forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

PREFIX = "bounce+"
MAC_BYTES = 10  # 80 bits: forging one takes 2^80 guesses


def _mac(secret: str, delivery_id: int) -> bytes:
    key = hashlib.sha256(b"posthorn:verp:" + secret.encode()).digest()
    return hmac.new(key, str(delivery_id).encode(), hashlib.sha256).digest()[:MAC_BYTES]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def return_path(secret: str, delivery_id: int, bounce_domain: str) -> str:
    return f"{PREFIX}{delivery_id}.{_b32(_mac(secret, delivery_id))}@{bounce_domain}"


def delivery_id_from(secret: str, address: str, bounce_domain: str) -> int | None:
    """The delivery id in a VERP address of ours, or ``None`` for anything else."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    if domain.lower() != bounce_domain.lower() or not local.lower().startswith(PREFIX):
        return None
    number, _, token = local[len(PREFIX) :].partition(".")
    if not number.isdigit() or len(number) > 18:
        return None
    delivery_id = int(number)
    expected = _b32(_mac(secret, delivery_id))
    return delivery_id if hmac.compare_digest(expected, token.lower()) else None
