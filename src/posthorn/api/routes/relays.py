"""``/v1/relays``: route an account's mail through its own SMTP provider."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.api.paging import Page, PerPage

router = APIRouter(prefix="/v1/relays", route_class=GuardedRoute, tags=["relays"])


class RelayIn(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str | None = Field(None, max_length=255)
    password: str | None = Field(None, max_length=1024)
    is_default: bool = False


class RelayPatch(StrictModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    host: str | None = Field(None, min_length=1, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] | None = None
    username: str | None = Field(None, max_length=255)
    password: str | None = Field(None, max_length=1024)
    is_default: bool | None = None


class RelayOut(BaseModel):
    id: str
    name: str
    host: str
    port: int
    tls: str
    username: str | None
    has_password: bool
    is_default: bool
    created_at: str
    updated_at: str


class RelayListOut(BaseModel):
    data: list[RelayOut]
    total: int
    page: int
    per_page: int


class DeletedOut(BaseModel):
    id: str
    deleted: bool


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "host": row["host"],
        "port": row["port"],
        "tls": row["tls"],
        "username": row["username"],
        "has_password": bool(row["password"]),
        "is_default": bool(row["is_default"]),
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }


@router.get("", response_model=RelayListOut)
async def list_relays(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    rows, total = await svc.relays.page(caller.account_id, page=page, per_page=per_page)
    return {"data": [_out(r) for r in rows], "total": total, "page": page, "per_page": per_page}


@router.post("", response_model=RelayOut)
async def create_relay(body: RelayIn, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """Add a relay; with ``is_default`` all of the account's mail goes through it."""
    return _out(await svc.relays.create(caller, body.model_dump()))


@router.get("/{relay_id}", response_model=RelayOut)
async def get_relay(relay_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    return _out(await svc.relays.get(caller.account_id, relay_id))


@router.patch("/{relay_id}", response_model=RelayOut)
async def update_relay(
    relay_id: str, body: RelayPatch, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    return _out(await svc.relays.update(caller, relay_id, body.model_dump(exclude_unset=True)))


@router.delete("/{relay_id}", response_model=DeletedOut)
async def delete_relay(relay_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    await svc.relays.delete(caller, relay_id)
    return {"id": relay_id, "deleted": True}
