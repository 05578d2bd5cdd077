"""One SMTP session: aiosmtpd's protocol, with what a submission server needs changed.

aiosmtpd parses commands and runs STARTTLS; the connection rules of ``guard.py`` apply
(per-client cap, no commands before the greeting, time to authenticate); and this subclass
changes four things:

- AUTH PLAIN and LOGIN (RFC 4954) check credentials asynchronously through the services
  (aiosmtpd's ``authenticator`` is synchronous) and are throttled per client network;
- DATA is read by :class:`~posthorn.smtp.data.DataReader`: memory bounded by the size limit
  even for a line that never ends, and bare CR or LF refused (no SMTP smuggling);
- replies carry RFC 3463 enhanced codes (RFC 2034), and a second STARTTLS is refused;
- an implicit-TLS listener (RFC 8314 §3) counts as TLS for AUTH.

What is accepted is decided by the handler (``handler.py``), which sees this object as
``server``.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import logging
import re
from base64 import b64decode
from typing import TYPE_CHECKING, Any, AnyStr, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Session

from posthorn.errors import LimitExceeded
from posthorn.smtp import construction, replies
from posthorn.smtp.auth import Credential, Refused, loggable_user, parse_plain
from posthorn.smtp.data import DataReader, Problem
from posthorn.smtp.guard import GuardedSMTP

if TYPE_CHECKING:
    from posthorn.smtp.server import Submission

log = logging.getLogger("posthorn.smtp")

# RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
SESSION_TIMEOUT = 300.0
# RFC 5321 §4.5.3.2.6 gives a client 10 minutes for the reply to the final dot; the whole of
# DATA gets that long here before the session is dropped.
DATA_DEADLINE = 600.0
GREETING_TEXT = "ESMTP Posthorn"
# ``<local@domain>`` with a dot-atom local part (RFC 5321 §4.1.2) and an ASCII domain: the
# shape of nearly every MAIL and RCPT argument, which needs no full RFC 5322 parse.
_PLAIN_PATH = re.compile(
    r"<((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)>"
)


class _Session(Session):
    """aiosmtpd's session, without the warning it logs each time aiosmtpd itself sets the
    deprecated ``login_data`` after a successful AUTH."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class SubmissionSMTP(GuardedSMTP):
    def __init__(
        self, submission: Submission, *, implicit_tls: bool, loop: asyncio.AbstractEventLoop
    ) -> None:
        # aiosmtpd keeps per-command size limits in a class attribute that each EHLO raises;
        # this session gets its own.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        settings = submission.settings
        options: dict[str, Any] = {
            "data_size_limit": submission.size_limit,
            "hostname": settings.hostname,
            "ident": GREETING_TEXT,
            "tls_context": None if implicit_tls else submission.tls_context,
            "timeout": SESSION_TIMEOUT,
            "auth_require_tls": settings.smtp_auth_require_tls and not implicit_tls,
            "loop": loop,
        }
        if construction.supported():
            construction.init_session(self, submission.handler, **options)
        else:
            super().__init__(
                submission.handler,
                enable_SMTPUTF8=True,
                decode_data=False,
                require_starttls=False,
                auth_required=False,  # the handler refuses MAIL without a credential
                **options,
            )
        self.guard(submission.rules, settings.hostname)
        self.submission = submission
        self.implicit_tls = implicit_tls
        self.submitting = False  # inside the DATA hook: the intake has the message
        self._greeted = False
        self._answering_hello = False
        self._held: list[str] | None = None  # EHLO's reply lines, sent together
        self._trusted: Credential | None = None
        self._trusted_known = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's path parser, with a fast way through for a plain ``<local@domain>``.

        aiosmtpd runs the email package's RFC 5322 parser (and defines a class) on every
        MAIL and RCPT; a plain path gives the same answer from one regular expression
        (``tests/unit/test_smtp_getaddr.py`` compares both). Anything else goes to aiosmtpd.
        """
        plain = _PLAIN_PATH.match(arg)
        if plain is not None:
            address, rest = plain.group(1), arg[plain.end() :]
            too_long = self.local_part_limit and len(address.rpartition("@")[0]) > (
                self.local_part_limit
            )
            # Nothing after the path, or one space and a parameter (RFC 5321 §4.1.2); other
            # white space and comments are for the full parser, which removes them its way.
            if not too_long and (not rest or (rest[0] == " " and rest[1:2].isalnum())):
                return address, rest[1:]
        result: tuple[str | None, str | None] = super()._getaddr(arg)
        return result

    # ── state the handler reads ─────────────────────────────────────────────────────────

    @property
    def tls_active(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    @property
    def starttls_offered(self) -> bool:
        return self.tls_context is not None and not self.tls_active

    @property
    def offers_auth(self) -> bool:  # not auth_…: aiosmtpd takes those names for mechanisms
        # RFC 4954 §4 and DESIGN: passwords travel only inside TLS unless configured otherwise.
        return self.tls_active or not self.submission.settings.smtp_auth_require_tls

    @property
    def client_ip(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    @property
    def credential(self) -> Credential | None:
        """Who may submit in this session: its AUTH identity, or a trusted network's."""
        session = self.session
        if session is not None and session.authenticated:
            data = session.auth_data
            return data if isinstance(data, Credential) else None
        if not self._trusted_known:  # the peer does not change: look it up once
            self._trusted = self.submission.authenticator.trusted(self.client_ip)
            self._trusted_known = True
        return self._trusted

    def authorised(self) -> bool:
        return self.credential is not None

    def tls_description(self) -> str | None:
        """``using TLSv1.3 with cipher …`` for the Received field, or ``None`` without TLS."""
        if not self.tls_active or self.transport is None:
            return None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return "using TLS"
        cipher = ssl_object.cipher()
        return f"using {ssl_object.version()} with cipher {cipher[0] if cipher else 'unknown'}"

    # ── life cycle ──────────────────────────────────────────────────────────────────────

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # a new connection, not the switch to TLS
            self.submission.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.submission.sessions.discard(self)
        super().connection_lost(error)

    def shut_down(self) -> None:
        """Tell the client the service is going away (RFC 5321 §3.8) and close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        # A cast, not isinstance: uvloop's transports do not register with asyncio's ABCs.
        cast(asyncio.WriteTransport, transport).write(replies.SHUTTING_DOWN.encode() + b"\r\n")
        transport.close()

    # ── replies ─────────────────────────────────────────────────────────────────────────

    async def push(self, status: AnyStr) -> None:
        if self._held is not None and isinstance(status, str):
            self._held.append(status)
            return
        # RFC 2034 §3: no enhanced code in the greeting or in the answer to HELO/EHLO.
        if isinstance(status, str) and self._greeted and not self._answering_hello:
            status = replies.enhance(status)
        self._greeted = True
        await super().push(status)

    async def smtp_EHLO(self, hostname: str) -> None:  # noqa: N802 - aiosmtpd's name
        # aiosmtpd sends each line of the reply on its own (a write and a drain each); they
        # are held and sent as one write instead.
        self._answering_hello = True
        self._held = []
        try:
            await super().smtp_EHLO(hostname)
            held, self._held = self._held, None
            if held:
                await self.push("\r\n".join(held))
        finally:
            self._held = None
            self._answering_hello = False

    async def smtp_HELO(self, hostname: str) -> None:  # noqa: N802 - aiosmtpd's name
        self._answering_hello = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._answering_hello = False

    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's name
        if self.tls_active:
            await self.push(replies.TLS_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    # ── AUTH (RFC 4954) ─────────────────────────────────────────────────────────────────

    async def auth_PLAIN(self, _: SMTP, args: list[str]) -> AuthResult:  # noqa: N802 - aiosmtpd's name
        if await self._throttled():
            return AuthResult(success=False, handled=True)
        if len(args) == 1:
            blob = await self.challenge_auth("")  # RFC 4954 §4: an empty challenge
            if blob is MISSING:
                return AuthResult(success=False, handled=True)  # aiosmtpd answered 501
        else:
            try:
                blob = b64decode(args[1], validate=True)
            except binascii.Error:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        credentials = parse_plain(blob)
        if credentials is None:
            await self.push("501 5.5.2 Malformed PLAIN credentials")
            return AuthResult(success=False, handled=True)
        return await self._check(*credentials)

    async def auth_LOGIN(self, _: SMTP, args: list[str]) -> AuthResult:  # noqa: N802 - aiosmtpd's name
        if await self._throttled():
            return AuthResult(success=False, handled=True)
        if len(args) == 1:
            user = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if user is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                user = b64decode(args[1], validate=True)
            except binascii.Error:
                await self.push("501 5.5.2 Cannot decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(user, bytes) and isinstance(password, bytes)
        return await self._check(
            user.decode("utf-8", "replace"), password.decode("utf-8", "replace")
        )

    async def _throttled(self) -> bool:
        # An early answer, without I/O, for a network this process refused lately; _check
        # asks the shared count.
        ip = self.client_ip
        if not self.submission.throttle.known_blocked(ip):
            return False
        await self._refuse_throttled(ip)
        return True

    async def _refuse_throttled(self, ip: str) -> None:
        log.warning(
            "smtp auth throttled peer=%s",
            ip,
            extra={"action": "smtp_auth_throttled", "peer": ip},
        )
        await self.push(replies.AUTH_THROTTLED)
        if self.transport is not None:
            self.transport.close()

    async def _check(self, user: str, password: str) -> AuthResult:
        ip = self.client_ip
        try:
            async with self.submission.throttle.attempt(ip) as attempt:
                result = await self.submission.authenticator.check(user, password, client_ip=ip)
                if isinstance(result, Refused):
                    attempt.failed()
        except LimitExceeded:
            await self._refuse_throttled(ip)
            return AuthResult(success=False, handled=True)
        if isinstance(result, Refused):
            log.warning(
                "smtp auth failed user=%s peer=%s reason=%s",
                loggable_user(user),
                ip,
                result.reason,
                extra={"action": "smtp_auth_failed", "peer": ip, "reason": result.reason},
            )
            return AuthResult(success=False, handled=False, message=result.reply)
        log.info(
            "smtp auth ok user=%s account=%s peer=%s",
            loggable_user(result.login),
            result.account_id,
            ip,
            extra={"action": "smtp_auth_ok", "peer": ip, "account_id": result.account_id},
        )
        self.authentication_done()
        return AuthResult(success=True, auth_data=result)

    # ── DATA ────────────────────────────────────────────────────────────────────────────

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's name
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = DataReader(
            size_limit=self.submission.size_limit, line_limit=self.line_length_limit
        )
        deadline = self.loop.time() + DATA_DEADLINE
        last_reset = self.loop.time()
        while not reader.done:  # bounded: by the deadline, the size and the session timeout
            now = self.loop.time()
            if reader.runaway or now > deadline:
                await self.push(self._problem_reply(Problem.TOO_BIG))
                self._close()
                return
            if now - last_reset > 1.0:  # data still flowing keeps the session alive
                self._reset_timeout()
                last_reset = now
            piece = await self._read_data_piece()
            if not piece:  # the client went away
                self._close()
                return
            if reader.feed(piece) != len(piece):
                # Pieces end at the first "." CRLF, so the end of data is never inside one.
                raise RuntimeError("bytes after the end of data were read")
        self._reset_timeout()
        result = reader.finish()
        if isinstance(result, Problem):
            self.envelope = self._create_envelope()
            await self.push(self._problem_reply(result))
            return
        self.envelope.content = result
        self.envelope.original_content = result
        self.submitting = True
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            self.submitting = False
            self.submission.sessions.changed()
        self.envelope = self._create_envelope()
        await self.push(status)

    async def _read_data_piece(self) -> bytes:
        """The next bytes up to a "." CRLF (a possible end of data), or as many as the reader
        holds when none is in sight; nothing after the end of data is taken."""
        try:
            return await self._reader.readuntil(b".\r\n")
        except asyncio.LimitOverrunError as overrun:
            return await self._reader.read(overrun.consumed)
        except asyncio.IncompleteReadError:
            return b""

    def _problem_reply(self, problem: Problem) -> str:
        if problem is Problem.BARE_LINE_ENDING:
            return replies.BARE_LINE_ENDING
        if problem is Problem.LINE_TOO_LONG:
            return replies.LINE_TOO_LONG
        return f"552 5.3.4 Message too big (limit {self.submission.size_limit} bytes)"

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
