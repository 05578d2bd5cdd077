"""Which custom headers a client may add to a message, and how they must look.

Headers that define the message's identity, routing or structure belong to Posthorn: letting a
client set them would let it spoof the sender, break the MIME structure or forge a signature.
"""

from __future__ import annotations

import re

FORBIDDEN = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "dkim-signature",
        "return-path",
        "received",
        "mime-version",
        "sender",
        "reply-to",
    }
)
FORBIDDEN_PREFIXES = ("content-",)

# RFC 5322 §2.2: a field name is printable US-ASCII except colon.
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")
MAX_VALUE_LENGTH = 2000


def check_header(name: str, value: str) -> str | None:
    """``None`` when the header is acceptable, else the reason code (forbidden or invalid)."""
    if not _FIELD_NAME.match(name) or _BAD_VALUE_CHARS.search(value):
        return "header_invalid"
    if len(value) > MAX_VALUE_LENGTH:
        return "header_invalid"
    lowered = name.lower()
    if lowered in FORBIDDEN or lowered.startswith(FORBIDDEN_PREFIXES):
        return "header_forbidden"
    return None
