"""Per-recipient copies, made at send time from the email's one stored message.

With open or click tracking, or an unsubscribe URL, each recipient's message differs from
the others' in a few links and header fields. Intake stores the email's message once and,
with each delivery, only a :class:`CopyPlan` (tens of bytes); the worker makes the copy from
both just before it signs it (:func:`make_copy`). Tracking tokens carry no time or nonce, so
the links are the same whenever the copy is made. A message of a few megabytes to fifty
recipients is then stored once, not fifty times.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from posthorn.mime.tracking import add_unsubscribe, personalise_message
from posthorn.services.tracking import MAX_LIST_ID, tracking_for
from posthorn.settings import Settings


@dataclass(frozen=True, slots=True)
class CopyPlan:
    """How one recipient's copy differs from the email's message."""

    track_opens: bool = False
    track_clicks: bool = False
    unsubscribe: bool = False
    list_id: str | None = None  # the scope of the unsubscribe
    # False for a message its author composed (SMTP): only the unsubscribe fields change,
    # the bodies go as written.
    bodies: bool = True

    def __post_init__(self) -> None:
        if self.list_id is not None and not 0 < len(self.list_id) <= MAX_LIST_ID:
            raise ValueError(f"list id must be 1 to {MAX_LIST_ID} characters")

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> CopyPlan:
        return cls(**json.loads(text))


def make_copy(
    settings: Settings,
    plan: CopyPlan,
    *,
    account_id: str,
    email_id: str,
    recipient: str,
    message: bytes,
    html: str | None,
    text: str | None,
) -> bytes:
    """The recipient's message: ``message`` (the email's, with its ``html`` and ``text``)
    with this recipient's tracking links, open pixel and unsubscribe URL."""
    links = tracking_for(
        settings,
        account_id=account_id,
        email_id=email_id,
        recipient=recipient,
        track_opens=plan.track_opens,
        track_clicks=plan.track_clicks,
        unsubscribe=plan.unsubscribe,
        list_id=plan.list_id,
    )
    if not plan.bodies:
        return add_unsubscribe(message, links.unsubscribe) if links.unsubscribe else message
    return personalise_message(
        message,
        html=html,
        text=text,
        html_rewrite=links.html_rewrite,
        unsubscribe=links.unsubscribe,
    )
