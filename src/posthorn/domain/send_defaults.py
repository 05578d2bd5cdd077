"""Tracking and unsubscribe switches: what the request said, else what its From domain says.

A request may say ``track_opens`` / ``track_clicks`` true or false, or leave them unsaid
(``None``); unsaid, the From domain's default decides (both off unless the domain turns them
on, as in Resend). ``unsubscribe`` unsaid is off, but a domain that forces the one-click
unsubscribe gets it on every email, whatever the request said: a sender that has promised
List-Unsubscribe (RFC 8058) on all its mail cannot have one send leave it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DomainSendDefaults:
    track_opens: bool = False
    track_clicks: bool = False
    force_unsubscribe: bool = False

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> DomainSendDefaults:
        """From a domain row (0/1 columns); no row means the defaults of no domain: all off."""
        if row is None:
            return cls()
        return cls(
            track_opens=bool(row.get("track_opens")),
            track_clicks=bool(row.get("track_clicks")),
            force_unsubscribe=bool(row.get("force_unsubscribe")),
        )


@dataclass(frozen=True, slots=True)
class SendSwitches:
    track_opens: bool
    track_clicks: bool
    unsubscribe: bool


def resolve(
    domain: DomainSendDefaults,
    *,
    track_opens: bool | None,
    track_clicks: bool | None,
    unsubscribe: bool | None,
) -> SendSwitches:
    """The switches one email is sent with. An explicit value wins for tracking; for the
    unsubscribe, a domain that forces it wins over an explicit ``False``."""
    return SendSwitches(
        track_opens=domain.track_opens if track_opens is None else track_opens,
        track_clicks=domain.track_clicks if track_clicks is None else track_clicks,
        unsubscribe=domain.force_unsubscribe or bool(unsubscribe),
    )
