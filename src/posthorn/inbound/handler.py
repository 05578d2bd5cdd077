"""The aiosmtpd handler of the inbound listener: who may receive mail here, and what then.

Only VERP return paths of ours are recipients: ``bounce+<delivery id>.<mac>@<bounce domain>``
(or ``bounce+g<delivery id>.<mac>``, the return path of a transaction to several recipients,
see :mod:`posthorn.domain.verp`) whose MAC verifies under the server secret. Everything else
is refused at RCPT with 550 5.1.1, so the listener is no relay, and nothing it refuses is ever
answered by mail (a bounce of a bounce would be backscatter). Nothing is ever sent from here
at all.

An accepted message is read (pure, in a thread: it may be 10 MB) and applied to each named
delivery (for a group return path: to each recipient of the group's email that it names). A
database failure answers 451, so the sending MTA keeps the report and tries again (RFC 5321
§4.2.5); a report that cannot be read is accepted and dropped, since the same bytes will not
read better next time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from posthorn.domain import verp
from posthorn.domain.bounces import Ignored, Report, parse_report
from posthorn.inbound.recorder import Outcome, apply_group_report, apply_report
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

log = logging.getLogger("posthorn.inbound")

# RFC 5321 §4.5.3.1.8 asks a server to take at least 100 recipients; a report is about one.
MAX_RECIPIENTS = 100

NO_SUCH_RECIPIENT = "550 5.1.1 No such recipient here"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
RECIPIENT_OK = "250 2.1.5 OK"
ACCEPTED = "250 2.0.0 OK"
TRY_AGAIN = "451 4.3.0 Temporary failure, please try again later"


class InboundHandler:
    """aiosmtpd calls ``handle_RCPT`` and ``handle_DATA``; MAIL FROM is taken as it comes
    (bounces have a null reverse-path, RFC 5321 §4.5.5)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self._secret = settings.secret_key
        self._domain = settings.effective_bounce_domain
        self._db = db
        self.busy = 0  # messages being applied; the server waits for them on stop
        self.idle = asyncio.Event()
        self.idle.set()

    def token(self, address: str) -> verp.Token | None:
        return verp.parse(self._secret, address, self._domain)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS
        if self.token(address) is None:
            log.debug(
                "inbound: recipient refused",
                extra={"action": "inbound_rcpt_refused", "peer": _peer(session)},
            )
            return NO_SUCH_RECIPIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return RECIPIENT_OK

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self._working():
            data = envelope.original_content or b""
            try:
                report: Report = await asyncio.to_thread(parse_report, data)
            except Exception:
                log.exception(
                    "inbound: unreadable report dropped",
                    extra={"action": "inbound_parse_failed", "peer": _peer(session)},
                )
                return ACCEPTED
            tokens = [t for t in map(self.token, envelope.rcpt_tos) if t is not None]
            for token in tokens:
                try:
                    outcomes = await self._apply(token, report)
                except Exception:
                    log.exception(
                        "inbound: could not record a report for delivery %s",
                        token.delivery_id,
                        extra={
                            "action": "inbound_record_failed",
                            "delivery_id": token.delivery_id,
                        },
                    )
                    return TRY_AGAIN
                for delivery_id, outcome in outcomes:
                    _log_outcome(delivery_id, report, outcome, session, token=token)
            return ACCEPTED

    async def _apply(self, token: verp.Token, report: Report) -> list[tuple[int | None, Outcome]]:
        now = utcnow()
        if token.group:
            return await apply_group_report(self._db, token.delivery_id, report, now=now)
        return [
            (token.delivery_id, await apply_report(self._db, token.delivery_id, report, now=now))
        ]

    @contextmanager
    def _working(self) -> Iterator[None]:
        self.busy += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.busy -= 1
            if not self.busy:
                self.idle.set()


def _log_outcome(
    delivery_id: int | None,
    report: Report,
    outcome: Outcome,
    session: Session,
    *,
    token: verp.Token,
) -> None:
    # A group's report that names nobody of the email is logged under the group's lead.
    about = f"delivery {delivery_id}" if delivery_id is not None else "group"
    if token.group:
        about += f" (group of delivery {token.delivery_id})"
    extra: dict[str, Any] = {
        "action": f"inbound_{outcome}",
        "delivery_id": delivery_id if delivery_id is not None else token.delivery_id,
        "peer": _peer(session),
        "report": type(report).__name__,
    }
    if isinstance(report, Ignored):
        extra["reason"] = report.reason
        log.info("inbound: %s: ignored (%s)", about, report.reason, extra=extra)
        return
    log.info("inbound: %s: %s", about, outcome, extra=extra)


def _peer(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
