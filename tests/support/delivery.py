"""Running the real worker, once, over everything that is due: what tests use to deliver."""

from __future__ import annotations

from typing import Any

from posthorn.delivery.transport import SmtpDeliverer
from posthorn.services.container import Services
from posthorn.services.signing import DkimSigner
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
