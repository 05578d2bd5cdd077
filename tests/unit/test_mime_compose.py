"""The composer, checked by parsing its output back with the standard library."""

from __future__ import annotations

import binascii
import dataclasses
import email.policy
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from typing import Any

import pytest

from posthorn.domain.addresses import Address, parse_address
from posthorn.mime import Attachment, MessageSpec, compose
from posthorn.mime.encoding import (
    _quoted_printable_slow,
    base64_lines,
    encode_text,
    quoted_printable,
)
from posthorn.mime.headers import HeaderError

DATE = datetime(2026, 11, 23, 18, 41, 30, tzinfo=UTC)


def _spec(**overrides: Any) -> MessageSpec:
    fields: dict[str, Any] = {
        "from_address": Address("billing@acme.example", "Acme Billing"),
        "to": (Address("jane@example.com", "Jane Doe"),),
        "subject": "Your receipt",
        "message_id": "0f6c3b9e@mail.acme.example",
        "date": DATE,
        "text": "Hello Jane,\nthanks for your order.\n",
    }
    fields.update(overrides)
    return MessageSpec(**fields)


def _check_wire_format(raw: bytes, *, max_header_line: int = 78) -> None:
    # RFC 5322 §2.1: CRLF only; no bare CR or LF anywhere.
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert raw.endswith(b"\r\n")
    lines = raw[:-2].split(b"\r\n")
    # RFC 5322 §2.1.1: no line may exceed 998 octets.
    assert max(len(line) for line in lines) <= 998
    header_lines = lines[: lines.index(b"")]
    assert all(len(line) <= max_header_line for line in header_lines), header_lines
    assert not any(line.lower().startswith(b"bcc:") for line in lines)


def _parse(raw: bytes, *, max_header_line: int = 78) -> EmailMessage:
    _check_wire_format(raw, max_header_line=max_header_line)
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    for part in message.walk():
        assert not part.defects, part.defects
    return message


def _text(part: MIMEPart) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def _same_text(got: str, sent: str) -> bool:
    sent = sent.replace("\r\n", "\n").replace("\r", "\n")
    # A single-part body gains the message's final CRLF when it lacks one.
    return got in (sent, sent + "\n")


