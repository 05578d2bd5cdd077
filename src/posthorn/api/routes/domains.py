"""``/v1/domains``: register, list, inspect (live DNS state), verify, quota, rotate, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, StrictBool, field_validator

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.api.paging import Page, PerPage
from posthorn.services.domains import DomainView

router = APIRouter(prefix="/v1/domains", route_class=GuardedRoute, tags=["domains"])


class CreateDomainIn(StrictModel):
    domain: str = Field(description="e.g. yourdomain.com", max_length=300)


class UpdateDomainIn(StrictModel):
    daily_limit: int | None = Field(None, ge=0)
    hourly_limit: int | None = Field(None, ge=0)
    monthly_limit: int | None = Field(None, ge=0)
    plan: str | None = None
    ed25519: bool | None = Field(None, description="Also sign with ed25519-sha256 (RFC 8463).")
    track_opens: StrictBool | None = Field(
        None, description="Track opens of emails whose request does not say (default false)."
    )
    track_clicks: StrictBool | None = Field(
        None, description="Track clicks in emails whose request does not say (default false)."
    )
    force_unsubscribe: StrictBool | None = Field(
        None,
        description="Give every email from this domain the one-click unsubscribe "
        "(List-Unsubscribe, RFC 8058, and {{ unsubscribe_url }}), whatever its request said.",
    )

    @field_validator("track_opens", "track_clicks", "force_unsubscribe")
    @classmethod
    def _true_or_false(cls, value: bool | None) -> bool:
        # true or false only (1 or "true" fail as not strict booleans); left out, the setting
        # stays as it is, but null has no meaning here.
        if value is None:
            raise ValueError("must be true or false")
        return value


VERIFIED_ELSEWHERE = (
    "true while another account has verified this name: this claim cannot be verified (409) "
    "until that account's records leave the DNS"
)


class DomainOut(BaseModel):
    id: str
    domain: str
    status: str
    verified_elsewhere: bool = Field(description=VERIFIED_ELSEWHERE)
    dns_records: list[dict[str, Any]] = Field(
        description="type, name, value, purpose, priority (MX); verified and found after a check"
    )
    created_at: str
    verified_at: str | None
    daily_limit: int | None
    hourly_limit: int | None
    monthly_limit: int | None
    plan: str | None
    ed25519: bool
    track_opens: bool = Field(description="Default for sends that do not say track_opens.")
    track_clicks: bool = Field(description="Default for sends that do not say track_clicks.")
    force_unsubscribe: bool = Field(description="Every email gets the one-click unsubscribe.")


class DomainSummaryOut(BaseModel):
    id: str
    domain: str
    status: str
    verified_elsewhere: bool = Field(description=VERIFIED_ELSEWHERE)
    created_at: str


class DomainListOut(BaseModel):
    data: list[DomainSummaryOut]
    total: int
    total_verified: int
    page: int
    per_page: int


class QuotaOut(BaseModel):
    domain: str
    daily_limit: int
    daily_used: int
    daily_remaining: int
    hourly_limit: int
    hourly_used: int
    hourly_remaining: int
    monthly_limit: int
    monthly_used: int
    monthly_remaining: int
    pack_code: str
    pack_name: str


class DeletedOut(BaseModel):
    id: str
    deleted: bool


def _out(view: DomainView) -> dict[str, Any]:
    row = view.row
    return {
        "id": row["id"],
        "domain": row["name"],
        "status": row["status"],
        "verified_elsewhere": bool(row.get("verified_elsewhere")),
        "dns_records": view.records,
        "created_at": timestamp(row["created_at"]),
        "verified_at": timestamp(row["verified_at"]),
        "daily_limit": row.get("daily_limit"),
        "hourly_limit": row.get("hourly_limit"),
        "monthly_limit": row.get("monthly_limit"),
        "plan": row.get("plan"),
        "ed25519": bool(row.get("ed25519")),
        "track_opens": bool(row.get("track_opens")),
        "track_clicks": bool(row.get("track_clicks")),
        "force_unsubscribe": bool(row.get("force_unsubscribe")),
    }


@router.get("", response_model=DomainListOut)
async def list_domains(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
    search: Annotated[str | None, Query(max_length=253)] = None,
) -> dict[str, Any]:
    rows, total, verified = await svc.domains.page(
        caller.account_id, page=page, per_page=per_page, search=search
    )
    return {
        "data": [
            {
                "id": r["id"],
                "domain": r["name"],
                "status": r["status"],
                "verified_elsewhere": bool(r["verified_elsewhere"]),
                "created_at": timestamp(r["created_at"]),
            }
            for r in rows
        ],
        "total": total,
        "total_verified": verified,
        "page": page,
        "per_page": per_page,
    }


@router.post("", response_model=DomainOut)
async def create_domain(
    body: CreateDomainIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Claim a sending domain; publish the returned DNS records, then verify. Several
    accounts may claim a name; the first to verify it owns it. 409 when this account has
    already claimed it or another account has verified it."""
    return _out(await svc.domains.create(caller, body.domain))


@router.get("/{domain_id}", response_model=DomainOut)
async def get_domain(domain_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """The domain with the live DNS state of every record."""
    return _out(await svc.domains.get(caller.account_id, domain_id))


@router.patch("/{domain_id}", response_model=DomainOut)
async def update_domain(
    domain_id: str, body: UpdateDomainIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Quota overrides (null returns to the plan's limit), plan, Ed25519 signing, and the send
    defaults: track_opens, track_clicks, force_unsubscribe."""
    changes = body.model_dump(exclude_unset=True)
    return _out(await svc.domains.update(caller, domain_id, changes))


@router.post("/{domain_id}/verify", response_model=DomainOut)
async def verify_domain(domain_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """Look the records up; the domain is verified when SPF, MX and DKIM all match. 409 while
    another account has verified the name (see verified_elsewhere)."""
    return _out(await svc.domains.verify(caller, domain_id))


@router.post("/{domain_id}/dkim/rotate", response_model=DomainOut)
async def rotate_dkim(domain_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """Start a DKIM key rotation: publish the new (pending) record, then verify."""
    return _out(await svc.domains.rotate_dkim(caller, domain_id))


@router.get("/{domain_id}/quota", response_model=QuotaOut)
async def domain_quota(domain_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    return await svc.domains.quota(caller.account_id, domain_id)


@router.delete("/{domain_id}", response_model=DeletedOut)
async def delete_domain(domain_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """Delete the domain with its DKIM keys and senders; sent emails stay."""
    await svc.domains.delete(caller, domain_id)
    return {"id": domain_id, "deleted": True}
