"""SMTP reply classification (RFC 5321 §4.2, RFC 3463): pure functions, no sockets."""

from __future__ import annotations

from datetime import timedelta

import pytest

from posthorn.domain.replies import (
    MAX_RETRY_HINT,
    classify_reply,
    parse_enhanced_code,
    parse_retry_hint,
    reply_text,
    should_suppress,
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("5.1.1 <bob@example.test>: Recipient address rejected", "5.1.1"),
        ("4.7.1 Greylisted", "4.7.1"),
        ("2.0.0 Ok: queued as 4Zx", "2.0.0"),
        ("5.1.10 Recipient address has null MX", "5.1.10"),
        ("550 5.7.1 whole line with the basic code", "5.7.1"),
        ("550-5.7.26 continuation form", "5.7.26"),
        ("5.01.001 leading zeros", "5.1.1"),
        ("  5.2.1 leading blanks", "5.2.1"),
        ("5.1.1\nsecond line", "5.1.1"),
        ("5.1.1", "5.1.1"),
        ("Requested action not taken: mailbox unavailable", None),
        ("3.1.1 not a class", None),
        ("5.1 too short", None),
        ("5.1.1.1 too long", None),
        ("5.1.1234 detail too long", None),
        ("version 5.1.1 later in the text", None),
        ("", None),
    ],
)
def test_parse_enhanced_code(message: str, expected: str | None) -> None:
    assert parse_enhanced_code(message) == expected


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (250, "2.0.0 Ok", "ok"),
        (251, "User not local; will forward", "ok"),
        (354, "End data with <CR><LF>.<CR><LF>", "ok"),
        (421, "4.3.2 Service shutting down", "temporary"),
        (450, "4.2.0 Greylisted", "temporary"),
        (451, "4.7.1 try later", "temporary"),
        (452, "4.5.3 Too many recipients", "temporary"),
        (550, "5.1.1 no such user", "permanent"),
        (554, "5.7.1 spam", "permanent"),
        (552, "5.3.4 Message size exceeds fixed limit", "permanent"),
        # RFC 5321 §4.5.3.1.10: 552 for too many recipients counts as 452.
        (552, "5.5.3 Too many recipients", "temporary"),
        (552, "Too many recipients in this transaction", "temporary"),
        # The basic code decides even when the enhanced code disagrees.
        (550, "4.7.1 odd server", "permanent"),
        (451, "5.7.1 odd server", "temporary"),
        # Not a valid reply: nothing proves the failure permanent.
        (-1, "Malformed SMTP response line", "temporary"),
        (199, "", "temporary"),
        (600, "", "temporary"),
    ],
)
def test_classify_reply(code: int, message: str, expected: str) -> None:
    assert classify_reply(code, message) == expected


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (550, "5.1.1 The email account that you tried to reach does not exist."),
        (550, "5.1.1 <bob@example.test>: Recipient address rejected: User unknown"),
        (550, "5.1.2 Host unknown (Name server: example.test: host not found)"),
        (553, "5.1.3 Bad recipient address syntax"),
        (550, "5.1.6 Mailbox has moved"),
        (556, "5.1.10 Recipient address has null MX"),
        (550, "5.2.1 The email account that you tried to reach is disabled."),
        (550, "User unknown"),
        (550, "Requested action not taken: no such user here"),
        (550, "5.0.0 <bob@example.test>... User unknown"),
        (554, "delivery error: dd This user doesn't have an account (mailbox unknown)"),
        (553, "sorry, no mailbox here by that name / unknown recipient"),
        (550, "5.1.0 Address rejected: mailbox not found"),
    ],
)
def test_address_level_failures_suppress(code: int, message: str) -> None:
    assert should_suppress(code, message) is True


@pytest.mark.parametrize(
    ("code", "message"),
    [
        # Policy, reputation and authentication: about us, not the address.
        (554, "5.7.1 Message rejected as spam"),
        (550, "5.7.1 Service unavailable, client host blocked using a blocklist"),
        (550, "5.7.26 Unauthenticated email is not accepted (DMARC)"),
        (550, "5.7.1 User unknown, but this is policy code"),
        # Size, content, protocol, mail system.
        (552, "5.3.4 Message size exceeds fixed maximum message size"),
        (554, "5.6.0 Message content rejected"),
        (500, "5.5.2 Syntax error"),
        (550, "5.4.1 Recipient address rejected: Access denied"),
        # Mailbox full and sender problems.
        (552, "5.2.2 Mailbox full"),
        (553, "5.1.8 Sender domain does not exist"),
        (550, "5.1.7 Bad sender address syntax"),
        # Texts that name the user but are about policy.
        (550, "User unknown or blocked due to spam reputation"),
        # Generic texts prove nothing.
        (550, "Requested action not taken: mailbox unavailable"),
        (554, "Transaction failed"),
        (551, "User not local; please try <forward@example.test>"),
        # Not permanent at all.
        (450, "4.1.1 User unknown (temporarily)"),
        (250, "2.1.5 Ok"),
        (552, "5.5.3 Too many recipients"),
    ],
)
def test_other_failures_do_not_suppress(code: int, message: str) -> None:
    assert should_suppress(code, message) is False


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("4.7.1 Greylisted, try again in 5 minutes", timedelta(minutes=5)),
        ("4.7.1 Please try again in 300 seconds", timedelta(seconds=300)),
        ("4.7.0 greylisted for 60s", timedelta(seconds=60)),
        ("Rate limited. Retry after 2 hours", timedelta(hours=2)),
        ("4.7.1 try it again in 10 min", timedelta(minutes=10)),
        ("Please wait 30 secs before resending", timedelta(seconds=30)),
        ("4.3.2 Try again in 1 hour\nsecond line", timedelta(hours=1)),
        ("TRY AGAIN IN 2 MINUTES", timedelta(minutes=2)),
        ("retry in 999999 hours", MAX_RETRY_HINT),
        ("4.7.1 Try again later", None),
        ("4.7.0 temporary failure 4.7.1", None),
        ("Mailbox busy, 5 minutes of silence please", None),
        ("", None),
    ],
)
def test_parse_retry_hint(message: str, expected: timedelta | None) -> None:
    assert parse_retry_hint(message) == expected


def test_reply_text_joins_lines_and_drops_repeated_codes() -> None:
    message = (
        "5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "5.1.1 double-checking the recipient's email address for typos."
    )
    assert reply_text(message) == (
        "5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos."
    )


def test_reply_text_keeps_lines_without_the_same_code() -> None:
    assert (
        reply_text("mx.example.test\nSIZE 1000\n8BITMIME") == "mx.example.test SIZE 1000 8BITMIME"
    )
    assert reply_text("4.7.1 first\n5.7.1 other") == "4.7.1 first 5.7.1 other"
    assert reply_text("") == ""
