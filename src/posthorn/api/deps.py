"""FastAPI dependencies: the services container and the caller's identity."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from posthorn.domain.network import client_address
from posthorn.domain.permissions import Permission
from posthorn.services.accounts import Principal
from posthorn.services.container import Services
from posthorn.settings import Settings


async def services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread.
    container: Services = request.app.state.services
    return container


ServicesDep = Annotated[Services, Depends(services)]


def client_ip(request: Request, settings: Settings) -> str:
    peer = request.client.host if request.client else ""
    return client_address(peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies)


async def principal(
    request: Request,
    svc: ServicesDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-KEY")] = None,
) -> Principal:
    return await svc.accounts.authenticate(x_api_key, client_ip=client_ip(request, svc.settings))


PrincipalDep = Annotated[Principal, Depends(principal)]


async def sender(
    request: Request,
    x_api_key: Annotated[str | None, Header(alias="X-API-KEY")] = None,
) -> Principal:
    """The caller of a route that queues email: a key with at least sending_access. Its row
    may come from the cache of recently used keys; see ``Accounts.authenticate``. (It reads
    the services itself: one dependency fewer to solve on the busiest route.)"""
    svc: Services = request.app.state.services
    caller = await svc.accounts.authenticate(
        x_api_key, client_ip=client_ip(request, svc.settings), for_sending=True
    )
    caller.require(Permission.SENDING_ACCESS)
    return caller


SenderDep = Annotated[Principal, Depends(sender)]


def requires(permission: Permission) -> Any:
    """A dependency that lets only keys with at least ``permission`` through."""

    async def check(caller: PrincipalDep) -> Principal:
        caller.require(permission)
        return caller

    return Depends(check)
