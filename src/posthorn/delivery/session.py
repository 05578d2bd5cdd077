"""One SMTP client session: connect, EHLO, STARTTLS, AUTH, then one transaction at a time.

aiosmtplib does the connection, the reply framing and TLS; the transaction is driven here so
that each step gets its own RFC 5321 §4.5.3.2 timeout and a connection lost *after* the final
dot (the message may have been delivered, RFC 1047) is told apart from one lost before it.

A remote problem leaves a method as :class:`StepFailed`, carrying the result to report and
whether the next MX host is worth trying; no library exception escapes for a remote problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, fields, replace
from typing import Final, Protocol, cast

import aiosmtplib
from aiosmtplib import SMTPResponse

from posthorn.delivery.envelope import OutgoingMessage
from posthorn.domain.replies import (
    classify_reply,
    parse_enhanced_code,
    parse_retry_hint,
    reply_text,
    should_suppress,
)
from posthorn.domain.results import Attempt, HardFail, SoftFail

# Postfix's smtp_connection_reuse_time_limit: a long-lived session ends up on a stale MX
# choice and monopolises the receiver's per-client budget.
MAX_CONNECTION_AGE: Final = 300.0
# Many receivers refuse more messages per session than this (421 "too many messages").
MAX_MESSAGES_PER_CONNECTION: Final = 100
# The message is written in pieces, each once the previous one has left our buffers, so that
# little is still queued in user space when the final dot goes out (see _drain).
_CHUNK: Final = 64 * 1024
_TRANSCRIPT_LINES: Final = 80
_TRANSCRIPT_WIDTH: Final = 300


@dataclass(frozen=True, slots=True)
class SmtpTimeouts:
    """Seconds to wait, from RFC 5321 §4.5.3.2 unless noted."""

    connect: float = 300.0  # §4.5.3.2.1 initial 220 message (the TCP connect included)
    mail: float = 300.0  # §4.5.3.2.2 MAIL command
    rcpt: float = 300.0  # §4.5.3.2.3 RCPT command
    data_init: float = 120.0  # §4.5.3.2.4 DATA initiation
    data_block: float = 180.0  # §4.5.3.2.5 data block: each chunk handed to TCP
    data_end: float = 600.0  # §4.5.3.2.6 DATA termination: the reply to the final dot
    command: float = 300.0  # EHLO, STARTTLS, AUTH: no figure in the RFC; as MAIL
    health: float = 30.0  # RSET on an idle connection: a live server answers at once
    quit: float = 10.0  # QUIT is a courtesy (§4.1.1.10); nothing depends on its reply

    @classmethod
    def scaled(cls, scale: float) -> SmtpTimeouts:
        base = cls()
        return cls(**{item.name: getattr(base, item.name) * scale for item in fields(cls)})


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """How a session uses TLS. ``context=None`` means plain text."""

    context: ssl.SSLContext | None
    implicit: bool = False  # TLS from the first byte (RFC 8314 §3.3)
    required: bool = False  # no TLS, no session: credentials are never sent in clear
    server_name: str | None = None  # SNI and, with a verifying context, the name checked
    # The destination's TLS policy when it is what requires TLS, as the failure reason names
    # it: "policy 'verify' for bank.example". Set together with ``required``.
    policy: str | None = None

    @property
    def verifies(self) -> bool:
        """Whether the certificate must chain to a trusted CA and name ``server_name``."""
        return (
            self.context is not None
            and self.context.verify_mode != ssl.CERT_NONE
            and self.context.check_hostname
        )

    def without_tls(self) -> TlsPolicy:
        return replace(self, context=None, implicit=False)


def opportunistic_tls_context() -> ssl.SSLContext:
    """A client context that encrypts without checking the certificate.

    RFC 7435 opportunistic security and RFC 3207 §4.1: an MX certificate rarely names the
    host we looked up, and encryption without authentication still beats plain text.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Transcript:
    """A short record of the SMTP dialogue: commands and replies, never content or secrets."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._dropped = 0

    def command(self, text: str) -> None:
        self._add("> " + text)

    def reply(self, code: int, message: str) -> None:
        self._add(f"< {code} " + " | ".join(message.splitlines()))

    def note(self, text: str) -> None:
        self._add("* " + text)

    def lines(self) -> tuple[str, ...]:
        if self._dropped:
            return (*self._lines, f"* ... {self._dropped} more lines")
        return tuple(self._lines)

    def _add(self, line: str) -> None:
        if len(self._lines) >= _TRANSCRIPT_LINES:
            self._dropped += 1
            return
        if len(line) > _TRANSCRIPT_WIDTH:
            line = line[: _TRANSCRIPT_WIDTH - 3] + "..."
        self._lines.append(line)


@dataclass(slots=True)
class Peer:
    """The remote side of a session, as far as it is known yet."""

    host: str
    address: str
    port: int
    tls_version: str | None = None
    certificate_name: str | None = None  # the name its certificate was verified for

    def attempt(
        self, transcript: Transcript, *, code: int | None = None, message: str = ""
    ) -> Attempt:
        return Attempt(
            remote_host=self.host,
            remote_ip=self.address,
            tls_version=self.tls_version,
            code=code,
            enhanced_code=parse_enhanced_code(message) if code is not None else None,
            message=reply_text(message) if code is not None else message,
            transcript=transcript.lines(),
        )

    def soft(
        self, transcript: Transcript, reason: str, *, possible_duplicate: bool = False
    ) -> SoftFail:
        return SoftFail(
            self.attempt(transcript, message=reason),
            reason=reason,
            possible_duplicate=possible_duplicate,
        )

    def refused(
        self, transcript: Transcript, stage: str, reply: SMTPResponse, *, about_recipient: bool
    ) -> SoftFail | HardFail:
        """The result for a negative reply at ``stage``."""
        code, message = reply
        attempt = self.attempt(transcript, code=code, message=message)
        reason = f"{stage} refused: {code} {attempt.message}".rstrip()
        if classify_reply(code, message) == "permanent":
            suppress = about_recipient and should_suppress(code, message)
            return HardFail(attempt, reason=reason, suppress=suppress)
        return SoftFail(attempt, reason=reason, retry_after=parse_retry_hint(message))


class StepFailed(Exception):
    """A step did not succeed; ``result`` is what to report if no other host does better."""

    def __init__(self, result: SoftFail | HardFail, *, next_host: bool) -> None:
        super().__init__(result.reason)
        self.result = result
        self.next_host = next_host


class TlsFailed(Exception):
    """The TLS handshake failed; the connection is closed. The caller may retry without TLS."""

    def __init__(self, peer: Peer, reason: str) -> None:
        super().__init__(reason)
        self.peer = peer
        self.reason = reason


class SmtpSession:
    """An open, greeted (and possibly encrypted and authenticated) SMTP connection."""

    def __init__(self, client: aiosmtplib.SMTP, peer: Peer, timeouts: SmtpTimeouts) -> None:
        self._client = client
        self._timeouts = timeouts
        self.peer = peer
        self.opened_at = time.monotonic()
        self.messages = 0
        # True while a transaction is under way: if it ends by an exception the server's
        # state is unknown and the connection must not be reused.
        self._in_transaction = False

    @property
    def reusable(self) -> bool:
        return (
            self._client.is_connected
            and not self._in_transaction
            and self.messages < MAX_MESSAGES_PER_CONNECTION
            and time.monotonic() - self.opened_at < MAX_CONNECTION_AGE
        )

    def secure_enough(self, tls: TlsPolicy) -> bool:
        """Whether this connection is as safe as a new one opened under ``tls`` would be.

        Deliveries under different policies share the connections to one address: one made
        under ``may`` (perhaps in plain text, or with a certificate nobody checked), or verified
        for another MX name, must not carry mail whose policy asks for more.
        """
        if not tls.required:
            return True
        if tls.verifies:
            return tls.server_name is not None and self.peer.certificate_name == tls.server_name
        return self.peer.tls_version is not None

    @classmethod
    async def open(
        cls,
        peer: Peer,
        *,
        helo_name: str,
        tls: TlsPolicy,
        credentials: tuple[str, str] | None,
        timeouts: SmtpTimeouts,
        transcript: Transcript,
    ) -> SmtpSession:
        """Connect, greet, secure and authenticate; raises StepFailed or TlsFailed."""
        implicit = tls.implicit and tls.context is not None
        transcript.note(
            f"connect {peer.host} [{peer.address}]:{peer.port}"
            + (" with implicit TLS" if implicit else "")
        )
        client = aiosmtplib.SMTP(
            hostname=peer.address,
            port=peer.port,
            local_hostname=helo_name,
            timeout=timeouts.command,
            use_tls=implicit,
            start_tls=False,
            tls_context=tls.context if implicit else None,
        )
        try:
            greeting = await client.connect(timeout=timeouts.connect)
        except aiosmtplib.SMTPConnectResponseError as exc:
            transcript.reply(exc.code, exc.message)
            reply = SMTPResponse(exc.code, exc.message)
            result = peer.refused(transcript, "greeting", reply, about_recipient=False)
            raise StepFailed(result, next_host=True) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            if implicit and _is_tls_error(exc):
                raise TlsFailed(peer, f"TLS handshake failed: {_describe(exc)}") from exc
            reason = f"connection to {peer.host} [{peer.address}]:{peer.port} failed: "
            transcript.note(reason + _describe(exc))
            raise StepFailed(
                peer.soft(transcript, reason + _describe(exc)), next_host=True
            ) from exc
        session = cls(client, peer, timeouts)
        peername = session._transport_info("peername")
        if isinstance(peername, tuple):
            peer.address = str(peername[0])
        if implicit:
            session._note_tls(tls, transcript)
        transcript.reply(greeting.code, greeting.message)
        try:
            await session._hello(helo_name, transcript)
            if not implicit and tls.context is not None:
                await session._starttls(tls, helo_name, transcript)
            if credentials is not None:
                await session._authenticate(credentials, transcript)
        except BaseException:
            client.close()
            raise
        return session

    async def reset(self, transcript: Transcript) -> bool:
        """Check and reset a reused connection with RSET; False when it is not usable."""
        tls = self.peer.tls_version or "no TLS"
        transcript.note(
            f"reuse connection to {self.peer.host} [{self.peer.address}]:{self.peer.port} "
            f"({tls}, {self.messages} sent)"
        )
        if not self._client.is_connected:
            transcript.note("the server had closed it")
            return False
        transcript.command("RSET")
        try:
            response = await self._client.execute_command(b"RSET", timeout=self._timeouts.health)
        except (aiosmtplib.SMTPException, OSError) as exc:
            transcript.note(f"RSET failed: {_describe(exc)}")
            self.abort()
            return False
        transcript.reply(response.code, response.message)
        if response.code != 250:
            self.abort()
            return False
        return True

    async def send(self, message: OutgoingMessage, transcript: Transcript) -> Attempt:
        """One MAIL/RCPT/DATA transaction; the accepted reply's attempt, or StepFailed."""
        timeouts = self._timeouts
        self._in_transaction = True
        options = self._mail_options(message, transcript)
        sender = f"MAIL FROM:<{message.mail_from}>"
        reply = await self._command("MAIL FROM", [sender, *options], timeouts.mail, transcript)
        self._expect(reply, 2, "MAIL FROM", transcript, about_recipient=False)
        recipient = f"RCPT TO:<{message.recipient}>"
        reply = await self._command("RCPT TO", [recipient], timeouts.rcpt, transcript)
        self._expect(reply, 2, "RCPT TO", transcript, about_recipient=True)
        reply = await self._command("DATA", ["DATA"], timeouts.data_init, transcript)
        self._expect(reply, 3, "DATA", transcript, about_recipient=False)
        await self._transfer(message, transcript)
        transcript.command(".")
        try:
            reply = await self._protocol().read_response(timeout=timeouts.data_end)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.abort()
            reason = (
                "no reply to the final dot: " + _describe(exc) + "; the message may have been "
                "delivered (RFC 1047)"
            )
            transcript.note(reason)
            result = self.peer.soft(transcript, reason, possible_duplicate=True)
            raise StepFailed(result, next_host=False) from exc
        transcript.reply(reply.code, reply.message)
        self._expect(reply, 2, "message", transcript, about_recipient=True)
        self.messages += 1
        self._in_transaction = False
        return self.peer.attempt(transcript, code=reply.code, message=reply.message)

    async def aclose(self) -> None:
        """QUIT politely (RFC 5321 §4.1.1.10), briefly; then close. Never raises."""
        if self._client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self._client.execute_command(b"QUIT", timeout=self._timeouts.quit)
        self.abort()

    def abort(self) -> None:
        self._client.close()

    # The steps.

    async def _hello(self, helo_name: str, transcript: Transcript) -> None:
        timeout = self._timeouts.command
        reply = await self._command("EHLO", [f"EHLO {helo_name}"], timeout, transcript)
        if reply.code == 250:
            self._client.last_ehlo_response = reply
            return
        if not self._client.is_connected:
            raise self._refusal(reply, "EHLO", transcript, about_recipient=False, next_host=True)
        # RFC 5321 §3.2: a server that does not know EHLO gets HELO.
        helo = await self._command("HELO", [f"HELO {helo_name}"], timeout, transcript)
        if helo.code != 250:
            raise self._refusal(helo, "HELO", transcript, about_recipient=False, next_host=True)
        self._client.last_helo_response = helo

    async def _starttls(self, tls: TlsPolicy, helo_name: str, transcript: Transcript) -> None:
        if not self._client.supports_extension("starttls"):
            if tls.policy is not None:
                # RFC 3463 §3.8 X.7.4: security features not supported.
                detail = "the server does not offer STARTTLS"
                raise await self._policy_unmet(tls.policy, detail, "4.7.4", transcript)
            if tls.required:
                reason = "the server does not offer STARTTLS; credentials are never sent in clear"
                transcript.note(reason)
                raise StepFailed(self.peer.soft(transcript, reason), next_host=True)
            return
        transcript.command("STARTTLS")
        try:
            reply = await self._client.starttls(
                server_hostname=tls.server_name,
                tls_context=tls.context,
                timeout=self._timeouts.command,
            )
        except aiosmtplib.SMTPResponseException as exc:
            # RFC 3207 §4: e.g. 454 TLS not available; the session goes on in plain text.
            transcript.reply(exc.code, exc.message)
            if tls.policy is not None:
                # Temporary whatever the reply's class: the refusal is the server's state, the
                # requirement ours (RFC 3463 §3.8 X.7.4).
                detail = f"STARTTLS refused: {exc.code} {reply_text(exc.message)}".rstrip()
                raise await self._policy_unmet(tls.policy, detail, "4.7.4", transcript) from exc
            if tls.required or not self._client.is_connected:
                reply = SMTPResponse(exc.code, exc.message)
                raise self._refusal(
                    reply, "STARTTLS", transcript, about_recipient=False, next_host=True
                ) from exc
            transcript.note("continuing without TLS")
            return
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.abort()
            reason = f"TLS handshake failed: {_describe(exc)}"
            if tls.policy is not None:
                # A certificate that does not verify ends here too: with a verifying context
                # the check is part of the handshake (RFC 3207 §4.1). RFC 3463 §3.8 X.7.5:
                # cryptographic failure.
                raise await self._policy_unmet(tls.policy, reason, "4.7.5", transcript) from exc
            transcript.note(reason)
            raise TlsFailed(self.peer, reason) from exc
        transcript.reply(reply.code, reply.message)
        self._note_tls(tls, transcript)
        # RFC 3207 §4.2: forget what the server said before TLS and greet again.
        await self._hello(helo_name, transcript)

    async def _authenticate(self, credentials: tuple[str, str], transcript: Transcript) -> None:
        if not self._client.supports_extension("auth"):
            reason = "the relay does not offer AUTH (RFC 4954)"
            transcript.note(reason)
            raise StepFailed(self.peer.soft(transcript, reason), next_host=False)
        methods = ", ".join(self._client.supported_auth_methods) or "none we support"
        transcript.command(f"AUTH ({methods}; credentials not recorded)")
        username, password = credentials
        try:
            reply = await self._client.login(username, password, timeout=self._timeouts.command)
        except aiosmtplib.SMTPResponseException as exc:
            transcript.reply(exc.code, exc.message)
            attempt = self.peer.attempt(transcript, code=exc.code, message=exc.message)
            # A refused login is our configuration, not the recipient's fault: keep the
            # message queued until the credentials are fixed.
            reason = f"relay authentication failed: {exc.code} {attempt.message}"
            raise StepFailed(SoftFail(attempt, reason=reason), next_host=False) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            reason = f"relay authentication failed: {_describe(exc)}"
            transcript.note(reason)
            raise StepFailed(self.peer.soft(transcript, reason), next_host=False) from exc
        transcript.reply(reply.code, reply.message)

    def _mail_options(self, message: OutgoingMessage, transcript: Transcript) -> list[str]:
        options: list[str] = []
        if self._client.supports_extension("size"):
            # RFC 1870 §4: the server states its limit; §6: the client declares the size.
            limit_text = self._client.esmtp_extensions.get("size", "").strip()
            limit = int(limit_text) if limit_text.isdigit() else 0
            if limit and message.size > limit:
                self._in_transaction = False
                reason = (
                    f"the message ({message.size} bytes) exceeds the server's limit "
                    f"of {limit} bytes (RFC 1870)"
                )
                transcript.note(reason)
                attempt = replace(
                    self.peer.attempt(transcript, message=reason), enhanced_code="5.3.4"
                )
                raise StepFailed(HardFail(attempt, reason=reason), next_host=True)
            options.append(f"SIZE={message.size}")
        if message.eight_bit and self._client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")  # RFC 6152 §3
        if message.smtputf8:
            if not self._client.supports_extension("smtputf8"):
                self._in_transaction = False
                reason = "the address needs SMTPUTF8, which the server does not offer (RFC 6531)"
                transcript.note(reason)
                attempt = replace(
                    self.peer.attempt(transcript, message=reason), enhanced_code="5.6.7"
                )
                raise StepFailed(HardFail(attempt, reason=reason), next_host=True)
            options.append("SMTPUTF8")
        return options

    async def _transfer(self, message: OutgoingMessage, transcript: Transcript) -> None:
        """Write the message, then the final dot once every byte has left our buffers.

        Until the dot is written the server cannot have accepted the message, so a
        connection lost here is a plain failure that any host may retry at once.
        """
        transcript.note(f"message: {message.size} bytes")
        protocol = self._protocol()
        transport = self._client.transport
        try:
            # Duck-typed on purpose: uvloop's transports are not asyncio.WriteTransport
            # subclasses, yet they are what production runs on.
            if transport is None or transport.is_closing():
                raise aiosmtplib.SMTPServerDisconnected("not connected")
            payload = memoryview(message.payload)
            for offset in range(0, len(payload), _CHUNK):
                protocol.write(bytes(payload[offset : offset + _CHUNK]))
                await _drain(protocol, cast(_Buffered, transport), self._timeouts.data_block)
            protocol.write(b".\r\n")
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.abort()
            reason = f"sending the message failed: {_describe(exc)}"
            transcript.note(reason)
            raise StepFailed(self.peer.soft(transcript, reason), next_host=True) from exc

    # Helpers.

    async def _command(
        self, stage: str, words: list[str], limit: float, transcript: Transcript
    ) -> SMTPResponse:
        line = " ".join(words)
        transcript.command(line)
        try:
            reply = await self._client.execute_command(
                *(word.encode("utf-8") for word in words), timeout=limit
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.abort()
            reason = f"{stage} failed: {_describe(exc)}"
            transcript.note(reason)
            raise StepFailed(self.peer.soft(transcript, reason), next_host=True) from exc
        transcript.reply(reply.code, reply.message)
        return reply

    def _expect(
        self,
        reply: SMTPResponse,
        first_digit: int,
        stage: str,
        transcript: Transcript,
        *,
        about_recipient: bool,
    ) -> None:
        """Raise StepFailed unless ``reply`` is the positive one for ``stage``.

        RFC 5321 §4.2.1: 2yz completes MAIL, RCPT and the message; 3yz (354) answers DATA.
        """
        if reply.code // 100 == first_digit:
            return
        if classify_reply(reply.code, reply.message) == "ok":
            self.abort()  # positive, but not the expected kind: the dialogue is out of step
        raise self._refusal(reply, stage, transcript, about_recipient=about_recipient)

    def _refusal(
        self,
        reply: SMTPResponse,
        stage: str,
        transcript: Transcript,
        *,
        about_recipient: bool,
        next_host: bool | None = None,
    ) -> StepFailed:
        """The StepFailed for a reply that is not the one wanted at ``stage``."""
        # A reply was read, so the dialogue is in step; RSET on reuse clears the transaction.
        self._in_transaction = False
        result = self.peer.refused(transcript, stage, reply, about_recipient=about_recipient)
        if next_host is None:
            # A temporary refusal may be this host's alone; a permanent one is the domain's.
            next_host = isinstance(result, SoftFail)
        return StepFailed(result, next_host=next_host)

    async def _policy_unmet(
        self, policy: str, detail: str, enhanced_code: str, transcript: Transcript
    ) -> StepFailed:
        """End the session because a destination's TLS policy cannot be met on it.

        The result is temporary, as Postfix defers: another MX, or this one later, may do
        better. Nothing more is sent but QUIT (RFC 3207 §4.1: a client that finds the
        privacy too weak quits).
        """
        reason = f"TLS required by {policy}: {detail}"
        transcript.note(reason)
        attempt = replace(
            self.peer.attempt(transcript, message=reason), enhanced_code=enhanced_code
        )
        await self.aclose()
        return StepFailed(SoftFail(attempt, reason=reason), next_host=True)

    def _transport_info(self, key: str) -> object:
        """Transport details, or None once the connection is gone (the next step reports it)."""
        try:
            return self._client.get_transport_info(key)
        except aiosmtplib.SMTPServerDisconnected:
            return None

    def _note_tls(self, tls: TlsPolicy, transcript: Transcript) -> None:
        ssl_object = self._transport_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            self.peer.tls_version = ssl_object.version()
            cipher = ssl_object.cipher()
            if tls.verifies and tls.server_name is not None:
                # The handshake checked the chain and the name (RFC 7672 §3.2, RFC 8461 §4.2).
                self.peer.certificate_name = tls.server_name
                checked = f"certificate verified for {tls.server_name}"
            elif tls.context is not None and tls.context.verify_mode != ssl.CERT_NONE:
                checked = "certificate verified"
            else:
                checked = "certificate not verified"
            name = cipher[0] if cipher else "?"
            transcript.note(f"TLS: {self.peer.tls_version}, {name}, {checked}")

    def _protocol(self) -> aiosmtplib.protocol.SMTPProtocol:
        protocol = self._client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("not connected")
        return protocol


class _Buffered(Protocol):
    def get_write_buffer_size(self) -> int: ...


async def _drain(
    protocol: aiosmtplib.protocol.SMTPProtocol, transport: _Buffered, block: float
) -> None:
    """Wait until the transport's write buffer is empty.

    RFC 5321 §4.5.3.2.5: the data-block timeout runs per chunk, so it restarts whenever the
    buffer shrinks. Under TLS this is the TLS layer's buffer: up to a chunk may still sit in
    the socket transport below it, which errs towards reporting a possible duplicate.
    """
    loop = asyncio.get_running_loop()
    # One turn of the loop even when nothing is pending: a transport whose connection broke
    # swallows writes silently, and only reports the loss from a callback.
    await asyncio.sleep(0)
    pending = transport.get_write_buffer_size()
    deadline = loop.time() + block
    delay = 0.001
    while True:
        if not protocol.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        if not pending:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"no progress sending the message for {block:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
        now = transport.get_write_buffer_size()
        if now < pending:
            deadline = loop.time() + block
        pending = now


def _is_tls_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a transport error."""
    cause = exc.__cause__
    if isinstance(cause, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError) or isinstance(cause, TimeoutError):
        detail = str(exc) or "timed out"
        return detail if "time" in detail.lower() else f"timed out ({detail})"
    for error in (exc, cause):
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {error.verify_message}"
        if isinstance(error, ssl.SSLError):
            # OpenSSL's reason, e.g. WRONG_VERSION_NUMBER, in words.
            return (error.reason or str(error)).lower().replace("_", " ")
    if isinstance(exc, aiosmtplib.SMTPException):
        return exc.message
    return str(exc) or exc.__class__.__name__
