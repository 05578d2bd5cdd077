"""What the submission server accepts: aiosmtpd handler hooks, each a short decision.

- EHLO: the extensions; AUTH only once TLS is up (unless configured otherwise).
- MAIL: only with a credential (RFC 4954 §6: 530 5.7.0 otherwise; no open relay), and only
  from an address the credential may use: a sender its own address, an API key or a trusted
  network any address on a verified domain of the account.
- RCPT: at most ``MAX_RECIPIENTS`` (RFC 5321 §4.5.3.1.10: 452, the client sends the rest in
  another transaction).
- DATA: the From header checked like MAIL FROM, a Received field put on top (RFC 5321 §4.4),
  then the same intake as the API. ``250`` only once the intake has committed the email; a
  fault in the message itself (a header line that is no field) is a 5xx, never a 4xx, or the
  client would send the same bytes again forever (RFC 5321 §4.2.1).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiosmtpd.smtp import Envelope, Session

from posthorn.domain.addresses import AddressError, parse_address
from posthorn.errors import PosthornError
from posthorn.mime.dkim_canon import DkimError
from posthorn.mime.parse import first, read_headers
from posthorn.services.admission import Accepted
from posthorn.services.container import Services
from posthorn.services.intake import RawSubmission
from posthorn.settings import Settings
from posthorn.smtp import replies
from posthorn.smtp.auth import Credential, loggable_user
from posthorn.smtp.received import protocol_name, received_field

if TYPE_CHECKING:
    from posthorn.smtp.protocol import SubmissionSMTP

log = logging.getLogger("posthorn.smtp")

SOURCE = "smtp"
Submit = Callable[[RawSubmission], Awaitable[Accepted]]
# A verified domain is remembered this long for the check at MAIL FROM, which is only an early
# answer: the intake checks the domain again, authoritatively, with the message.
VERIFIED_TTL = 30.0
VERIFIED_MAX = 10_000


class VerifiedDomains:
    """A short-lived memory of (account, domain) pairs found verified."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._until: dict[tuple[str, str], float] = {}

    async def verified(self, account_id: str, domain: str) -> bool:
        key = (account_id, domain)
        now = time.monotonic()
        if self._until.get(key, 0.0) > now:
            return True
        if await self._services.domains.sending_domain(account_id, domain) is None:
            self._until.pop(key, None)
            return False
        if len(self._until) >= VERIFIED_MAX:
            self._until.clear()
        self._until[key] = now + VERIFIED_TTL
        return True


def sender_problem(credential: Credential, address: str) -> str | None:
    """Why this credential may not use ``address`` as MAIL FROM (domain aside), if it may not."""
    if credential.sender_address is None:
        return None
    if address.lower() != credential.sender_address.lower():
        return replies.sender_not_owned(address, credential.login)
    return None


def from_header_problem(credential: Credential, message: bytes) -> str | None:
    """For a sender credential: the From header must be its own address too.

    A missing or unreadable From is left to the intake, which refuses it with its own words;
    for other credentials the intake checks the From domain.
    """
    if credential.sender_address is None:
        return None
    value = first(read_headers(message), "from")
    if value is None:
        return None
    try:
        author = parse_address(value)
    except AddressError:
        return None
    if author.email.lower() != credential.sender_address.lower():
        return replies.from_not_owned(author.email, credential.login)
    return None


def non_ascii_without_smtputf8(address: str, envelope: Envelope) -> str | None:
    # RFC 6531 §3.5: a non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM.
    if address.isascii() or envelope.smtp_utf8:
        return None
    return "553 5.6.7 Non-ASCII address without the SMTPUTF8 parameter"


