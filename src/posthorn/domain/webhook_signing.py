"""Webhook signatures as the Standard Webhooks specification defines them.

Standard Webhooks ("Signature scheme", v1): the signed content is
``{webhook-id}.{webhook-timestamp}.{body}``, signed with HMAC-SHA256 (RFC 2104) under the
secret's key, and sent as ``webhook-signature: v1,<base64 signature>``. Several signatures go
space-separated in the same header, which is how a secret is rotated without a gap: for a
while both the new and the previous secret sign. A secret is ``whsec_`` followed by the
base64 of the key bytes; the specification asks for 24 to 64 random bytes.

Pure: the caller brings the random bytes, the time and the body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 - the specification's prefix, not a secret
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
KEY_BYTES = 32
SIGNATURE_VERSION = "v1"


def format_secret(key: bytes) -> str:
    """The secret as shown to the account: ``whsec_`` + base64 of the key."""
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a webhook key has {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret: the base64-decoded part after the prefix."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def sign(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of a message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Sequence[str], *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    return " ".join(sign(s, msg_id=msg_id, timestamp=timestamp, body=body) for s in secrets)


def signed_headers(
    secrets: Sequence[str], *, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt. The id stays the same on every
    retry (receivers use it to drop duplicates); the timestamp is the attempt's own, since
    receivers refuse old timestamps to stop replays."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets, msg_id=msg_id, timestamp=timestamp, body=body
        ),
    }
