"""The SMTP submission listeners, in the running event loop, until told to stop.

``run_smtp`` opens the STARTTLS listener on ``SMTP_HOST:SMTP_PORT`` (RFC 3207) and, when
``SMTPS_PORT`` is set, an implicit-TLS listener (RFC 8314 §3). Each connection is a
:class:`~posthorn.smtp.protocol.SubmissionSMTP` created with ``loop.create_server`` in this
loop, so sessions share the services (database pool, group commit) with the rest of the
process. On stop: the listeners close, submissions already handed to the intake finish (for
a bounded time), and the remaining sessions are told 421 (RFC 5321 §3.8) and closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from posthorn.services.container import Services
from posthorn.services.login_throttle import LoginThrottle
from posthorn.settings import Settings
from posthorn.smtp.auth import Authenticator
from posthorn.smtp.guard import Busy, ClientSlots, Rules
from posthorn.smtp.handler import SubmissionHandler, Submit
from posthorn.smtp.protocol import SubmissionSMTP
from posthorn.smtp.tls import server_context

log = logging.getLogger("posthorn.smtp")

# The Received field added to each message must fit within MAX_MESSAGE_BYTES too: SIZE and the
# DATA limit leave room for it (the field is at most about 600 octets, see received.py).
RECEIVED_ALLOWANCE = 1024
MAX_SESSIONS = 2000  # open sessions per process; more are told 421 and closed
SHUTDOWN_GRACE = 30.0  # seconds for submissions in the intake to finish on stop
CLOSE_WAIT = 5.0  # seconds for closed sessions and listeners to wind down
THROTTLE_SCOPE = "smtp"  # failed AUTH attempts in the shared count of failed logins


class Sessions:
    """The open sessions, to finish them on stop."""

    def __init__(self) -> None:
        self.live: set[SubmissionSMTP] = set()
        self._changed = asyncio.Event()

    def add(self, session: SubmissionSMTP) -> None:
        self.live.add(session)

    def discard(self, session: SubmissionSMTP) -> None:
        self.live.discard(session)
        self._changed.set()

    def changed(self) -> None:
        """A session finished a submission."""
        self._changed.set()

    async def finish(self, *, grace: float) -> None:
        await self._wait(lambda: not any(s.submitting for s in self.live), grace)
        # From here on nothing awaits until every session is closed: none can start a
        # submission in between.
        for session in list(self.live):
            session.shut_down()
        await self._wait(lambda: not self.live, CLOSE_WAIT)

    async def _wait(self, done: Callable[[], bool], seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not done():  # bounded by the deadline
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return


@dataclass(frozen=True, eq=False)
class Submission:
    """What every session of this process shares."""

    settings: Settings
    services: Services
    handler: SubmissionHandler
    authenticator: Authenticator
    throttle: LoginThrottle
    sessions: Sessions
    rules: Rules  # per-client cap, greeting, time to authenticate (guard.py)
    tls_context: ssl.SSLContext
    size_limit: int  # advertised with SIZE (RFC 1870) and enforced on DATA


def build_submission(
    settings: Settings, services: Services, submit: Submit | None = None, *, processes: int = 1
) -> Submission:
    """What the sessions share; ``processes`` is how many processes serve the port together."""
    size_limit = settings.max_message_bytes - RECEIVED_ALLOWANCE
    if size_limit <= 0:
        raise ValueError("POSTHORN_MAX_MESSAGE_BYTES is too small for SMTP submission")
    authenticator = Authenticator(settings, services)
    return Submission(
        settings=settings,
        services=services,
        handler=SubmissionHandler(settings, services, submit),
        authenticator=authenticator,
        throttle=LoginThrottle(
            services.db,
            scope=THROTTLE_SCOPE,
            limit=settings.smtp_auth_failure_limit,
            window=settings.smtp_auth_failure_window,
        ),
        sessions=Sessions(),
        rules=Rules(
            slots=ClientSlots(client_share(settings.smtp_max_connections_per_client, processes)),
            greeting_delay=settings.smtp_greeting_delay,
            auth_deadline=settings.smtp_auth_timeout,
            uncapped=lambda ip: authenticator.trusted(ip) is not None,
        ),
        tls_context=server_context(settings),
        size_limit=size_limit,
    )


def client_share(cap: int, processes: int) -> int:
    """One process's part of the per-client cap when ``processes`` share the port.

    The kernel spreads connections over the processes by a hash of the client's address and
    port (``SO_REUSEPORT``), so a client's connections land on them evenly at random, and no
    process sees the others' counts. Each process allows its share: together never more than
    the cap (rounded up to a multiple of the number of processes). A client may be refused a
    little below the cap when its connections happen to gather on one process; with the
    default of 100 and a few processes, a pool of half the cap all but never is.
    """
    return max(1, -(-cap // processes))


def _factory(
    submission: Submission, *, implicit_tls: bool, loop: asyncio.AbstractEventLoop
) -> Callable[[], asyncio.BaseProtocol]:
    def new_session() -> asyncio.BaseProtocol:
        if len(submission.sessions.live) >= MAX_SESSIONS:
            return Busy()
        return SubmissionSMTP(submission, implicit_tls=implicit_tls, loop=loop)

    return new_session


async def run_smtp(
    settings: Settings,
    services: Services,
    *,
    stop: asyncio.Event,
    submit: Submit | None = None,
    reuse_port: bool = False,
    processes: int = 1,
) -> None:
    """Serve SMTP submission until ``stop`` is set, then close gracefully.

    ``submit`` replaces this process's intake (a session process of ``smtp_workers``);
    ``reuse_port`` lets that many processes listen on the same ports (``SO_REUSEPORT``: the
    kernel spreads the connections over them); ``processes`` is how many do.
    """
    _quiet_aiosmtpd()
    submission = build_submission(settings, services, submit, processes=processes)
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    try:
        servers.append(
            await loop.create_server(
                _factory(submission, implicit_tls=False, loop=loop),
                settings.smtp_host,
                settings.smtp_port,
                reuse_port=reuse_port,
            )
        )
        if settings.smtps_port is not None:
            servers.append(
                await loop.create_server(
                    _factory(submission, implicit_tls=True, loop=loop),
                    settings.smtp_host,
                    settings.smtps_port,
                    ssl=submission.tls_context,
                    reuse_port=reuse_port,
                )
            )
        log.info(
            "smtp submission listening on %s:%d (STARTTLS)%s",
            settings.smtp_host,
            settings.smtp_port,
            f" and :{settings.smtps_port} (TLS)" if settings.smtps_port is not None else "",
            extra={"action": "smtp_listening"},
        )
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        await submission.sessions.finish(grace=SHUTDOWN_GRACE)
        for server in servers:
            try:
                await asyncio.wait_for(server.wait_closed(), CLOSE_WAIT)
            except TimeoutError:
                log.warning("smtp listener did not close in time", extra={"action": "smtp_stop"})
        log.info("smtp submission stopped", extra={"action": "smtp_stopped"})


def _quiet_aiosmtpd() -> None:
    # aiosmtpd logs every command line, addresses included, at INFO ("mail.log"); the handler
    # logs one line per message instead. An explicit level set elsewhere is kept.
    library_log = logging.getLogger("mail.log")
    if library_log.level == logging.NOTSET:
        library_log.setLevel(logging.WARNING)
