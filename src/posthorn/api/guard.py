"""The route class of ``/v1``: the caller first, then a body of a size that fits the route.

FastAPI reads and parses a route's JSON body before it solves the route's dependencies, so a
request without a key would have its body buffered and parsed (a 24 MB array of ``{}`` is
hundreds of MB of objects) before the 401. ``GuardedRoute`` runs, in this order:

1. the API key: the route's ``principal``/``sender`` dependency, done here (401, 403 for an
   IP outside the key's allowlist);
2. the permission every ``Requires`` among the route's dependencies asks for (403);
3. the body limit of the route: the declared ``Content-Length`` first, then the bytes as
   they stream (413); only then the framework reads the body it has been handed.

The dependencies find the caller in the request scope and do not check the key again.
Routes that carry a message (sends, bulk jobs, templates) are marked ``@message_body`` and
may be as large as ``POSTHORN_MAX_MESSAGE_BYTES``; a few have their own ``@body_limit``;
every other ``/v1`` body is at most ``SMALL_BODY_BYTES``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from contextlib import aclosing
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from posthorn.api.deps import CALLER_SCOPE_KEY, Requires, client_ip, principal, sender
from posthorn.api.limits import SMALL_BODY_BYTES
from posthorn.domain.permissions import Permission
from posthorn.errors import TooLarge
from posthorn.services.container import Services

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

# A route's own body limit in bytes; ``None``: the message limit of the settings.
_BODY_LIMITS: dict[Callable[..., Any], int | None] = {}


def message_body(endpoint: Endpoint) -> Endpoint:
    """Mark a route whose body carries a message: it may be up to the message size limit."""
    _BODY_LIMITS[endpoint] = None
    return endpoint


def body_limit(limit: int) -> Callable[[Endpoint], Endpoint]:
    """Give a route a body limit other than ``SMALL_BODY_BYTES``."""

    def mark(endpoint: Endpoint) -> Endpoint:
        _BODY_LIMITS[endpoint] = limit
        return endpoint

    return mark


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


class GuardedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        calls = list(_calls(self.dependant))
        authenticates = principal in calls or sender in calls
        # The cached key look-up is for routes that only queue mail (see ``deps.sender``).
        for_sending = sender in calls and principal not in calls
        permissions = [call.permission for call in calls if isinstance(call, Requires)]
        if sender in calls:
            permissions.append(Permission.SENDING_ACCESS)
        reads_body = self.body_field is not None
        own_limit = _BODY_LIMITS.get(self.endpoint, SMALL_BODY_BYTES)

        async def guarded(request: Request) -> Response:
            svc: Services = request.app.state.services
            if authenticates:
                caller = await svc.accounts.authenticate(
                    request.headers.get("x-api-key"),
                    client_ip=client_ip(request, svc.settings),
                    for_sending=for_sending,
                )
                for needed in permissions:
                    caller.require(needed)
                request.scope[CALLER_SCOPE_KEY] = caller
            if reads_body:
                limit = svc.settings.max_message_bytes if own_limit is None else own_limit
                await _read_body(request, limit)
            return await handler(request)

        return guarded


async def _read_body(request: Request, limit: int) -> None:
    """Read the body up to ``limit`` bytes, refusing it (413) as soon as it is larger."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(limit=limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit=limit)
                chunks.append(chunk)
    except ClientDisconnect as exc:
        # Also how ``BodySizeLimit`` ends a body past the message limit (it has answered).
        raise TooLarge(limit=limit) from exc
    # Starlette keeps a body it has read here; the framework's own read returns it.
    request._body = b"".join(chunks)
