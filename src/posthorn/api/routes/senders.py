"""``/v1/senders``: SMTP credentials on a verified domain."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.api.paging import Page, PerPage
from posthorn.errors import NotFound

router = APIRouter(prefix="/v1/senders", route_class=GuardedRoute, tags=["senders"])


class CreateSenderIn(StrictModel):
    account: str = Field(description="The sender address, e.g. noreply@yourdomain.com")
    domain: str = Field(description="Its verified domain, e.g. yourdomain.com")
    password: str = Field(description="The SMTP password, at least 8 characters")


class UpdateSenderIn(StrictModel):
    active: bool | None = None
    daily_limit: int | None = Field(None, ge=0)
    hourly_limit: int | None = Field(None, ge=0)
    password: str | None = None


class SenderOut(BaseModel):
    id: str
    account: str
    domain: str
    active: bool
    daily_limit: int
    hourly_limit: int
    created_at: str
    updated_at: str


class SenderListOut(BaseModel):
    data: list[SenderOut]
    total: int
    page: int
    per_page: int


class DeletedOut(BaseModel):
    id: str
    deleted: bool


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "account": row["address"],
        "domain": row["domain"],
        "active": bool(row["active"]),
        "daily_limit": row["daily_limit"],
        "hourly_limit": row["hourly_limit"],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }


def _id(sender_id: str) -> int:
    if not sender_id.isdigit() or len(sender_id) > 18:
        raise NotFound(resource="sender")
    return int(sender_id)


@router.post("", response_model=SenderOut)
async def create_sender(
    body: CreateSenderIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Create SMTP credentials for an address on a verified domain."""
    row = await svc.senders.create(
        caller, address=body.account, domain=body.domain, password=body.password
    )
    return _out(row)


@router.get("", response_model=SenderListOut)
async def list_senders(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
    search: Annotated[str | None, Query(max_length=320)] = None,
) -> dict[str, Any]:
    rows, total = await svc.senders.page(
        caller.account_id, page=page, per_page=per_page, search=search
    )
    return {"data": [_out(r) for r in rows], "total": total, "page": page, "per_page": per_page}


@router.get("/{sender_id}", response_model=SenderOut)
async def get_sender(sender_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    return _out(await svc.senders.get(caller.account_id, _id(sender_id)))


@router.patch("/{sender_id}", response_model=SenderOut)
async def update_sender(
    sender_id: str, body: UpdateSenderIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Activate or deactivate, change limits or the password."""
    changes = body.model_dump(exclude_unset=True)
    return _out(await svc.senders.update(caller, _id(sender_id), changes))


@router.delete("/{sender_id}", response_model=DeletedOut)
async def delete_sender(sender_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    await svc.senders.delete(caller, _id(sender_id))
    return {"id": sender_id, "deleted": True}
