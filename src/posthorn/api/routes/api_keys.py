"""``/v1/api-keys``: create (the key is shown once), list (masked), get, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep, requires
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.api.paging import Page, PerPage
from posthorn.domain.permissions import Permission
from posthorn.services.accounts import Principal
from posthorn.store.accounts import ApiKeyRow
from posthorn.store.tables import utcnow

router = APIRouter(prefix="/v1/api-keys", route_class=GuardedRoute, tags=["api-keys"])

FullAccess = Annotated[Principal, requires(Permission.FULL_ACCESS)]


class CreateKeyIn(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    permission: Permission = Permission.FULL_ACCESS
    expires_in_days: int | None = Field(None, description="7, 30, 60, 90, 180 or 365")
    ip_allowlist: list[str] | None = Field(None, description="IPs or CIDRs, IPv4 or IPv6")


class CreatedKeyOut(BaseModel):
    id: str
    name: str
    key: str
    permission: str
    ip_allowlist: list[str] | None
    expires_at: str | None
    created_at: str


class KeySummaryOut(BaseModel):
    id: str
    name: str
    key: str
    permission: str
    ip_allowlist: list[str] | None
    expires_at: str | None
    is_expired: bool
    created_at: str


class KeyListOut(BaseModel):
    data: list[KeySummaryOut]
    total: int
    page: int
    per_page: int


class KeyDetailOut(BaseModel):
    id: str
    name: str
    permission: str
    ip_allowlist: list[str] | None
    expires_at: str | None
    is_expired: bool
    active: bool
    created_at: str
    updated_at: str


class DeletedOut(BaseModel):
    id: str
    deleted: bool


def _is_expired(row: ApiKeyRow) -> bool:
    return row.expires_at is not None and row.expires_at <= utcnow()


@router.post("", response_model=CreatedKeyOut)
async def create_key(body: CreateKeyIn, svc: ServicesDep, caller: FullAccess) -> dict[str, Any]:
    """Create an API key. The full key is in this answer only: store it safely."""
    created = await svc.accounts.create_key(
        caller.account_id,
        name=body.name,
        permission=body.permission,
        expires_in_days=body.expires_in_days,
        ip_allowlist=body.ip_allowlist,
        created_by=caller,
    )
    row = created.row
    return {
        "id": row.id,
        "name": row.name,
        "key": created.key,
        "permission": row.permission,
        "ip_allowlist": row.ip_allowlist,
        "expires_at": timestamp(row.expires_at),
        "created_at": timestamp(row.created_at),
    }


@router.get("", response_model=KeyListOut)
async def list_keys(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    """Active keys, newest first; the key itself is masked."""
    rows, total = await svc.accounts.list_keys(caller.account_id, page=page, per_page=per_page)
    return {
        "data": [
            {
                "id": row.id,
                "name": row.name,
                "key": row.display,
                "permission": row.permission,
                "ip_allowlist": row.ip_allowlist,
                "expires_at": timestamp(row.expires_at),
                "is_expired": _is_expired(row),
                "created_at": timestamp(row.created_at),
            }
            for row in rows
        ],
        "total": total,
        "page": page,
        "per_page": per_page,
    }


@router.get("/{key_id}", response_model=KeyDetailOut)
async def get_key(key_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    row = await svc.accounts.get_key(caller.account_id, key_id)
    return {
        "id": row.id,
        "name": row.name,
        "permission": row.permission,
        "ip_allowlist": row.ip_allowlist,
        "expires_at": timestamp(row.expires_at),
        "is_expired": _is_expired(row),
        "active": not _is_expired(row),
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }


@router.delete("/{key_id}", response_model=DeletedOut)
async def delete_key(key_id: str, svc: ServicesDep, caller: FullAccess) -> dict[str, Any]:
    """Revoke a key: requests with it fail from the next one on."""
    await svc.accounts.revoke_key(caller.account_id, key_id)
    return {"id": key_id, "deleted": True}