def _mailboxes(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    return [(box.addr_spec, box.display_name) for box in message[name].addresses]


def test_text_only_is_a_single_text_plain_part() -> None:
    raw = compose(_spec())
    message = _parse(raw)
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message["Content-Transfer-Encoding"] == "7bit"
    assert _text(message) == "Hello Jane,\nthanks for your order.\n"
    assert raw.endswith(b"thanks for your order.\r\n")


def test_html_only_is_a_single_text_html_part() -> None:
    message = _parse(compose(_spec(text=None, html="<p>Hello</p>")))
    assert message.get_content_type() == "text/html"
    assert _same_text(_text(message), "<p>Hello</p>")


def test_text_and_html_make_multipart_alternative_with_text_first() -> None:
    message = _parse(compose(_spec(html="<p>Hello <b>Jane</b></p>")))
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert _text(parts[0]) == "Hello Jane,\nthanks for your order.\n"
    assert _text(parts[1]) == "<p>Hello <b>Jane</b></p>"
    body = message.get_body(preferencelist=("html", "plain"))
    assert body is not None and body.get_content_type() == "text/html"


def test_no_body_at_all_is_an_empty_text_part() -> None:
    message = _parse(compose(_spec(text=None)))
    assert message.get_content_type() == "text/plain"
    assert _text(message) == ""


def test_attachments_make_multipart_mixed_with_exact_bytes() -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    attachments = (
        Attachment("receipt.pdf", pdf, "application/pdf"),
        Attachment("Übersicht 報告.csv", b"a,b\r\n1,2\r\n", "text/csv"),
        Attachment("empty.bin", b""),
        Attachment('quote"back\\slash.txt', b"x"),
        Attachment("", b"nameless"),
        Attachment("很长的文件名" * 30 + ".txt", b"long"),
        Attachment("x" * 150 + ".log", b"ascii but long"),
    )
    message = _parse(compose(_spec(html="<p>Hi</p>", attachments=attachments)))
    assert message.get_content_type() == "multipart/mixed"
    first, *rest = message.iter_parts()
    assert first.get_content_type() == "multipart/alternative"
    assert [
        (part.get_filename(), part.get_content_type(), part.get_content()) for part in rest
    ] == [
        ("receipt.pdf", "application/pdf", pdf),
        ("Übersicht 報告.csv", "text/csv", "a,b\r\n1,2\r\n"),
        ("empty.bin", "application/octet-stream", b""),
        ('quote"back\\slash.txt', "application/octet-stream", b"x"),
        ("attachment", "application/octet-stream", b"nameless"),
        ("很长的文件名" * 30 + ".txt", "application/octet-stream", b"long"),
        ("x" * 150 + ".log", "application/octet-stream", b"ascii but long"),
    ]
    assert all(part.get_content_disposition() == "attachment" for part in rest)
    assert all(part["Content-Transfer-Encoding"] == "base64" for part in rest)


def test_non_ascii_filename_has_an_rfc2231_name_and_an_ascii_fallback() -> None:
    raw = compose(_spec(attachments=(Attachment("Übersicht.pdf", b"%PDF", "application/pdf"),)))
    assert b"filename*=utf-8''%C3%9Cbersicht.pdf" in raw
    assert b'filename="Ubersicht.pdf"' in raw
    assert b'name="Ubersicht.pdf"' in raw


def test_single_body_with_attachment_goes_first_in_mixed() -> None:
    attachment = Attachment("a.txt", b"data", "text/plain")
    message = _parse(compose(_spec(attachments=(attachment,))))
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/plain"]
    assert parts[0].get_filename() is None
    assert parts[1].get_filename() == "a.txt"


def test_headers_come_in_a_fixed_order_and_round_trip() -> None:
    spec = _spec(
        from_address=parse_address("Nguyễn Văn A <a@b.vn>"),
        to=(parse_address('"Doe, John" <john@example.com>'), parse_address("x@example.org")),
        cc=(parse_address("山田太郎 <taro@example.jp>"),),
        reply_to=parse_address("Support <support@acme.example>"),
        subject="Xin chào 🎉",
        html="<p>hi</p>",
        headers=(("X-Campaign", "spring"), ("List-Unsubscribe", "<https://u.example/x>")),
        attachments=(Attachment("a.txt", b"a"),),
    )
    raw = compose(spec)
    message = _parse(raw)
    assert list(message.keys()) == [
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "X-Campaign",
        "List-Unsubscribe",
        "Content-Type",
    ]
    assert _mailboxes(message, "From") == [("a@b.vn", "Nguyễn Văn A")]
    assert _mailboxes(message, "To") == [
        ("john@example.com", "Doe, John"),
        ("x@example.org", ""),
    ]
    assert _mailboxes(message, "Cc") == [("taro@example.jp", "山田太郎")]
    assert _mailboxes(message, "Reply-To") == [("support@acme.example", "Support")]
    assert message["Subject"] == "Xin chào 🎉"
    assert message["Message-ID"] == "<0f6c3b9e@mail.acme.example>"
    assert message["Date"] == "Mon, 23 Nov 2026 18:41:30 +0000"
    assert message["Date"].datetime == DATE
    assert message["MIME-Version"] == "1.0"
    assert message["X-Campaign"] == "spring"
    assert message["List-Unsubscribe"] == "<https://u.example/x>"


def test_optional_address_headers_are_left_out() -> None:
    message = _parse(compose(_spec(to=(), cc=(), reply_to=None)))
    assert message["To"] is None and message["Cc"] is None and message["Reply-To"] is None


def test_date_keeps_its_offset() -> None:
    moment = datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=-8)))
    message = _parse(compose(_spec(date=moment)))
    assert message["Date"] == "Sun, 01 Mar 2026 09:00:00 -0800"


def test_bcc_is_never_written() -> None:
    assert "bcc" not in {field.name for field in dataclasses.fields(MessageSpec)}
    with pytest.raises(HeaderError, match="Bcc"):
        compose(_spec(headers=(("Bcc", "hidden@example.com"),)))
    raw = compose(_spec(subject="x\r\nBcc: hidden@example.com"))
    message = _parse(raw)
    assert message["Bcc"] is None


