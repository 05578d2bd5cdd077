"""``/v1/bulk-jobs``: one email per recipient, queued at the pace of ``BULK_RATE_PER_SECOND``.

Creating and cancelling need ``sending_access``; reading needs any key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute, message_body
from posthorn.api.paging import Page, PerPage
from posthorn.services.bulk import NewJob, NewRecipient

router = APIRouter(prefix="/v1/bulk-jobs", route_class=GuardedRoute, tags=["bulk jobs"])

RecipientStatus = Literal["pending", "queued", "skipped", "invalid", "failed", "cancelled"]


class RecipientIn(StrictModel):
    email: str
    variables: dict[str, Any] | None = None


class BulkJobIn(StrictModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str | None = Field(None, max_length=200)
    from_: str = Field(alias="from", description='"Name <email@domain.com>" or "email@domain.com"')
    subject: str | None = Field(None, description="May use {{ variables }}.")
    html: str | None = None
    text: str | None = None
    template_id: str | None = Field(
        None, description="A stored template: its subject and body replace the fields above."
    )
    recipients: list[RecipientIn | str] | None = Field(
        None, description="Addresses, or {email, variables}; at most 100,000."
    )
    list_id: str | None = Field(None, description="Send to a list's subscribed contacts instead.")
    track_opens: bool = False
    track_clicks: bool = False
    unsubscribe: bool | None = Field(
        None, description="Add List-Unsubscribe; by default on for a list, off otherwise."
    )
    scheduled_at: datetime | None = Field(None, description="Start then (≤ 30 days ahead).")


class TotalsOut(BaseModel):
    total: int
    processed: int
    pending: int
    queued: int
    skipped: int
    invalid: int
    failed: int
    cancelled: int


class BulkJobOut(BaseModel):
    id: str
    numeric_id: int | None
    name: str
    kind: str
    status: str
    list_id: str | None
    from_: str | None = Field(serialization_alias="from")
    subject: str | None
    totals: TotalsOut
    progress: float = Field(description="Percentage of recipients processed.")
    next_run_at: str | None
    created_at: str
    updated_at: str


class BulkJobPageOut(BaseModel):
    data: list[BulkJobOut]
    total: int
    page: int
    per_page: int


class RecipientOut(BaseModel):
    position: int
    email: str
    status: str
    error: str | None
    email_id: str | None


class RecipientPageOut(BaseModel):
    data: list[RecipientOut]
    total: int
    page: int
    per_page: int


def _job(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: row[k] for k in ("id", "numeric_id", "name", "kind", "status", "list_id")},
        "from_": row["from"],
        "subject": row["subject"],
        "totals": row["totals"],
        "progress": row["progress"],
        "next_run_at": timestamp(row["next_run_at"]),
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }


@router.post("", response_model=BulkJobOut, response_model_by_alias=True)
@message_body
async def create_job(body: BulkJobIn, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """Create a job for inline ``recipients`` or a ``list_id``; the bulk runner sends it."""
    recipients = [
        NewRecipient(email=r) if isinstance(r, str) else NewRecipient(r.email, r.variables)
        for r in body.recipients or ()
    ]
    job = NewJob(
        kind="list" if body.list_id else "bulk",
        name=body.name,
        from_=body.from_,
        subject=body.subject,
        html=body.html,
        text=body.text,
        template_id=body.template_id,
        recipients=recipients,
        list_id=body.list_id,
        track_opens=body.track_opens,
        track_clicks=body.track_clicks,
        unsubscribe=body.list_id is not None if body.unsubscribe is None else body.unsubscribe,
        scheduled_at=body.scheduled_at,
    )
    return _job(await svc.bulk.create(caller, job))


@router.get("", response_model=BulkJobPageOut, response_model_by_alias=True)
async def list_jobs(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    rows, total = await svc.bulk.page(caller.account_id, page=page, per_page=per_page)
    return {"data": [_job(r) for r in rows], "total": total, "page": page, "per_page": per_page}


@router.get("/{job_id}", response_model=BulkJobOut, response_model_by_alias=True)
async def get_job(job_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """Status, totals by recipient state, and progress."""
    return _job(await svc.bulk.get(caller.account_id, job_id))


@router.get("/{job_id}/recipients", response_model=RecipientPageOut)
async def list_recipients(
    job_id: str,
    svc: ServicesDep,
    caller: PrincipalDep,
    status: RecipientStatus | None = None,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    """What became of each recipient, in the order they were given."""
    rows, total = await svc.bulk.recipients(
        caller.account_id, job_id, status=status, page=page, per_page=per_page
    )
    data = [{k: r[k] for k in ("position", "email", "status", "error", "email_id")} for r in rows]
    return {"data": data, "total": total, "page": page, "per_page": per_page}


@router.post("/{job_id}/cancel", response_model=BulkJobOut, response_model_by_alias=True)
async def cancel_job(job_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """Stop a job: recipients not yet queued become ``cancelled``."""
    return _job(await svc.bulk.cancel(caller, job_id))
