"""The pure parts of the SMTP submission server: DATA reading, throttling, replies, Received."""

from __future__ import annotations

import asyncio
import inspect
import ssl
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult

from posthorn.domain.throttle import client_key
from posthorn.errors import InvalidRequest, LimitExceeded, PermissionDenied, TooLarge
from posthorn.smtp import construction, replies
from posthorn.smtp.auth import loggable_user, parse_plain
from posthorn.smtp.data import DataReader, Problem
from posthorn.smtp.received import address_literal, clean_helo, protocol_name, received_field


def read(
    stream: bytes, *, size_limit: int = 10_000, line_limit: int = 1001, piece: int = 0
) -> tuple[DataReader, int, bytes | Problem | None]:
    """Feed ``stream`` in pieces of ``piece`` bytes (all at once for 0); the reader, the bytes
    it took, and what it finished with (``None`` if the data has not ended)."""
    reader = DataReader(size_limit=size_limit, line_limit=line_limit)
    size = piece or len(stream) or 1
    taken = 0
    for start in range(0, len(stream), size):
        chunk = stream[start : start + size]
        used = reader.feed(chunk)
        taken += used
        if reader.done:
            break
    return reader, taken, reader.finish() if reader.done else None


# ── DATA ───────────────────────────────────────────────────────────────────────────────────

MESSAGE = b"Subject: x\r\n\r\n..leading dot\r\nends with a dot.\r\n.\r\n"


@pytest.mark.parametrize("piece", [0, 1, 2, 3, 4, 5, 7, 16])
def test_data_ends_at_crlf_dot_crlf_however_it_is_cut(piece: int) -> None:
    reader, taken, result = read(MESSAGE + b"QUIT\r\n", piece=piece)
    assert reader.done and taken == len(MESSAGE)  # the next command is not taken
    assert result == b"Subject: x\r\n\r\n.leading dot\r\nends with a dot.\r\n"


def test_empty_message() -> None:
    assert read(b".\r\nQUIT\r\n")[1:] == (3, b"")
    assert read(b"\r\n.\r\n")[1:] == (5, b"\r\n")


@pytest.mark.parametrize(
    "text",
    [b"text\n.\nMAIL FROM:<a@b.test>", b"\n.", b"\r.", b"a\rb", b".\n", b"x\r\n.\n"],
)
def test_bare_cr_or_lf_refuses_the_message(text: bytes) -> None:
    reader, _, result = read(b"Subject: x\r\n" + text + b"\r\nmore\r\n.\r\n")
    assert reader.done and result is Problem.BARE_LINE_ENDING


@pytest.mark.parametrize(
    "fake_end", [b"a\n.\n", b"a\n.\r\n", b"a\r.\r\n", b"a\r\n.\n", b"a\r\n.\r"]
)
def test_only_crlf_dot_crlf_ends_data(fake_end: bytes) -> None:
    # Whatever a lenient server might take for an end is text here: what follows is still DATA.
    stream = fake_end + b"MAIL FROM:<x@y.test>\r\nDATA\r\n"
    reader, taken, _ = read(stream)
    assert not reader.done and taken == len(stream)


def test_a_line_over_the_limit_is_refused() -> None:
    assert read(b"x" * 999 + b"\r\n.\r\n")[2] == b"x" * 999 + b"\r\n"
    assert read(b"x" * 1000 + b"\r\n.\r\n")[2] is Problem.LINE_TOO_LONG
    # The transparency dot is allowed on top (RFC 5321 §4.5.3.1.6 counts it).
    assert read(b"." * 999 + b"\r\n.\r\n")[2] == b"." * 998 + b"\r\n"
    assert read(b"." * 1000 + b"\r\n.\r\n")[2] is Problem.LINE_TOO_LONG


def test_too_big_keeps_nothing_and_runaway_is_flagged() -> None:
    reader = DataReader(size_limit=1000, line_limit=1001)
    for _ in range(20):
        reader.feed(b"z" * 98 + b"\r\n")
    assert reader.problem is Problem.TOO_BIG and not reader.runaway
    assert reader._parts == []  # memory: nothing kept once over the limit
    for _ in range(20):
        reader.feed(b"z" * 98 + b"\r\n")
    assert reader.runaway
    reader.feed(b".\r\n")
    assert reader.done and reader.finish() is Problem.TOO_BIG


