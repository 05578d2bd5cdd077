"""One mail transaction on an open session: MAIL FROM, an RCPT TO per recipient, DATA.

RFC 5321 §3.3: the recipients of one message at one destination share a transaction, and each
RCPT is answered on its own. So the outcome is per recipient: one refused at RCPT (4xx or 5xx)
is settled by that reply while the others go on to DATA; when none is accepted, no DATA is
sent. A failure of MAIL, DATA or the final dot, or a lost connection, is every remaining
recipient's. Each step has its own RFC 5321 §4.5.3.2 timeout, and a connection lost *after*
the final dot (the message may have been delivered, RFC 1047) is told apart from one lost
before it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Final, Protocol, cast

import aiosmtplib

from posthorn.delivery.envelope import OutgoingMessage
from posthorn.delivery.peer import StepFailed, describe, seen_by
from posthorn.delivery.session import SmtpSession
from posthorn.delivery.transcript import Transcript
from posthorn.domain.replies import classify_reply
from posthorn.domain.results import Attempt, HardFail, SoftFail

# The message is written in pieces, each once the previous one has left our buffers, so that
# little is still queued in user space when the final dot goes out (see _drain).
_CHUNK: Final = 64 * 1024

# What became of one recipient: the accepted reply's attempt, or why not (and whether another
# host may do better).
RecipientOutcome = Attempt | StepFailed


async def send(
    session: SmtpSession, message: OutgoingMessage, transcript: Transcript
) -> list[RecipientOutcome]:
    """One transaction for ``message``; an outcome per recipient, in order. Never raises for
    a remote problem."""
    outcomes: list[RecipientOutcome | None] = [None] * len(message.recipients)
    session.in_transaction = True
    try:
        await _mail(session, message, transcript)
        accepted = await _recipients(session, message, transcript, outcomes)
        if not accepted:
            # RFC 5321 §3.3: no recipient, no DATA. The dialogue is in step; the transaction
            # is cleared by RSET before the connection carries another one.
            session.in_transaction = False
            return _settled(outcomes)
        attempt = await _data(session, message, transcript, single=len(accepted) == 1)
        for position in accepted:
            outcomes[position] = dataclasses.replace(
                attempt, transcript=transcript.lines(message.recipients[position])
            )
    except StepFailed as failed:
        for position, outcome in enumerate(outcomes):
            if outcome is None:
                result = seen_by(failed.result, transcript, message.recipients[position])
                assert isinstance(result, SoftFail | HardFail)
                outcomes[position] = StepFailed(result, next_host=failed.next_host)
    return _settled(outcomes)


def _settled(outcomes: list[RecipientOutcome | None]) -> list[RecipientOutcome]:
    assert all(outcome is not None for outcome in outcomes), "every recipient has an outcome"
    return cast(list[RecipientOutcome], outcomes)


async def _mail(session: SmtpSession, message: OutgoingMessage, transcript: Transcript) -> None:
    options = _mail_options(session, message, transcript)
    sender = f"MAIL FROM:<{message.mail_from}>"
    limit = session.timeouts.mail
    reply = await session.command("MAIL FROM", [sender, *options], limit, transcript)
    session.expect(reply, 2, "MAIL FROM", transcript, about_recipient=False)


async def _recipients(
    session: SmtpSession,
    message: OutgoingMessage,
    transcript: Transcript,
    outcomes: list[RecipientOutcome | None],
) -> list[int]:
    """RCPT TO for each recipient, one after the other; the positions of those accepted. A
    refused one gets its outcome here."""
    accepted: list[int] = []
    for position, recipient in enumerate(message.recipients):
        words = [f"RCPT TO:<{recipient}>"]
        limit = session.timeouts.rcpt
        reply = await session.command("RCPT TO", words, limit, transcript, about=recipient)
        if reply.code // 100 == 2:
            accepted.append(position)
            continue
        if classify_reply(reply.code, reply.message) == "ok":
            # Positive, but not 2yz: the dialogue is out of step; expect() ends the session.
            session.expect(reply, 2, "RCPT TO", transcript, about_recipient=True)
        result = session.peer.refused(
            transcript, "RCPT TO", reply, about_recipient=True, recipient=recipient
        )
        # A temporary refusal may be this host's alone; a permanent one is the domain's.
        outcomes[position] = StepFailed(result, next_host=isinstance(result, SoftFail))
    return accepted


async def _data(
    session: SmtpSession, message: OutgoingMessage, transcript: Transcript, *, single: bool
) -> Attempt:
    """DATA, the message, the final dot; the attempt of the accepting reply."""
    timeouts = session.timeouts
    reply = await session.command("DATA", ["DATA"], timeouts.data_init, transcript)
    session.expect(reply, 3, "DATA", transcript, about_recipient=False)
    await _transfer(session, message, transcript)
    transcript.command(".")
    try:
        reply = await session.protocol().read_response(timeout=timeouts.data_end)
    except (aiosmtplib.SMTPException, OSError) as exc:
        session.abort()
        reason = (
            "no reply to the final dot: " + describe(exc) + "; the message may have been "
            "delivered (RFC 1047)"
        )
        transcript.note(reason)
        result = session.peer.soft(transcript, reason, possible_duplicate=True)
        raise StepFailed(result, next_host=False) from exc
    transcript.reply(reply.code, reply.message)
    # One reply for the whole message (RFC 5321 §4.1.1.4): it condemns an address only when
    # the transaction had just one.
    session.expect(reply, 2, "message", transcript, about_recipient=single)
    session.messages += 1
    session.in_transaction = False
    return session.peer.attempt(transcript, code=reply.code, message=reply.message)


def _mail_options(
    session: SmtpSession, message: OutgoingMessage, transcript: Transcript
) -> list[str]:
    client = session.client
    options: list[str] = []
    if client.supports_extension("size"):
        # RFC 1870 §4: the server states its limit; §6: the client declares the size.
        limit_text = client.esmtp_extensions.get("size", "").strip()
        limit = int(limit_text) if limit_text.isdigit() else 0
        if limit and message.size > limit:
            session.in_transaction = False
            reason = (
                f"the message ({message.size} bytes) exceeds the server's limit "
                f"of {limit} bytes (RFC 1870)"
            )
            raise _refused_here(session, transcript, reason, enhanced_code="5.3.4")
        options.append(f"SIZE={message.size}")
    if message.eight_bit and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")  # RFC 6152 §3
    if message.smtputf8:
        if not client.supports_extension("smtputf8"):
            session.in_transaction = False
            reason = "the address needs SMTPUTF8, which the server does not offer (RFC 6531)"
            raise _refused_here(session, transcript, reason, enhanced_code="5.6.7")
        options.append("SMTPUTF8")
    return options


def _refused_here(
    session: SmtpSession, transcript: Transcript, reason: str, *, enhanced_code: str
) -> StepFailed:
    """A permanent failure found on our side of the dialogue, before MAIL."""
    transcript.note(reason)
    attempt = dataclasses.replace(
        session.peer.attempt(transcript, message=reason), enhanced_code=enhanced_code
    )
    return StepFailed(HardFail(attempt, reason=reason), next_host=True)


async def _transfer(session: SmtpSession, message: OutgoingMessage, transcript: Transcript) -> None:
    """Write the message, then the final dot once every byte has left our buffers.

    Until the dot is written the server cannot have accepted the message, so a
    connection lost here is a plain failure that any host may retry at once.
    """
    transcript.note(f"message: {message.size} bytes")
    transport = session.client.transport
    try:
        protocol = session.protocol()
        # Duck-typed on purpose: uvloop's transports are not asyncio.WriteTransport
        # subclasses, yet they are what production runs on.
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("not connected")
        payload = memoryview(message.payload)
        for offset in range(0, len(payload), _CHUNK):
            protocol.write(bytes(payload[offset : offset + _CHUNK]))
            await _drain(protocol, cast(_Buffered, transport), session.timeouts.data_block)
        protocol.write(b".\r\n")
    except (aiosmtplib.SMTPException, OSError) as exc:
        session.abort()
        reason = f"sending the message failed: {describe(exc)}"
        transcript.note(reason)
        raise StepFailed(session.peer.soft(transcript, reason), next_host=True) from exc


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
