"""Running the real worker, once, over everything that is due: what tests use to deliver."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from posthorn.delivery.transport import SmtpDeliverer
from posthorn.services.container import Services
from posthorn.services.signing import DkimSigner
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.tables import deliveries
from posthorn.worker import Worker
from tests.support.sink import SmtpSink


async def deliver_due(services: Services, sink: SmtpSink, **changes: Any) -> None:
    """Deliver every due delivery, recipients' MX pointing at ``sink`` (settings ``changes``
    may override more), the way ``posthorn worker`` does."""
    settings = services.settings.model_copy(update={"mx_port": sink.port, **changes})
    worker = Worker(
        services.db,
        settings,
        SmtpDeliverer(settings),
        DkimSigner(services.db, settings),
        relays=services.relays,
        make_deliverer=SmtpDeliverer,
    )
    await worker.run_until_idle(within=30)
    await worker.close()


async def run_worker(db: Database, settings: Settings) -> None:
    """One worker, with ``settings`` as they are, until nothing is due."""
    worker = Worker(db, settings, SmtpDeliverer(settings), DkimSigner(db, settings))
    await worker.run_until_idle(within=30)
    await worker.close()


async def delivery_states(db: Database) -> dict[str, tuple[str, int]]:
    """Each recipient's delivery status and number of attempts."""
    async with db.read() as conn:
        rows = await conn.execute(
            select(deliveries.c.recipient, deliveries.c.status, deliveries.c.attempts)
        )
        return {r.recipient: (r.status, r.attempts) for r in rows}