def test_exactly_at_the_size_limit_is_accepted() -> None:
    body = b"y" * 98 + b"\r\n"
    assert read(body * 10 + b".\r\n", size_limit=1000)[2] == body * 10
    assert read(body * 10 + b"y\r\n.\r\n", size_limit=1000)[2] is Problem.TOO_BIG


def test_an_endless_line_keeps_no_more_than_the_limit() -> None:
    reader = DataReader(size_limit=10_000, line_limit=1001)
    for _ in range(100):
        reader.feed(b"w" * 1001)
    assert reader._parts == [] and reader.runaway


# ── throttle ───────────────────────────────────────────────────────────────────────────────


def test_throttle_counts_ipv6_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("[2001:db8:1:2::1%eth0]") == "2001:db8:1:2::/64"
    assert client_key("not an address") == "not an address"


# ── replies ────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("raw", "enhanced"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        (
            "552 Error: message size exceeds fixed maximum message size",
            "552 5.3.4 Error: message size exceeds fixed maximum message size",
        ),
        (
            "535 5.7.8 Authentication credentials invalid",
            "535 5.7.8 Authentication credentials invalid",
        ),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("334 ", "334 "),
    ],
)
def test_enhanced_codes_are_added_where_missing(raw: str, enhanced: str) -> None:
    assert replies.enhance(raw) == enhanced


def test_errors_map_to_smtp_replies() -> None:
    assert replies.refusal(LimitExceeded("quota_exceeded", retry_after=60, label="x", limit=1))[
        :9
    ] == ("452 4.7.1")
    assert replies.refusal(TooLarge(limit=10)).startswith("552 5.3.4")
    denied = replies.refusal(PermissionDenied("domain_not_verified", domain="other.test"))
    assert denied.startswith("553 5.7.1") and "other.test" in denied
    assert replies.refusal(InvalidRequest("invalid_address", field="from", value="x")).startswith(
        "553 5.7.1"
    )
    assert replies.refusal(InvalidRequest("from_missing", field="from")).startswith("550 5.6.0")
    assert replies.refusal(InvalidRequest("recipients_required", field="to")).startswith(
        "550 5.6.0"
    )


def test_reply_text_is_one_ascii_line() -> None:
    assert replies.one_line("a\r\nb\tc é") == "a b c ?"
    assert len(replies.one_line("x" * 5000)) == replies.MAX_TEXT


def test_ehlo_lines() -> None:
    lines = replies.ehlo_lines("mx.test", size=1000, starttls=True, auth=())
    assert lines[0] == "250-mx.test" and lines[-1] == "250 STARTTLS"
    assert "250-PIPELINING" in lines and "250-ENHANCEDSTATUSCODES" in lines
    lines = replies.ehlo_lines("mx.test", size=1000, starttls=False, auth=("PLAIN", "LOGIN"))
    assert lines[-1] == "250 AUTH PLAIN LOGIN" and "250-STARTTLS" not in lines


# ── credentials and Received ───────────────────────────────────────────────────────────────


def test_plain_credentials() -> None:
    assert parse_plain(b"\x00user@acme.test\x00secret") == ("user@acme.test", "secret")
    assert parse_plain(b"user@acme.test\x00user@acme.test\x00secret") == (
        "user@acme.test",
        "secret",
    )
    assert parse_plain(b"admin\x00user@acme.test\x00secret") is None  # acting for someone else
    assert parse_plain(b"\x00\x00secret") is None
    assert parse_plain(b"no separators") is None


def test_a_key_typed_as_user_name_is_not_logged() -> None:
    assert loggable_user("phk_abcdef") == "<redacted>"
    assert loggable_user("hello@acme.test") == "hello@acme.test"


