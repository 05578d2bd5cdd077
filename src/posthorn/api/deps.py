"""FastAPI dependencies: the services container and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from posthorn.domain.permissions import Permission
from posthorn.services.accounts import Accounts, Principal
from posthorn.services.emails import Emails
from posthorn.services.intake import Intake
from posthorn.settings import Settings
from posthorn.store.database import Database


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    db: Database
    accounts: Accounts
    intake: Intake
    emails: Emails


def services(request: Request) -> Services:
    container: Services = request.app.state.services
    return container


ServicesDep = Annotated[Services, Depends(services)]


async def principal(
    svc: ServicesDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-KEY")] = None,
) -> Principal:
    return await svc.accounts.authenticate(x_api_key)


PrincipalDep = Annotated[Principal, Depends(principal)]


def requires(permission: Permission) -> Any:
    """A dependency that lets only keys with at least ``permission`` through."""

    async def check(caller: PrincipalDep) -> Principal:
        caller.require(permission)
        return caller

    return Depends(check)
