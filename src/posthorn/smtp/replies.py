"""The submission server's replies: what it advertises, enhanced codes, and errors mapped.

Pure functions; the session code sends what they return. This is the one place where
Posthorn's exception tree (``posthorn.errors``) becomes SMTP reply codes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from posthorn.errors import InvalidRequest, LimitExceeded, PermissionDenied, PosthornError, TooLarge
from posthorn.mime.dkim_canon import DkimError

AUTH_MECHANISMS = ("PLAIN", "LOGIN")  # RFC 4616, and the LOGIN every client knows

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; leave room for the codes.
MAX_TEXT = 400

AUTH_REQUIRED = "530 5.7.0 Authentication required"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"  # RFC 4954 §6
AUTH_NO_SEND = "535 5.7.8 This API key may not send email (it is read_only)"
AUTH_THROTTLED = "421 4.7.0 Too many failed authentication attempts; try again later"
TLS_ACTIVE = "503 5.5.1 TLS is already active"  # RFC 3207 §4: no second STARTTLS
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
INTERNAL = "451 4.3.0 Internal error; try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"  # RFC 5321 §4.5.3.1.10
BARE_LINE_ENDING = (
    "550 5.6.0 Bare CR or LF in message; lines must end with CRLF (RFC 5321 section 2.3.8)"
)
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6)"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"

# RFC 2034 §3: once ENHANCEDSTATUSCODES is advertised, every 2xx, 4xx and 5xx reply other than
# the greeting and the HELO/EHLO answer starts its text with an RFC 3463 code. aiosmtpd writes
# several replies without one; these are the codes they mean.
_HAS_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_DEFAULT_ENHANCED = {
    "500": "5.5.2",  # syntax error, command unrecognised
    "501": "5.5.4",  # syntax error in parameters
    "502": "5.5.1",  # command not implemented
    "503": "5.5.1",  # bad sequence of commands
    "504": "5.5.4",
    "530": "5.7.0",
    "552": "5.3.4",  # message too big for system
    "553": "5.1.3",  # bad address syntax
    "555": "5.5.4",
    "454": "4.7.0",
}


def enhance(reply: str) -> str:
    """The reply with an RFC 3463 enhanced code after the basic one, if it lacks one."""
    code = reply[:3]
    if reply[:1] not in "245" or not code.isdigit() or _HAS_ENHANCED.match(reply):
        return reply
    enhanced = _DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
    separator = reply[3:4] or " "
    return f"{code}{separator}{enhanced} {reply[4:]}".rstrip()


def one_line(text: str) -> str:
    """Text safe inside a reply: one line, ASCII (any client can read it), not too long."""
    flat = " ".join(text.split())
    return flat.encode("ascii", "replace").decode("ascii")[:MAX_TEXT]


def queued(email_id: str) -> str:
    return f"250 2.0.0 Ok: queued as {email_id}"


def sender_not_owned(address: str, login: str) -> str:
    return one_line(f"553 5.7.1 <{address}>: sender address not owned by user {login}")


def from_not_owned(address: str, login: str) -> str:
    return one_line(f"553 5.7.1 <{address}>: From header address not owned by user {login}")


def domain_not_verified(domain: str) -> str:
    return one_line(
        f"553 5.7.1 The domain {domain} is not a verified sending domain of this account"
    )


def malformed(error: DkimError) -> InvalidRequest:
    """A message whose header cannot be read, as the refusal it is: the same bytes will not
    read better next time, so the answer is permanent (5xx), not "try again later"."""
    return InvalidRequest("message_malformed", field="message", detail=str(error))


def refusal(error: PosthornError) -> str:
    """The reply for an error the intake raised for a complete message."""
    text = one_line(str(error))
    if isinstance(error, LimitExceeded):
        # A 4xx: the client keeps the message and tries again later (RFC 5321 §4.2.1).
        return f"452 4.7.1 {text}"
    if isinstance(error, TooLarge):
        return f"552 5.3.4 {text}"
    if isinstance(error, PermissionDenied):
        return f"553 5.7.1 {text}"
    if isinstance(error, InvalidRequest):
        if error.field == "from" and error.code != "from_missing":
            return f"553 5.7.1 {text}"
        return f"550 5.6.0 {text}"
    return f"554 5.7.0 {text}"


def ehlo_lines(hostname: str, *, size: int, starttls: bool, auth: Sequence[str]) -> list[str]:
    """The EHLO answer (RFC 5321 §4.1.1.1): the name, then one service extension per line."""
    keywords = [
        f"SIZE {size}",  # RFC 1870
        "8BITMIME",  # RFC 6152
        "SMTPUTF8",  # RFC 6531
        "PIPELINING",  # RFC 2920
        "ENHANCEDSTATUSCODES",  # RFC 2034
    ]
    if starttls:
        keywords.append("STARTTLS")  # RFC 3207
    if auth:
        keywords.append("AUTH " + " ".join(auth))  # RFC 4954
    lines = [hostname, *keywords]
    return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]
