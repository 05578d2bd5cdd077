"""One SMTP client session: connect, greet, secure, authenticate; then transactions.

aiosmtplib does the connection, the reply framing and TLS. The session is set up here
(EHLO, STARTTLS, AUTH, each step with its own timeout) and checked again with RSET before
reuse; the transactions it carries are :mod:`posthorn.delivery.transaction`.

A remote problem leaves a method as :class:`~posthorn.delivery.peer.StepFailed`, carrying the
result to report and whether the next MX host is worth trying; no library exception escapes
for a remote problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, fields, replace
from typing import Final

import aiosmtplib
from aiosmtplib import SMTPResponse

from posthorn.delivery.peer import Peer, StepFailed, TlsFailed, describe
from posthorn.delivery.tls import TlsPolicy, is_tls_error
from posthorn.delivery.transcript import Transcript
from posthorn.domain.replies import classify_reply, reply_text
from posthorn.domain.results import SoftFail

__all__ = ["MAX_CONNECTION_AGE", "MAX_MESSAGES_PER_CONNECTION", "SmtpSession", "SmtpTimeouts"]

# Postfix's smtp_connection_reuse_time_limit: a long-lived session ends up on a stale MX
# choice and monopolises the receiver's per-client budget.
MAX_CONNECTION_AGE: Final = 300.0
# Many receivers refuse more messages per session than this (421 "too many messages").
MAX_MESSAGES_PER_CONNECTION: Final = 100


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
        self.in_transaction = False

    @property
    def client(self) -> aiosmtplib.SMTP:
        return self._client

    @property
    def timeouts(self) -> SmtpTimeouts:
        return self._timeouts

    @property
    def reusable(self) -> bool:
        return (
            self._client.is_connected
            and not self.in_transaction
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
            local_hostname=helo_name,
            timeout=timeouts.command,
            use_tls=implicit,
            start_tls=False,
            tls_context=tls.context if implicit else None,
        )
        sock: socket.socket | None = None
        try:
            if implicit and tls.server_name not in (None, peer.address):
                # aiosmtplib takes the address to connect to and the name the certificate must
                # carry (and SNI) from one ``hostname``; the address here is the one the caller
                # checked (an account's relay), the name the relay's.
                sock = await _connect_socket(peer.address, peer.port, timeouts.connect)
                greeting = await client.connect(
                    hostname=tls.server_name, sock=sock, timeout=timeouts.connect
                )
            else:
                greeting = await client.connect(
                    hostname=peer.address, port=peer.port, timeout=timeouts.connect
                )
        except aiosmtplib.SMTPConnectResponseError as exc:
            transcript.reply(exc.code, exc.message)
            reply = SMTPResponse(exc.code, exc.message)
            result = peer.refused(transcript, "greeting", reply, about_recipient=False)
            raise StepFailed(result, next_host=True) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            if sock is not None:
                sock.close()
            if implicit and is_tls_error(exc):
                raise TlsFailed(peer, f"TLS handshake failed: {describe(exc)}") from exc
            reason = f"connection to {peer.host} [{peer.address}]:{peer.port} failed: "
            transcript.note(reason + describe(exc))
            raise StepFailed(peer.soft(transcript, reason + describe(exc)), next_host=True) from exc
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
            transcript.note(f"RSET failed: {describe(exc)}")
            self.abort()
            return False
        transcript.reply(response.code, response.message)
        if response.code != 250:
            self.abort()
            return False
        return True

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
        reply = await self.command("EHLO", [f"EHLO {helo_name}"], timeout, transcript)
        if reply.code == 250:
            self._client.last_ehlo_response = reply
            return
        if not self._client.is_connected:
            raise self.refusal(reply, "EHLO", transcript, about_recipient=False, next_host=True)
        # RFC 5321 §3.2: a server that does not know EHLO gets HELO.
        helo = await self.command("HELO", [f"HELO {helo_name}"], timeout, transcript)
        if helo.code != 250:
            raise self.refusal(helo, "HELO", transcript, about_recipient=False, next_host=True)
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
                raise self.refusal(
                    reply, "STARTTLS", transcript, about_recipient=False, next_host=True
                ) from exc
            transcript.note("continuing without TLS")
            return
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.abort()
            reason = f"TLS handshake failed: {describe(exc)}"
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
            reason = f"relay authentication failed: {describe(exc)}"
            transcript.note(reason)
            raise StepFailed(self.peer.soft(transcript, reason), next_host=False) from exc
        transcript.reply(reply.code, reply.message)

    # Helpers.

    async def command(
        self,
        stage: str,
        words: list[str],
        limit: float,
        transcript: Transcript,
        *,
        about: str | None = None,
    ) -> SMTPResponse:
        """Send one command and read its reply, recorded (``about`` one recipient); a lost
        connection or a timeout is StepFailed, a reply of any kind is returned."""
        line = " ".join(words)
        transcript.command(line, about=about)
        try:
            reply = await self._client.execute_command(
                *(word.encode("utf-8") for word in words), timeout=limit
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.abort()
            reason = f"{stage} failed: {describe(exc)}"
            transcript.note(reason)
            raise StepFailed(self.peer.soft(transcript, reason), next_host=True) from exc
        transcript.reply(reply.code, reply.message, about=about)
        return reply

    def expect(
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
        raise self.refusal(reply, stage, transcript, about_recipient=about_recipient)

    def refusal(
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
        self.in_transaction = False
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

    def protocol(self) -> aiosmtplib.protocol.SMTPProtocol:
        protocol = self._client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("not connected")
        return protocol


async def _connect_socket(address: str, port: int, within: float) -> socket.socket:
    """A non-blocking TCP socket connected to ``address`` (an IP), within ``within`` seconds."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(within):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock
