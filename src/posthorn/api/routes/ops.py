"""Operations: ``/healthz`` for load balancers, ``/metrics`` in the Prometheus text format."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from posthorn import __version__
from posthorn.api.deps import ServicesDep
from posthorn.store import metrics
from posthorn.store.tables import utcnow

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(svc: ServicesDep) -> dict[str, Any]:
    """200 when the database answers."""
    async with svc.db.read() as conn:
        await conn.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__}


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(svc: ServicesDep) -> str:
    now = utcnow()
    async with svc.db.read() as conn:
        counts = await metrics.delivery_counts(conn)
        due, oldest = await metrics.due_now(conn, now)
        backlog = await metrics.webhook_backlog(conn, now)
    lines = [
        "# HELP posthorn_deliveries Deliveries by status.",
        "# TYPE posthorn_deliveries gauge",
        *(f'posthorn_deliveries{{status="{s}"}} {n}' for s, n in sorted(counts.items())),
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
    return "\n".join(lines) + "\n"
