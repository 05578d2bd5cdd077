"""The remote side of an SMTP session, and how a step that fails there is reported.

A remote problem leaves a step as :class:`StepFailed`, carrying the result to report and
whether the next MX host is worth trying; :class:`TlsFailed` says the handshake broke and the
caller may try again in plain text. No library exception escapes for a remote problem.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib import SMTPResponse

from posthorn.delivery.transcript import Transcript
from posthorn.domain.replies import (
    classify_reply,
    parse_enhanced_code,
    parse_retry_hint,
    reply_text,
    should_suppress,
)
from posthorn.domain.results import Attempt, DeliveryResult, HardFail, SoftFail


@dataclass(slots=True)
class Peer:
    """The remote side of a session, as far as it is known yet."""

    host: str
    address: str
    port: int
    tls_version: str | None = None
    certificate_name: str | None = None  # the name its certificate was verified for

    def attempt(
        self,
        transcript: Transcript,
        *,
        code: int | None = None,
        message: str = "",
        recipient: str | None = None,
    ) -> Attempt:
        """What we know of this attempt; the transcript as ``recipient`` sees it."""
        return Attempt(
            remote_host=self.host,
            remote_ip=self.address,
            tls_version=self.tls_version,
            code=code,
            enhanced_code=parse_enhanced_code(message) if code is not None else None,
            message=reply_text(message) if code is not None else message,
            transcript=transcript.lines(recipient),
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
        self,
        transcript: Transcript,
        stage: str,
        reply: SMTPResponse,
        *,
        about_recipient: bool,
        recipient: str | None = None,
    ) -> SoftFail | HardFail:
        """The result for a negative reply at ``stage`` (``recipient``: the one it refused)."""
        code, message = reply
        attempt = self.attempt(transcript, code=code, message=message, recipient=recipient)
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


def seen_by(result: DeliveryResult, transcript: Transcript, recipient: str) -> DeliveryResult:
    """``result`` with the transcript as ``recipient`` sees it now: a failure shared by a
    transaction's recipients is reported to each without the others' RCPT lines."""
    attempt = dataclasses.replace(result.attempt, transcript=transcript.lines(recipient))
    return dataclasses.replace(result, attempt=attempt)


def describe(exc: BaseException) -> str:
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
