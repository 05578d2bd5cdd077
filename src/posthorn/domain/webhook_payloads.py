"""What a webhook receives for an event: ``{"type", "created_at", "data"}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

EMAIL_EVENTS = (
    "queued",
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "rejected",
    "failed",
    "cancelled",
    "opened",
    "clicked",
    "unsubscribed",
    "complained",
)
OTHER_EVENTS = ("suppression.created", "suppression.deleted", "domain.verified")
WEBHOOK_EVENTS = tuple(f"email.{e}" for e in EMAIL_EVENTS) + OTHER_EVENTS


def webhook_type(event_type: str) -> str:
    """Our event ``delivered`` is the webhook event ``email.delivered``."""
    return event_type if "." in event_type else f"email.{event_type}"


def wanted(subscribed: Sequence[str], event_type: str) -> bool:
    """An endpoint with no event filter gets everything."""
    return not subscribed or webhook_type(event_type) in subscribed


def build_payload(
    *,
    event_type: str,
    created_at: datetime,
    email_id: str | None,
    recipient: str | None,
    tags: Any,
    metadata: Any,
    detail: Mapping[str, Any],
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if email_id:
        data["email_id"] = email_id
    if recipient:
        data["recipient"] = recipient
    if email_id:
        data["tags"] = tags or []
        data["metadata"] = metadata or {}
    data.update({k: v for k, v in detail.items() if k != "transcript"})
    return {
        "type": webhook_type(event_type),
        "created_at": created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
