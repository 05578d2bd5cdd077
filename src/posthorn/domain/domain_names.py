"""Which names can be registered as sending domains."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

MAX_NAME = 253  # RFC 1035 §2.3.4, in its textual form
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list ships inside the package: no network


def normalise_domain(text: str) -> str:
    """The A-label, lower-case form of a domain; raises ``ValueError`` with the reason."""
    name = text.strip().rstrip(".").lower()
    if not name:
        raise ValueError("empty")
    if len(name) > MAX_NAME:
        raise ValueError("longer than 253 characters")
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        raise ValueError("an IP address is not a domain")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError("not a valid internationalised name") from exc
    labels = name.split(".")
    if len(labels) < 2:
        raise ValueError("a domain needs at least two labels")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError("labels are letters, digits and inner hyphens, at most 63 each")
    if labels[-1].isdigit():
        raise ValueError("the top-level label cannot be numeric")
    if _suffixes().is_public(name):
        raise ValueError("a public suffix cannot be registered on its own")
    return name
