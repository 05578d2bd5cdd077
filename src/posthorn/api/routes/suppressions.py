"""``/v1/suppressions``: the addresses this account does not send to."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.api.paging import Page, PerPage

router = APIRouter(prefix="/v1/suppressions", route_class=GuardedRoute, tags=["suppressions"])


class SuppressionIn(StrictModel):
    address: str = Field(max_length=320)
    reason: str = Field("manual", description="bounce, complaint, unsubscribe or manual")


class SuppressionOut(BaseModel):
    address: str
    reason: str
    scope: str | None
    detail: str | None
    email_id: str | None
    created_at: str


class SuppressionListOut(BaseModel):
    data: list[SuppressionOut]
    total: int
    page: int
    per_page: int


class SuppressionAddedOut(BaseModel):
    address: str
    reason: str
    created: bool


class DeletedOut(BaseModel):
    address: str
    deleted: bool


@router.get("", response_model=SuppressionListOut)
async def list_suppressions(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
    reason: str | None = None,
    search: Annotated[str | None, Query(max_length=320)] = None,
) -> dict[str, Any]:
    rows, total = await svc.suppressions.page(
        caller.account_id, page=page, per_page=per_page, reason=reason, search=search
    )
    return {
        "data": [
            {
                "address": r["address"],
                "reason": r["reason"],
                "scope": r["scope"] or None,
                "detail": r["detail"],
                "email_id": r["email_id"],
                "created_at": timestamp(r["created_at"]),
            }
            for r in rows
        ],
        "total": total,
        "page": page,
        "per_page": per_page,
    }


@router.post("", response_model=SuppressionAddedOut)
async def add_suppression(
    body: SuppressionIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    created = await svc.suppressions.add(caller, body.address, reason=body.reason)
    return {"address": body.address.strip().lower(), "reason": body.reason, "created": created}


@router.delete("/{address}", response_model=DeletedOut)
async def delete_suppression(
    address: str,
    svc: ServicesDep,
    caller: PrincipalDep,
    force: Annotated[
        bool,
        Query(description="Required to lift a complaint (the recipient reported spam)."),
    ] = False,
) -> dict[str, Any]:
    """Allow sending to the address again (every scope). Only a full_access key may (403
    otherwise); an address that complained answers 409 unless ``force=true``."""
    await svc.suppressions.remove(caller, address, force=force)
    return {"address": address.lower(), "deleted": True}
