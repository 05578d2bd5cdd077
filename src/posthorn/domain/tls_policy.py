"""How much TLS mail to a recipient domain must have: the per-destination policy table.

Modelled on Postfix's ``smtp_tls_policy_maps``. Keys are recipient domains, values levels:

``may``
    Opportunistic TLS (RFC 7435, RFC 3207): STARTTLS when offered, certificate not checked,
    and after a broken handshake one more try in plain text. The default.
``encrypt``
    STARTTLS is required; the certificate is not checked. Never plain text.
``verify``
    STARTTLS is required and the certificate must chain to a trusted CA and name the MX host
    (the reference identifier of RFC 7672 §3.2 and RFC 8461 §4.2). Never plain text.

A key ``bank.example`` matches that domain only; ``.bank.example`` matches every domain below
it (``eu.bank.example``) but not ``bank.example`` itself. An exact entry wins over a parent
one, and the nearest parent over a farther one.

Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

TlsLevel = Literal["may", "encrypt", "verify"]

DEFAULT_LEVEL: Final[TlsLevel] = "may"
# Weakest first; the levels that refuse plain text follow "may".
LEVELS: Final[tuple[TlsLevel, ...]] = ("may", "encrypt", "verify")


def parse_level(value: str) -> TlsLevel:
    """``value`` as a level (case and surrounding space ignored); ValueError otherwise."""
    text = value.strip().lower()
    for level in LEVELS:
        if text == level:
            return level
    raise ValueError(f"unknown TLS policy {value!r}; expected one of {', '.join(LEVELS)}")


def requires_tls(level: TlsLevel) -> bool:
    """Whether mail under ``level`` must never go in plain text."""
    return level != "may"


def normalise_table(table: Mapping[str, str]) -> dict[str, TlsLevel]:
    """The table with keys in lower case without a final dot and values checked.

    Raises ValueError for an empty key, a key with spaces or an unknown level: a typo in the
    policy must stop the start, not weaken the delivery.
    """
    normalised: dict[str, TlsLevel] = {}
    for key, value in table.items():
        name = _normalise(key)
        if name.strip(".") == "" or any(char.isspace() for char in name) or ".." in name:
            raise ValueError(f"invalid TLS policy domain {key!r}")
        if name in normalised:
            raise ValueError(f"TLS policy domain {key!r} is listed twice")
        try:
            normalised[name] = parse_level(value)
        except ValueError as exc:
            raise ValueError(f"TLS policy for {key!r}: {exc}") from exc
    return normalised


def policy_for(domain: str, table: Mapping[str, str]) -> TlsLevel:
    """The level for mail to ``domain``: its own entry, else the nearest ``.parent`` entry,
    else ``may``.

    ``table`` is best given through :func:`normalise_table` once; a value that is not a level
    raises ValueError.
    """
    name = _normalise(domain)
    exact = table.get(name)
    if exact is not None:
        return parse_level(exact)
    labels = name.split(".")
    for start in range(1, len(labels)):
        parent = table.get("." + ".".join(labels[start:]))
        if parent is not None:
            return parse_level(parent)
    return DEFAULT_LEVEL


def _normalise(name: str) -> str:
    return name.strip().lower().rstrip(".")
