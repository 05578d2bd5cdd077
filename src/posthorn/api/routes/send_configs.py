"""``/v1/send-configs``: BillionMail "APIs" — a template, subject, sender, IP allowlist and
tracking switches bound to a ``bmk_`` key (shown once) — and their sending statistics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep, requires
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.api.paging import Page, PerPage
from posthorn.api.routes.emails import time_filter
from posthorn.api.routes.stats import StatsOut
from posthorn.domain.permissions import Permission
from posthorn.services.accounts import Principal
from posthorn.services.send_configs import CreatedConfig
from posthorn.store.send_configs import SendConfigRow

router = APIRouter(prefix="/v1/send-configs", route_class=GuardedRoute, tags=["send-configs"])

FullAccess = Annotated[Principal, requires(Permission.FULL_ACCESS)]

CLEARABLE = ("subject", "addresser", "ip_allowlist")  # null clears these; others ignore null
SUBJECT = "Overrides the template's subject; Jinja2, rendered with the request's attribs"


class CreateConfigIn(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    template_id: str = Field(min_length=1, max_length=40)
    subject: str | None = Field(None, description=SUBJECT)
    addresser: str | None = Field(
        None, max_length=320, description="Default sender; else the account's default sender"
    )
    ip_allowlist: list[str] | None = Field(
        None, description="IPs or CIDRs allowed to use the key; none = any"
    )
    track_opens: bool = True
    track_clicks: bool = True
    unsubscribe: bool = Field(False, description="Add an unsubscribe link and List-Unsubscribe")


class UpdateConfigIn(StrictModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    template_id: str | None = Field(None, min_length=1, max_length=40)
    subject: str | None = Field(None, description=SUBJECT + "; null clears it")
    addresser: str | None = Field(None, max_length=320, description="null clears it")
    ip_allowlist: list[str] | None = Field(None, description="null or [] allows any address")
    track_opens: bool | None = None
    track_clicks: bool | None = None
    unsubscribe: bool | None = None


class ConfigOut(BaseModel):
    id: str
    name: str
    key: str = Field(description="Masked, except in the answer that creates it")
    template_id: str | None
    subject: str | None
    addresser: str | None
    ip_allowlist: list[str] | None
    track_opens: bool
    track_clicks: bool
    unsubscribe: bool
    created_at: str
    updated_at: str


class ConfigListOut(BaseModel):
    data: list[ConfigOut]
    total: int
    page: int
    per_page: int


class DeletedOut(BaseModel):
    id: str
    deleted: bool


class ConfigStatsOut(StatsOut):
    send_config_id: str


def _out(row: SendConfigRow, key: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "key": key or row.display,
        "template_id": row.template_id,
        "subject": row.subject,
        "addresser": row.addresser,
        "ip_allowlist": row.ip_allowlist,
        "track_opens": row.track_opens,
        "track_clicks": row.track_clicks,
        "unsubscribe": row.unsubscribe,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }


def _created(created: CreatedConfig) -> dict[str, Any]:
    return _out(created.row, created.key)


@router.post("", response_model=ConfigOut)
async def create_config(
    body: CreateConfigIn, svc: ServicesDep, caller: FullAccess
) -> dict[str, Any]:
    """Create a send configuration. The full key is in this answer only: store it safely."""
    return _created(await svc.send_configs.create(caller, body.model_dump()))


@router.get("", response_model=ConfigListOut)
async def list_configs(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    """The account's send configurations, newest first; keys masked."""
    rows, total = await svc.send_configs.page(caller.account_id, page=page, per_page=per_page)
    return {"data": [_out(r) for r in rows], "total": total, "page": page, "per_page": per_page}


@router.get("/{config_id}", response_model=ConfigOut)
async def get_config(config_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    return _out(await svc.send_configs.get(caller.account_id, config_id))


@router.patch("/{config_id}", response_model=ConfigOut)
async def update_config(
    config_id: str, body: UpdateConfigIn, svc: ServicesDep, caller: FullAccess
) -> dict[str, Any]:
    """Change some fields; the key stays the same."""
    changes = {
        name: value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None or name in CLEARABLE
    }
    return _out(await svc.send_configs.update(caller, config_id, changes))


@router.delete("/{config_id}", response_model=DeletedOut)
async def delete_config(config_id: str, svc: ServicesDep, caller: FullAccess) -> dict[str, Any]:
    """Delete a configuration: its key fails from the next request on."""
    await svc.send_configs.delete(caller, config_id)
    return {"id": config_id, "deleted": True}


@router.post("/{config_id}/rotate-key", response_model=ConfigOut)
async def rotate_key(config_id: str, svc: ServicesDep, caller: FullAccess) -> dict[str, Any]:
    """Replace the key; the old one fails at once. The new key is in this answer only."""
    return _created(await svc.send_configs.rotate_key(caller, config_id))


@router.get("/{config_id}/stats", response_model=ConfigStatsOut, response_model_by_alias=True)
async def config_stats(
    config_id: str,
    svc: ServicesDep,
    caller: PrincipalDep,
    from_: Annotated[
        str | None,
        Query(alias="from", description="ISO-8601, inclusive; default: 7 days before `to`"),
    ] = None,
    to: Annotated[str | None, Query(description="ISO-8601, exclusive; default: now")] = None,
    interval: Annotated[str, Query(description="hour or day")] = "day",
) -> dict[str, Any]:
    """Sent, delivered, opened, clicked, bounced and unsubscribed counts and rates for the
    emails sent through this configuration (as ``/v1/stats`` with its tag)."""
    report = await svc.send_configs.stats(
        caller.account_id,
        config_id,
        start=time_filter("from", from_),
        end=time_filter("to", to),
        interval=interval,
    )
    return {
        "send_config_id": config_id,
        "from": timestamp(report.start),
        "to": timestamp(report.end),
        "interval": report.interval,
        "domain": report.domain,
        "tag": report.tag,
        "totals": report.totals,
        "rates": report.rates,
        "series": [
            {"start": timestamp(b.start), **b.counts, "rates": b.rates} for b in report.series
        ],
    }