def test_received_field() -> None:
    field = received_field(
        helo="client.example\r\nBcc: injected",
        ip="192.0.2.1",
        by="posthorn.test",
        protocol=protocol_name(utf8=False, tls=True, authenticated=True),
        tls="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
        recipients=["a@example.test"],
        when=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )
    assert field == (
        b"Received: from client.exampleBcc:injected ([192.0.2.1])\r\n"
        b"\tby posthorn.test (Posthorn) with ESMTPSA\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        b"\tfor <a@example.test>;\r\n"
        b"\tWed, 01 May 2024 12:00:00 +0000\r\n"
    )


def test_received_names_no_recipient_of_a_multi_recipient_message() -> None:
    field = received_field(
        helo="",
        ip="2001:db8::1",
        by="posthorn.test",
        protocol=protocol_name(utf8=True, tls=False, authenticated=False),
        tls=None,
        recipients=["a@example.test", "b@example.test"],
        when=datetime(2024, 5, 1, tzinfo=UTC),
    )
    assert field.startswith(b"Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])\r\n")
    assert b"with UTF8SMTP;" in field and b"for <" not in field


def test_helo_and_address_literals() -> None:
    assert clean_helo("[192.0.2.1]", "x") == "[192.0.2.1]"
    assert clean_helo("(;)", "[192.0.2.1]") == "[192.0.2.1]"
    assert address_literal("::ffff:192.0.2.1") == "[192.0.2.1]"
    assert address_literal("nonsense") == "[unknown]"


# ── cheap session construction ─────────────────────────────────────────────────────────────


class _Handler:
    async def handle_EHLO(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return "250 OK"


class _Session(SMTP):
    async def auth_PLAIN(self, _: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        return AuthResult(success=False)


def _comparable(value: Any, owner: object) -> Any:
    if inspect.ismethod(value):
        return ("method", value.__func__, value.__self__ is owner)
    if isinstance(value, Mapping):
        return {key: _comparable(item, owner) for key, item in value.items()}
    if isinstance(value, tuple):
        return tuple(_comparable(item, owner) for item in value)
    if isinstance(value, asyncio.StreamReader | asyncio.Future | weakref.ref):
        return type(value)
    return value


@pytest.mark.skipif(not construction.supported(), reason="aiosmtpd's own constructor is used")
@pytest.mark.parametrize("tls", [False, True])
def test_cheap_construction_sets_what_aiosmtpd_sets(tls: bool) -> None:
    loop = asyncio.new_event_loop()
    try:
        handler = _Handler()
        options: dict[str, Any] = {
            "data_size_limit": 1000,
            "hostname": "mx.test",
            "ident": "ESMTP test",
            "tls_context": ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) if tls else None,
            "timeout": 300.0,
            "auth_require_tls": True,
            "loop": loop,
        }
        slow = _Session.__new__(_Session)
        SMTP.__init__(
            slow,
            handler,
            enable_SMTPUTF8=True,
            decode_data=False,
            require_starttls=False,
            auth_required=False,
            **options,
        )
        fast = _Session.__new__(_Session)
        construction.init_session(fast, handler, **options)
        assert set(fast.__dict__) == set(slow.__dict__)
        for name in slow.__dict__:
            assert _comparable(fast.__dict__[name], fast) == _comparable(
                slow.__dict__[name], slow
            ), name
    finally:
        loop.close()


def test_received_dates_keep_their_time_zone() -> None:
    utc = datetime(2026, 5, 17, 9, 30, 15, 1, tzinfo=UTC)
    plus_two = utc.astimezone(timezone(timedelta(hours=2)))
    fields = [
        received_field(
            helo="c.test",
            ip="192.0.2.1",
            by="mx.test",
            protocol="ESMTP",
            tls=None,
            recipients=[],
            when=when,
        )
        for when in (utc, plus_two, utc.replace(microsecond=999_999))
    ]
    assert fields[0].endswith(b"Sun, 17 May 2026 09:30:15 +0000\r\n")
    assert fields[1].endswith(b"Sun, 17 May 2026 11:30:15 +0200\r\n")
    assert fields[2] == fields[0]
