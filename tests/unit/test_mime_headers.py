"""Header fields: encoded words, folding, address lists and dates."""

from __future__ import annotations

import email.policy
import email.utils
import random
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from posthorn.domain.addresses import Address
from posthorn.domain.encoded_words import MAX_WORD, decode_words, encode_words
from posthorn.mime.headers import (
    HeaderError,
    format_address_header,
    format_date,
    format_header,
)


def _parse(*fields: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(b"".join(fields) + b"\r\n")
    assert isinstance(message, EmailMessage)
    return message


def _lines(field: bytes) -> list[bytes]:
    assert field.endswith(b"\r\n")
    lines = field[:-2].split(b"\r\n")
    # Exactly one field: every line after the first is a continuation (RFC 5322 §2.2.3).
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:]), field
    assert b"\r" not in field.replace(b"\r\n", b"") and b"\n" not in field.replace(b"\r\n", b"")
    return lines


def _words(field: bytes) -> list[bytes]:
    return [word for word in field.split() if word.startswith(b"=?")]


def test_short_ascii_value_is_written_as_is() -> None:
    assert format_header("Subject", "Your receipt") == b"Subject: Your receipt\r\n"
    assert format_header("Subject", "") == b"Subject: \r\n"


def test_long_ascii_value_is_folded_at_white_space() -> None:
    value = " ".join(f"word{number}" for number in range(60))
    field = format_header("Subject", value)
    lines = _lines(field)
    assert len(lines) > 1
    assert all(len(line) <= 78 for line in lines)
    assert not _words(field)
    # Unfolding (RFC 5322 §2.2.3) removes only the CRLFs.
    assert field[:-2].replace(b"\r\n", b"") == f"Subject: {value}".encode()
    assert _parse(field)["Subject"] == value


def test_folding_keeps_runs_of_white_space() -> None:
    value = "a" * 60 + "    " + "b" * 20 + "  "
    field = format_header("Subject", value)
    assert all(line.strip() for line in _lines(field))
    assert field[:-2].replace(b"\r\n", b"") == f"Subject: {value}".encode()


@pytest.mark.parametrize(
    "value",
    [
        "Xin chào, đây là hóa đơn của bạn",
        "Ihre Bestellung ist unterwegs 🚚📦 — danke!",
        "ご注文ありがとうございます。領収書を添付します。",
        "订单确认 #12345",
        "Ваш заказ отправлен",
        "שלום עולם",
        "Tiếng Việt có dấu " * 17,
        "🎉" * 300,
        "a" * 299 + "é",
        "tab\tinside and trailing space é ",
        "control \x07 bell",
    ],
)
def test_non_ascii_value_becomes_short_encoded_words(value: str) -> None:
    field = format_header("Subject", value)
    assert field.isascii()
    lines = _lines(field)
    assert all(len(line) <= 78 for line in lines)
    words = _words(field)
    assert words and all(len(word) <= MAX_WORD for word in words)
    assert _parse(field)["Subject"] == value
    assert decode_words(field[len("Subject: ") : -2].decode().replace("\r\n", "")) == value


def test_word_too_long_for_a_line_is_encoded_so_it_can_be_split() -> None:
    value = "Reset: " + "x" * 300
    field = format_header("Subject", value)
    assert all(len(line) <= 78 for line in _lines(field))
    assert _parse(field)["Subject"] == value


def test_long_words_are_kept_whole_when_asked() -> None:
    url = "<https://example.com/unsubscribe/" + "u" * 200 + ">"
    field = format_header(
        "List-Unsubscribe", f"{url}, <mailto:u@example.com>", encode_long_words=False
    )
    assert url.encode() in field
    assert not _words(field)
    assert all(len(line) <= 998 for line in _lines(field))


def test_word_past_998_octets_is_refused_when_long_words_are_kept() -> None:
    with pytest.raises(HeaderError, match="998"):
        format_header("X-Data", "x" * 1000, encode_long_words=False)


def test_value_that_looks_like_an_encoded_word_is_encoded() -> None:
    value = "literal =?utf-8?q?hello?= text"
    field = format_header("Subject", value)
    assert b"=?utf-8?q?hello?=" not in field
    assert _parse(field)["Subject"] == value
    # "=?" alone, as in a URL query, is not an encoded word and stays readable.
    assert format_header("X-Link", "https://x.test/?a=?b") == b"X-Link: https://x.test/?a=?b\r\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("one\r\ntwo", "one two"),
        ("one\ntwo\rthree", "one two three"),
        ("one\r\n two", "one two"),
        ("x\r\nBcc: victim@example.com", "x Bcc: victim@example.com"),
    ],
)
def test_line_breaks_in_values_never_start_a_new_field(value: str, expected: str) -> None:
    field = format_header("Subject", value)
    _lines(field)
    message = _parse(field)
    assert message["Subject"] == expected
    assert message["Bcc"] is None


@pytest.mark.parametrize("name", ["", "X Bad", "X:Bad", "Ünï", "X-\x00", "X-Tab\t"])
def test_invalid_header_names_are_refused(name: str) -> None:
    with pytest.raises(HeaderError, match="invalid header name"):
        format_header(name, "value")
    with pytest.raises(HeaderError, match="invalid header name"):
        format_address_header(name, [Address("a@b.com")])