@pytest.mark.parametrize(
    "name", ["From", "to", "CC", "Reply-To", "Subject", "Date", "Message-Id", "Content-Type"]
)
def test_custom_headers_cannot_replace_the_composers_own(name: str) -> None:
    with pytest.raises(HeaderError, match="set by the composer"):
        compose(_spec(headers=((name, "x"),)))


def test_custom_headers_are_encoded_when_non_ascii_and_kept_whole_when_long() -> None:
    url = "<https://example.com/unsubscribe/" + "t" * 150 + ">"
    raw = compose(_spec(headers=(("X-Note", "Grüße aus Köln"), ("List-Unsubscribe", url))))
    message = _parse(raw, max_header_line=998)
    assert message["X-Note"] == "Grüße aus Köln"
    assert message["List-Unsubscribe"] == url
    assert url.encode() in raw


@pytest.mark.parametrize(
    "subject",
    [
        "Xin chào, đây là hóa đơn tháng 11 của bạn",
        "🎉🚀 Launch day! 🎉🚀",
        "ご注文ありがとうございます",
        "您的订单已发货",
        "Receipt " * 37 + "end",
        "Tiếng Việt " * 30,
        "x" * 300,
        "A subject with =?utf-8?q?lookalike?= inside",
    ],
)
def test_subjects_survive(subject: str) -> None:
    assert _parse(compose(_spec(subject=subject)))["Subject"] == subject


@pytest.mark.parametrize(
    "body",
    [
        "Xin chào Nguyễn Văn A,\nCảm ơn bạn đã đặt hàng.\n",
        "ご注文ありがとうございます。\n" * 20,
        "Emoji 🎉 and math ∑ and a tab\there\n",
        "a" * 5000,
        "x" * 998 + "\n" + "y" * 999,
        "trailing spaces   \nand tabs\t\t\nmore",
        "From the start\nFrom here\nnot From\n.\n.leading dot\n",
        "Mixed\r\nline\rendings\nhere\r\n",
        "equals = signs == and =_boundary-looking =_m0123 text\n",
        "--=_m0123456789abcdef\n--=_a0123456789abcdef--\n",
        "nul \x00 and escape \x1b bytes\n",
        "",
    ],
)
def test_bodies_survive(body: str) -> None:
    message = _parse(compose(_spec(text=body, html=f"<pre>{body}</pre>")))
    plain, html = message.iter_parts()
    assert _text(plain) == body.replace("\r\n", "\n").replace("\r", "\n")
    assert _text(html) == f"<pre>{body}</pre>".replace("\r\n", "\n").replace("\r", "\n")


def test_transfer_encoding_follows_the_content() -> None:
    def encoding(text: str) -> str:
        return str(_parse(compose(_spec(text=text)))["Content-Transfer-Encoding"])

    assert encoding("plain ascii\n" * 100) == "7bit"
    assert encoding("x" * 998) == "7bit"
    assert encoding("x" * 999) == "quoted-printable"
    assert encoding("bell \x07") == "quoted-printable"
    assert encoding("Vielen Dank für Ihre Bestellung. Sie wird morgen verschickt.") == (
        "quoted-printable"
    )
    assert encoding("日本語のテキスト") == "base64"


def test_quoted_printable_body_escapes_from_and_keeps_lines_short() -> None:
    raw = compose(_spec(text="é\nFrom here on\n" + "w " * 200 + "\n"))
    assert b"\r\n=46rom here on" in raw
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))


def test_boundaries_are_fresh_and_declared() -> None:
    spec = _spec(html="<p>x</p>", attachments=(Attachment("a.bin", b"\x00"),))
    first, second = compose(spec), compose(spec)
    boundaries = re.findall(rb'boundary="(=_[am][0-9a-f]{24})"', first)
    assert len(boundaries) == 2
    assert boundaries != re.findall(rb'boundary="(=_[am][0-9a-f]{24})"', second)


def test_compose_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _spec(date=datetime(2026, 1, 1))
    for message_id in ("<abc@x>", "no-at-sign", "a b@x", "a@b\r\n"):
        with pytest.raises(ValueError, match="message id"):
            _spec(message_id=message_id)
    for content_type in ("pdf", "text/plain\r\nX: y", "", "application/pdf\n"):
        with pytest.raises(ValueError, match="content type"):
            Attachment("a", b"", content_type)
    with pytest.raises(HeaderError):
        compose(_spec(to=(Address("a@b.com\r\nBcc: x@y.com"),)))