class SubmissionHandler:
    """aiosmtpd hooks; ``server`` is the session's :class:`SubmissionSMTP`."""

    def __init__(
        self, settings: Settings, services: Services, submit: Submit | None = None
    ) -> None:
        self._settings = settings
        self._services = services
        self._domains = VerifiedDomains(services)
        # The intake of this process, or the link to the process that commits for it.
        self._submit_raw = submit or services.intake.submit_raw

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return replies.ehlo_lines(
            self._settings.hostname,
            size=server.submission.size_limit,
            starttls=server.starttls_offered,
            auth=replies.AUTH_MECHANISMS if server.offers_auth else (),
        )

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        credential = server.credential
        if credential is None:
            return replies.AUTH_REQUIRED
        problem = non_ascii_without_smtputf8(address, envelope)
        if problem is not None:
            return problem
        try:
            sender = parse_address(address)
        except AddressError:
            return "553 5.1.7 Bad sender address syntax"
        problem = sender_problem(credential, sender.email)
        if problem is not None:
            return problem
        if credential.sender_address is None and not await self._domains.verified(
            credential.account_id, sender.domain
        ):
            return replies.domain_not_verified(sender.domain)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self._settings.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        problem = non_ascii_without_smtputf8(address, envelope)
        if problem is not None:
            return problem
        try:
            parse_address(address)
        except AddressError:
            return "553 5.1.3 Bad recipient address syntax"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SubmissionSMTP, session: Session, envelope: Envelope
    ) -> str:
        credential = server.credential
        message = envelope.original_content
        if credential is None or not envelope.mail_from or message is None:
            return replies.NEED_MAIL
        try:
            if message[:1] in (b" ", b"\t"):
                # RFC 5322 §2.2.3: such a line continues the field above it, and above it
                # goes the Received field, which must not take the author's line in.
                raise DkimError("the message starts with a folded continuation line")
            problem = from_header_problem(credential, message)
        except DkimError as exc:
            problem = replies.refusal(replies.malformed(exc))
        if problem is not None:
            self._log_refused(server, credential, problem)
            return problem
        trace = received_field(
            helo=session.host_name or "",
            ip=server.client_ip,
            by=self._settings.hostname,
            protocol=protocol_name(
                utf8=envelope.smtp_utf8,
                tls=server.tls_active,
                authenticated=credential.kind != "trusted",
            ),
            tls=server.tls_description(),
            recipients=list(envelope.rcpt_tos),
            when=datetime.now(UTC),
        )
        submission = RawSubmission(
            account_id=credential.account_id,
            source=SOURCE,
            mail_from=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            message=trace + message,
            extra_limits=credential.limits,
            api_key_id=credential.api_key_id,
        )
        try:
            accepted = await self._submit(submission, server)
        except PosthornError as exc:
            reply = replies.refusal(exc)
            self._log_refused(server, credential, reply)
            return reply
        except DkimError as exc:  # the intake could not read the header
            reply = replies.refusal(replies.malformed(exc))
            self._log_refused(server, credential, reply)
            return reply
        except Exception:
            log.exception(
                "smtp submission failed peer=%s",
                server.client_ip,
                extra={"action": "smtp_error", "peer": server.client_ip},
            )
            return replies.INTERNAL
        log.info(
            "smtp queued id=%s account=%s user=%s peer=%s recipients=%d size=%d",
            accepted.id,
            credential.account_id,
            loggable_user(credential.login),
            server.client_ip,
            len(submission.recipients),
            len(submission.message),
            extra={
                "action": "smtp_queued",
                "email_id": accepted.id,
                "account_id": credential.account_id,
                "peer": server.client_ip,
            },
        )
        return replies.queued(accepted.id)

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp session error: %r", error, exc_info=error, extra={"action": "smtp_error"})
        return replies.INTERNAL

    async def _submit(self, submission: RawSubmission, server: SubmissionSMTP) -> Accepted:
        """The intake's answer. If the client leaves meanwhile, the intake still finishes (the
        email may be queued although the client was not told; delivery is at-least-once)."""
        task = asyncio.ensure_future(self._submit_raw(submission))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            peer = server.client_ip
            task.add_done_callback(lambda done: _log_orphan(done, peer))
            raise

    @staticmethod
    def _log_refused(server: SubmissionSMTP, credential: Credential, reply: str) -> None:
        log.info(
            "smtp refused account=%s user=%s peer=%s reply=%s",
            credential.account_id,
            loggable_user(credential.login),
            server.client_ip,
            reply,
            extra={
                "action": "smtp_refused",
                "account_id": credential.account_id,
                "peer": server.client_ip,
            },
        )


def _log_orphan(task: asyncio.Future[Accepted], peer: str) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is None:
        log.warning(
            "smtp client left before the reply; queued id=%s peer=%s",
            task.result().id,
            peer,
            extra={"action": "smtp_orphan_queued", "peer": peer},
        )
    elif not isinstance(error, PosthornError):
        log.error("smtp submission failed after the client left: %r", error, exc_info=error)