def test_very_long_header_name_still_gets_a_value_on_its_first_line() -> None:
    name = "X-" + "N" * 70
    field = format_header(name, "naïve " * 20)
    assert field.startswith(f"{name}: =?utf-8?".encode())
    assert all(len(line) <= 78 for line in _lines(field)[1:])
    assert _parse(field)[name] == "naïve " * 20


def test_address_header_round_trips_through_the_standard_library() -> None:
    addresses = [
        Address("jane@example.com", "Jane Doe"),
        Address("john@example.com", "Doe, John"),
        Address("a@b.vn", "Nguyễn Văn A"),
        Address("bare@example.org"),
    ] * 4
    field = format_address_header("To", addresses)
    assert all(len(line) <= 78 for line in _lines(field))
    parsed = _parse(field)["To"].addresses
    assert [(mailbox.addr_spec, mailbox.display_name) for mailbox in parsed] == [
        (address.email, address.name) for address in addresses
    ]


def test_address_header_writes_internationalised_local_parts_as_utf8() -> None:
    field = format_address_header("To", [Address("пользователь@xn--e1afmkfd.xn--p1ai")])
    assert field == "To: пользователь@xn--e1afmkfd.xn--p1ai\r\n".encode()


def test_address_header_refuses_a_hand_built_address_with_a_line_break() -> None:
    with pytest.raises(HeaderError, match="line break"):
        format_address_header("To", [Address("a@b.com\r\nBcc: x@y.com")])


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 23, 18, 41, 30, tzinfo=UTC), "Mon, 23 Nov 2026 18:41:30 +0000"),
        (
            datetime(2026, 1, 4, 3, 5, 9, 999, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "Sun, 04 Jan 2026 03:05:09 +0530",
        ),
        (
            datetime(2025, 7, 31, 23, 0, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
            "Thu, 31 Jul 2025 23:00:00 -0330",
        ),
    ],
)
def test_format_date(moment: datetime, expected: str) -> None:
    assert format_date(moment) == expected
    assert email.utils.parsedate_to_datetime(expected) == moment.replace(microsecond=0)


def test_format_date_agrees_with_the_standard_library() -> None:
    rng = random.Random(5322)
    for _ in range(300):
        offset = timedelta(minutes=rng.randrange(-14 * 60, 14 * 60 + 1))
        moment = datetime(2000, 1, 1, tzinfo=timezone(offset)) + timedelta(
            seconds=rng.randrange(0, 60 * 365 * 24 * 3600)
        )
        assert format_date(moment) == email.utils.format_datetime(moment)


def test_format_date_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_date(datetime(2026, 1, 1))


_TEXT_ALPHABET = "abc XYZ 0189 _=?!\"'()<>,;:\\éüßăđệ日本語中文Привет😀🎉\u0301\u200d\u00a0"


def test_encoded_words_round_trip_random_text_within_their_limits() -> None:
    rng = random.Random(2047)
    for _ in range(500):
        text = "".join(rng.choice(_TEXT_ALPHABET) for _ in range(rng.randint(1, 200)))
        limit = rng.randint(24, MAX_WORD)
        first_limit = rng.randint(24, MAX_WORD)
        words = encode_words(text, first_limit=first_limit, limit=limit)
        assert len(words[0]) <= first_limit
        assert all(len(word) <= limit for word in words[1:])
        assert all(word.isascii() and " " not in word for word in words)
        joined = " ".join(words)
        assert decode_words(joined) == text
        assert str(make_header(decode_header(joined))) == text


def test_encoded_words_keep_characters_whole() -> None:
    # RFC 2047 §5: each word decodes on its own to whole characters.
    for word in encode_words("日本語" * 40 + "😀" * 40):
        assert decode_words(word).encode("utf-8").decode("utf-8")
        for char in decode_words(word):
            assert char in "日本語😀"


def test_encode_words_choose_the_shorter_encoding() -> None:
    assert encode_words("Café au lait") == ["=?utf-8?q?Caf=C3=A9_au_lait?="]
    assert encode_words("日本") == ["=?utf-8?b?5pel5pys?="]
    assert encode_words("") == []
    with pytest.raises(ValueError, match="at least"):
        encode_words("x", limit=20)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("=?utf-8?q?J=C3=BCrgen?= Smith", "Jürgen Smith"),
        ("=?UTF-8?B?SsO8cmdlbg==?=", "Jürgen"),
        ("=?iso-8859-1?q?J=FCrgen?=", "Jürgen"),
        ("=?utf-8*en?q?hello?=", "hello"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),
        ("=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab"),
        ("=?utf-8?q?a_?= =?utf-8?q?b?=", "a b"),
        # A character split across two words is rejoined before decoding.
        ("=?utf-8?q?=C3?= =?utf-8?q?=BC?=", "ü"),
        ("=?utf-8?q?a?= x =?utf-8?q?b?=", "a x b"),
        ("=?unknown-charset?q?x?=", "=?unknown-charset?q?x?="),
        ("=?utf-8?b?***?=", "=?utf-8?b?***?="),
        ("=?utf-8?q?a?= =?bogus?q?x?= =?utf-8?q?b?=", "a =?bogus?q?x?= b"),
    ],
)
def test_decode_words(text: str, expected: str) -> None:
    assert decode_words(text) == expected