_UNICODE_POOL = (
    "abcdefghij KLMNOP 0123456789 .,;:!?'\"()<>=_-+/\\ "
    "àéîõüßçñ ăâđêôơưạảấầẩẫậ "
    "日本語のテキスト中文简体한국어 "
    "Привет мир Γειά σου שלום مرحبا สวัสดี "
    "😀🎉🚀👩‍💻🇻🇳 \u0301\u200d\u00a0"
)


def _random_text(rng: random.Random, length: int, *, newlines: bool) -> str:
    pool = _UNICODE_POOL + ("\n\n\r\n\t" if newlines else "")
    return "".join(rng.choice(pool) for _ in range(length))


def test_random_unicode_messages_round_trip() -> None:
    rng = random.Random(5322)
    for _ in range(150):
        subject = _random_text(rng, rng.randint(0, 250), newlines=False).strip()
        text = _random_text(rng, rng.randint(0, 3000), newlines=True)
        html = _random_text(rng, rng.randint(0, 3000), newlines=True)
        name = _random_text(rng, rng.randint(0, 20), newlines=False).strip()
        attachment = Attachment(
            _random_text(rng, rng.randint(1, 40), newlines=False).strip() or "a",
            rng.randbytes(rng.randint(0, 3000)),
        )
        spec = _spec(
            subject=subject,
            text=text,
            html=html,
            from_address=Address("sender@example.com", name),
            attachments=(attachment,),
        )
        message = _parse(compose(spec))
        assert message["Subject"] == subject
        assert message["From"].addresses[0].addr_spec == "sender@example.com"
        alternative, attached = message.iter_parts()
        plain, rich = alternative.iter_parts()
        assert _text(plain) == text.replace("\r\n", "\n").replace("\r", "\n")
        assert _text(rich) == html.replace("\r\n", "\n").replace("\r", "\n")
        assert attached.get_filename() == attachment.filename
        assert attached.get_content() == attachment.content


@pytest.mark.parametrize("encoder", [quoted_printable, _quoted_printable_slow])
def test_quoted_printable_decodes_to_the_input_with_short_crlf_lines(
    encoder: Callable[[bytes], bytes],
) -> None:
    rng = random.Random(2045)
    pieces = [b"From ", b".", b" ", b"\t", b"=", b"\r\n", b"x" * 80, "é日😀".encode(), b"\x00"]
    for _ in range(400):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        encoded = encoder(data)
        assert binascii.a2b_qp(encoded) == data
        lines = encoded.split(b"\r\n")
        assert all(len(line) <= 76 for line in lines), encoded
        assert not any(line.startswith(b"From ") for line in lines)
        assert b"\n" not in encoded.replace(b"\r\n", b"")
        # RFC 2045 §6.7 (3): no white space right before a line break.
        assert not any(line.endswith((b" ", b"\t")) for line in lines)


@pytest.mark.parametrize("width", range(70, 80))
def test_quoted_printable_trailing_white_space_at_the_line_limit(width: int) -> None:
    for tail in (b" ", b"\t", b"=", b"\xc3\xa9"):
        data = b"x" * width + tail + b"\r\nnext"
        encoded = quoted_printable(data)
        assert binascii.a2b_qp(encoded) == data
        assert max(len(line) for line in encoded.split(b"\r\n")) <= 76


def test_quoted_printable_without_line_breaks_uses_crlf_soft_breaks() -> None:
    encoded = quoted_printable(b"y" * 200)
    assert b"=\r\n" in encoded and b"\n" not in encoded.replace(b"\r\n", b"")


def test_base64_lines_are_76_characters() -> None:
    data = bytes(range(256)) * 10
    encoded = base64_lines(data)
    lines = encoded.split(b"\r\n")
    assert all(len(line) == 76 for line in lines[:-1]) and len(lines[-1]) <= 76
    assert binascii.a2b_base64(encoded.replace(b"\r\n", b"")) == data
    assert base64_lines(b"") == b""


def test_encode_text_normalises_line_endings() -> None:
    assert encode_text("a\rb\nc\r\nd") == ("7bit", b"a\r\nb\r\nc\r\nd")
