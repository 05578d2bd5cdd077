"""``/v1/logs``: the delivery log of every domain of the account."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from posthorn.api.deps import PrincipalDep, ServicesDep
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.api.paging import Page, PerPage
from posthorn.api.routes.emails import StatOut, time_filter
from posthorn.domain.statuses import label

router = APIRouter(prefix="/v1/logs", route_class=GuardedRoute, tags=["logs"])

EVENT_LABELS = {"queued": "Queued", "sent": "Sent", "failed": "Failed"}


def event_label(event_type: str) -> str:
    return EVENT_LABELS.get(event_type) or label(event_type)


class LogOut(BaseModel):
    message_id: str
    action: str
    sender: str | None
    recipient: str | None
    timestamp: str
    source: str | None


class LogListOut(BaseModel):
    logs: list[LogOut]
    total: int
    page: int
    per_page: int
    stats: list[StatOut]


@router.get("", response_model=LogListOut)
async def list_logs(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
    log_after: str | None = None,
    log_before: str | None = None,
    action: Annotated[
        str | None, Query(description="delivered, deferred, rejected, bounced, sender, queue")
    ] = None,
    sender: str | None = None,
    recipient: str | None = None,
    message_id: str | None = None,
    source: Annotated[str | None, Query(description="api, smtp (comma list)")] = None,
    sorts: Annotated[str | None, Query(description="e.g. -timestamp (default), recipient")] = None,
) -> dict[str, Any]:
    result = await svc.logs.page(
        caller.account_id,
        page=page,
        per_page=per_page,
        action=action,
        after=time_filter("log_after", log_after),
        before=time_filter("log_before", log_before),
        sender=sender,
        recipient=recipient,
        email_id=message_id,
        source=source,
        sorts=sorts,
    )
    total = sum(result.stats.values())
    ordered = sorted(result.stats.items(), key=lambda item: (-item[1], item[0]))
    return {
        "logs": [
            {
                "message_id": e["email_id"],
                "action": event_label(e["type"]),
                "sender": e["sender"],
                "recipient": e["recipient"],
                "timestamp": timestamp(e["created_at"]),
                "source": (e["source"] or "").upper() or None,
            }
            for e in result.entries
        ],
        "total": result.total,
        "page": page,
        "per_page": per_page,
        "stats": [
            {
                "label": event_label(t),
                "count": n,
                "percentage": round(100 * n / total, 1) if total else 0.0,
            }
            for t, n in ordered
        ],
    }
