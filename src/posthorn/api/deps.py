"""FastAPI dependencies: the services container and the caller's identity.

On ``/v1`` the caller is established before the request body is read (see
``api/guard.py``); the dependencies below then return that caller instead of checking the
key a second time.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request

from posthorn.domain.network import client_address
from posthorn.domain.permissions import Permission
from posthorn.services.accounts import Principal
from posthorn.services.container import Services
from posthorn.settings import Settings

# Where ``api/guard.py`` leaves the caller it authenticated before reading the body.
CALLER_SCOPE_KEY = "posthorn.caller"


async def services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread.
    container: Services = request.app.state.services
    return container


ServicesDep = Annotated[Services, Depends(services)]


def client_ip(request: Request, settings: Settings) -> str:
    peer = request.client.host if request.client else ""
    return client_address(peer, request.headers.get("x-forwarded-for"), settings.trusted_proxies)


def known_caller(request: Request) -> Principal | None:
    caller = request.scope.get(CALLER_SCOPE_KEY)
    return caller if isinstance(caller, Principal) else None


async def principal(
    request: Request,
    svc: ServicesDep,
    x_api_key: Annotated[str | None, Header(alias="X-API-KEY")] = None,
) -> Principal:
    known = known_caller(request)
    if known is not None:
        return known
    return await svc.accounts.authenticate(x_api_key, client_ip=client_ip(request, svc.settings))


PrincipalDep = Annotated[Principal, Depends(principal)]


async def sender(
    request: Request,
    x_api_key: Annotated[str | None, Header(alias="X-API-KEY")] = None,
) -> Principal:
    """The caller of a route that queues email: a key with at least sending_access. Its row
    may come from the cache of recently used keys; see ``Accounts.authenticate``. (It reads
    the services itself: one dependency fewer to solve on the busiest route.)"""
    caller = known_caller(request)
    if caller is None:
        svc: Services = request.app.state.services
        caller = await svc.accounts.authenticate(
            x_api_key, client_ip=client_ip(request, svc.settings), for_sending=True
        )
    caller.require(Permission.SENDING_ACCESS)
    return caller


SenderDep = Annotated[Principal, Depends(sender)]


class Requires:
    """A dependency that lets only keys with at least ``permission`` through; ``api/guard.py``
    finds it in a route's dependencies and checks it before the body is read."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, caller: PrincipalDep) -> Principal:
        caller.require(self.permission)
        return caller


def requires(permission: Permission) -> Any:
    return Depends(Requires(permission))
