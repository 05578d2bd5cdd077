"""``/v1/account``: the calling key's account and its settings (default sender, time zone)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep, requires
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.domain.permissions import Permission
from posthorn.services.accounts import Principal
from posthorn.store.accounts import AccountRow

router = APIRouter(prefix="/v1/account", route_class=GuardedRoute, tags=["account"])

FullAccess = Annotated[Principal, requires(Permission.FULL_ACCESS)]


class UpdateAccountIn(StrictModel):
    default_sender: str | None = Field(
        None,
        description='"addr" or "Name <addr>" on one of the account\'s domains: the From of '
        "dialect requests that name none (MailPass, BillionMail). null clears it.",
    )
    timezone: str | None = Field(
        None,
        description='An IANA time zone name, e.g. "Asia/Ho_Chi_Minh": local times of the '
        "v2 API (d_schedule) are read in it. null returns to UTC.",
    )


class AccountOut(BaseModel):
    id: str
    name: str
    default_sender: str | None
    timezone: str
    created_at: str


def _out(row: AccountRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "default_sender": row.default_sender,
        "timezone": row.timezone,
        "created_at": timestamp(row.created_at),
    }


@router.get("", response_model=AccountOut)
async def get_account(svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """The account of the API key making the request."""
    return _out(await svc.accounts.get_account(caller.account_id))


@router.patch("", response_model=AccountOut)
async def update_account(
    body: UpdateAccountIn, svc: ServicesDep, caller: FullAccess
) -> dict[str, Any]:
    """Set the default sender or the time zone; a field left out stays as it is."""
    changes = body.model_dump(exclude_unset=True)
    return _out(await svc.accounts.update_account(caller.account_id, changes, updated_by=caller))
