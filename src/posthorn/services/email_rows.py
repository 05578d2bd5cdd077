"""What one email becomes in the database, and the checks of its fields that need no I/O.

:mod:`posthorn.services.intake` validates a request with these and turns it into the rows
(:class:`~posthorn.store.emails.NewEmail`) that admission commits: the email, one delivery
and one ``queued`` event per distinct recipient.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from posthorn.domain.addresses import Address, AddressError, format_address, parse_address
from posthorn.domain.statuses import Status
from posthorn.errors import InvalidRequest
from posthorn.store.emails import NewEmail

if TYPE_CHECKING:
    from posthorn.services.intake import SendRequest, Tag

MAX_SCHEDULE_AHEAD = timedelta(days=30)
MAX_METADATA_KEYS = 50
MAX_METADATA_BYTES = 4096
MAX_TAGS = 20
MAX_TAG_CHARS = 256


def check_address(field_name: str, text: str) -> Address:
    try:
        return parse_address(text)
    except AddressError as exc:
        raise InvalidRequest("invalid_address", field=field_name, value=text[:100]) from exc


def check_addresses(field_name: str, items: Sequence[str]) -> tuple[Address, ...]:
    return tuple(check_address(f"{field_name}[{i}]", item) for i, item in enumerate(items))


def check_schedule(when: datetime | None, now: datetime) -> datetime | None:
    """A time to send at, up to 30 days ahead; a time already past means now."""
    if when is None:
        return None
    if when.tzinfo is None:
        raise InvalidRequest("schedule_invalid", field="scheduled_at")
    if when - now > MAX_SCHEDULE_AHEAD:
        raise InvalidRequest("schedule_too_far", field="scheduled_at", days=30)
    return when if when > now else None


def check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is None:
        return
    size = len(json.dumps(metadata, default=str))
    if len(metadata) > MAX_METADATA_KEYS or size > MAX_METADATA_BYTES:
        raise InvalidRequest("metadata_too_large", field="metadata", limit=MAX_METADATA_BYTES)


def request_hash(request: SendRequest) -> str:
    """A fingerprint of what was asked, to tell a retried request from a different one."""
    shape = {
        "from": request.from_,
        "to": list(request.to),
        "cc": list(request.cc),
        "bcc": list(request.bcc),
        "reply_to": request.reply_to,
        "subject": request.subject,
        "html": request.html,
        "text": request.text,
        "headers": request.headers,
        "tags": [(t.name, t.value) for t in request.tags],
        "attachments": [
            (a.filename, a.content_type, hashlib.sha256(a.content).hexdigest())
            for a in request.attachments
        ],
        "scheduled_at": request.scheduled_at.isoformat() if request.scheduled_at else None,
        "metadata": request.metadata,
        "template": [request.template_id, request.template_data],
        "tracking": [request.track_opens, request.track_clicks, request.unsubscribe],
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


def check_tags(tags: Sequence[Tag]) -> list[dict[str, str]]:
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(field="tags")
    for index, tag in enumerate(tags):
        if not tag.name or len(tag.name) > MAX_TAG_CHARS or len(tag.value) > MAX_TAG_CHARS:
            raise InvalidRequest(field=f"tags[{index}]")
    return [{"name": t.name, "value": t.value} for t in tags]


def email_rows(
    *,
    email_id: str,
    message_id: str,
    request: SendRequest,
    sender: Address,
    recipients: dict[str, tuple[Address, ...]],
    reply_to: Address | None,
    tags: list[dict[str, str]],
    raw: bytes,
    now: datetime,
    scheduled_at: datetime | None = None,
    personal: str | None = None,
) -> NewEmail:
    """``personal``: the copy plan of every recipient (services/personal_copies.py), or None
    when they all get the email's message."""
    status = Status.SCHEDULED if scheduled_at else Status.QUEUED
    email: dict[str, Any] = {
        "id": email_id,
        "account_id": request.account_id,
        "api_key_id": request.api_key_id,
        "source": request.source,
        "message_id": message_id,
        "from_header": format_address(sender),
        "from_email": sender.email,
        "to_addrs": [a.email for a in recipients["to"]],
        "cc_addrs": [a.email for a in recipients["cc"]],
        "bcc_addrs": [a.email for a in recipients["bcc"]],
        "reply_to": format_address(reply_to) if reply_to else None,
        "subject": request.subject,
        "html": request.html,
        "text": request.text,
        "headers": dict(request.headers),
        "tags": tags,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": len(a.content)}
            for a in request.attachments
        ],
        "status": str(status),
        "size": len(raw),
        "raw": raw,
        "scheduled_at": scheduled_at,
        "metadata": request.metadata,
        "track_opens": int(bool(request.track_opens)),
        "track_clicks": int(bool(request.track_clicks)),
        "template_id": request.template_id or request.rendered_from,
        "created_at": now,
        "updated_at": now,
    }
    deliveries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    seen: set[str] = set()
    for kind, addresses in recipients.items():
        for address in addresses:
            key = address.email.lower()
            if key in seen:  # one copy per mailbox, however often it was listed
                continue
            seen.add(key)
            deliveries.append(
                {
                    "email_id": email_id,
                    "account_id": request.account_id,
                    "recipient": address.email,
                    "kind": kind,
                    "status": str(status),
                    "attempts": 0,
                    "next_attempt_at": scheduled_at or now,
                    "personal": personal,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            events.append(
                {
                    "account_id": request.account_id,
                    "email_id": email_id,
                    "type": "queued",
                    "recipient": address.email,
                    "sender": sender.email,
                    "source": request.source,
                    "data": {"source": request.source}
                    | ({"scheduled_at": scheduled_at.isoformat()} if scheduled_at else {}),
                    "created_at": now,
                }
            )
    return NewEmail(email=email, deliveries=deliveries, events=events)
