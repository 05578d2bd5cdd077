"""Operations: ``/healthz`` for load balancers, ``/metrics`` in the Prometheus text format.

``/metrics`` tells anyone who reads it how much mail the deployment moves and how far behind
it is, so it is served only to a client on this machine or to one that shows the bearer token
(``METRICS_TOKEN``, RFC 6750 §2.1). A client on this machine is a loopback peer whose
request names no proxy: a reverse proxy on the same host connects from loopback too, and
every client behind it would otherwise pass for local. A proxy that adds no such header is
caught only by its address: a peer in ``TRUSTED_PROXIES`` is a proxy, never a local client.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy import text

from posthorn import __version__
from posthorn.api.deps import ServicesDep
from posthorn.api.errors import error_response, language_of
from posthorn.domain.network import ip_allowed
from posthorn.domain.statuses import PENDING
from posthorn.messages import render
from posthorn.store import metrics
from posthorn.store.tables import utcnow

router = APIRouter(tags=["ops"])

# Headers a proxy adds to say whom it forwards for (RFC 7239 and the de-facto ones).
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


@router.get("/healthz")
async def healthz(svc: ServicesDep) -> dict[str, Any]:
    """200 when the database answers."""
    async with svc.db.read() as conn:
        await conn.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__}


def is_local(peer: str, headers: Mapping[str, str], trusted_proxies: Sequence[str] = ()) -> bool:
    """Whether the request comes from this machine, not through a proxy on it."""
    if any(name in headers for name in FORWARDING_HEADERS):
        return False
    if trusted_proxies and ip_allowed(peer, trusted_proxies):
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def bearer_matches(authorization: str | None, token: str) -> bool:
    if not token or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    # Compared in constant time: the comparison must not tell how much of a guess was right.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(request: Request, svc: ServicesDep) -> Response:
    """The queue in the Prometheus text format; for loopback or the metrics bearer token."""
    token = svc.settings.metrics_token
    peer = request.client.host if request.client else ""
    if not (
        is_local(peer, request.headers, svc.settings.trusted_proxies)
        or bearer_matches(request.headers.get("authorization"), token)
    ):
        language = language_of(request)
        if token:
            return error_response(
                request,
                401,
                render("metrics_token_required", language),
                **{"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return error_response(request, 403, render("metrics_local_only", language))
    now = utcnow()
    async with svc.db.read() as conn:
        counts = await metrics.queue_counts(conn)
        due, oldest = await metrics.due_now(conn, now)
        backlog = await metrics.webhook_backlog(conn, now)
    lines = [
        "# HELP posthorn_deliveries Deliveries in the queue (not finished) by status.",
        "# TYPE posthorn_deliveries gauge",
        *(f'posthorn_deliveries{{status="{s}"}} {counts.get(s, 0)}' for s in sorted(PENDING)),
        "# HELP posthorn_queue_due Deliveries due for an attempt now.",
        "# TYPE posthorn_queue_due gauge",
        f"posthorn_queue_due {due}",
        "# HELP posthorn_queue_oldest_due_seconds How long the oldest due delivery has waited.",
        "# TYPE posthorn_queue_oldest_due_seconds gauge",
        f"posthorn_queue_oldest_due_seconds {(now - oldest).total_seconds() if oldest else 0:.3f}",
        "# HELP posthorn_webhook_backlog Webhook messages due for sending now.",
        "# TYPE posthorn_webhook_backlog gauge",
        f"posthorn_webhook_backlog {backlog}",
    ]
    return PlainTextResponse("\n".join(lines) + "\n")
