"""The inbound listener, in the running event loop, until told to stop.

``run_inbound`` serves SMTP on ``SMTP_HOST:INBOUND_PORT`` for the bounce domain's MX
(``POSTHORN_RETURN_PATH_MX``): no AUTH (nobody submits mail here), no relaying, messages up to
10 MB (SIZE, RFC 1870). The connection rules of ``posthorn.smtp.guard`` apply: at most
``MAX_SESSIONS`` sessions, at most ``INBOUND_MAX_CONNECTIONS_PER_CLIENT`` from one client
network, and a client that talks before the greeting is refused. On stop: the listener closes,
reports being recorded finish (for a bounded time), and the remaining sessions are told 421
(RFC 5321 §3.8) and closed.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from aiosmtpd.smtp import SMTP

from posthorn.inbound.handler import InboundHandler
from posthorn.settings import Settings
from posthorn.smtp.guard import Busy, ClientSlots, GuardedSMTP, Rules
from posthorn.store.database import Database

log = logging.getLogger("posthorn.inbound")

MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # bounces return the original message, or its headers
# RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
SESSION_TIMEOUT = 300.0
MAX_SESSIONS = 2000  # open sessions; more are told 421 and closed
SHUTDOWN_GRACE = 30.0  # seconds for reports being recorded to finish on stop
CLOSE_WAIT = 5.0  # seconds for the listener to wind down
GREETING_TEXT = "ESMTP Posthorn"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down, try again later\r\n"


class InboundSMTP(GuardedSMTP):
    """aiosmtpd's protocol without AUTH, tracked so that a stop can close it."""

    def __init__(
        self,
        handler: InboundHandler,
        *,
        settings: Settings,
        sessions: set[InboundSMTP],
        rules: Rules,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # aiosmtpd keeps per-command size limits in a class attribute that each EHLO raises;
        # this session gets its own.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(
            handler,
            data_size_limit=MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,  # RFC 6533 reports may come with SMTPUTF8 (RFC 6531)
            decode_data=False,
            hostname=settings.hostname,
            ident=GREETING_TEXT,
            timeout=SESSION_TIMEOUT,
            auth_require_tls=True,  # without TLS this keeps AUTH out of the EHLO answer
            loop=loop,
        )
        # ... and without the command, AUTH is an unknown command (500), not a 538.
        self._smtp_methods.pop("AUTH", None)
        self._sessions = sessions
        self.guard(rules, settings.hostname)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:
            self._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        super().connection_lost(error)

    def shut_down(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(SHUTTING_DOWN)
            transport.close()


async def run_inbound(settings: Settings, db: Database, *, stop: asyncio.Event) -> None:
    """Receive bounces and complaints until ``stop`` is set, then close gracefully."""
    _quiet_libraries()
    handler = InboundHandler(settings, db)
    sessions: set[InboundSMTP] = set()
    loop = asyncio.get_running_loop()
    rules = Rules(
        slots=ClientSlots(settings.inbound_max_connections_per_client),
        greeting_delay=settings.inbound_greeting_delay,
    )

    def new_session() -> asyncio.BaseProtocol:
        if len(sessions) >= MAX_SESSIONS:
            return Busy()
        return InboundSMTP(handler, settings=settings, sessions=sessions, rules=rules, loop=loop)

    server = await loop.create_server(new_session, settings.smtp_host, settings.inbound_port)
    log.info(
        "inbound listening on %s:%d for bounce+…@%s",
        settings.smtp_host,
        settings.inbound_port,
        settings.effective_bounce_domain,
        extra={"action": "inbound_listening"},
    )
    try:
        await stop.wait()
    finally:
        server.close()
        try:
            await asyncio.wait_for(handler.idle.wait(), SHUTDOWN_GRACE)
        except TimeoutError:
            log.warning(
                "inbound: reports still being recorded at stop", extra={"action": "inbound_stop"}
            )
        for session in list(sessions):
            session.shut_down()
        try:
            await asyncio.wait_for(server.wait_closed(), CLOSE_WAIT)
        except TimeoutError:
            log.warning("inbound listener did not close in time", extra={"action": "inbound_stop"})
        log.info("inbound stopped", extra={"action": "inbound_stopped"})


def _quiet_libraries() -> None:
    # aiosmtpd logs every command line at INFO ("mail.log"); flufl.bounce each detector it
    # runs, and a traceback for a detector that fails on odd input, which the parser catches
    # and the handler reports as an ignored message. The handler logs one line per message
    # instead. An explicit level set elsewhere is kept.
    for name, level in (("mail.log", logging.WARNING), ("flufl.bounce", logging.CRITICAL)):
        library_log = logging.getLogger(name)
        if library_log.level == logging.NOTSET:
            library_log.setLevel(level)
