"""Changing the header of a message someone else wrote, leaving everything else as it was."""

from __future__ import annotations

from email.utils import getaddresses

import pytest

from posthorn.mime.parse import address_list, read_headers, replace_fields
from posthorn.mime.tracking import add_unsubscribe

MESSAGE = (
    b"Received: from client.test\r\n\tby posthorn.test; Mon, 23 Nov 2026 18:41:30 +0000\r\n"
    b"From: Acme <hello@acme.test>\r\n"
    b"list-unsubscribe: <mailto:old@acme.test>,\r\n <https://old.example.test/u/1>\r\n"
    b"Subject: Hi\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"\r\n"
    b"Body line\r\n\r\nList-Unsubscribe: not a header, the body\r\n"
)


def test_named_fields_go_folded_lines_and_all_and_new_ones_end_the_header() -> None:
    out = replace_fields(MESSAGE, {"List-Unsubscribe", "LIST-UNSUBSCRIBE-POST"}, b"X-New: 1\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"Received: from client.test",
        b"\tby posthorn.test; Mon, 23 Nov 2026 18:41:30 +0000",
        b"From: Acme <hello@acme.test>",
        b"Subject: Hi",
        b"X-New: 1",
    ]
    assert body == MESSAGE.split(b"\r\n\r\n", 1)[1]


def test_a_message_without_body_gets_one_blank_line() -> None:
    assert (
        replace_fields(b"Subject: x\r\n", (), b"X-New: 1\r\n") == b"Subject: x\r\nX-New: 1\r\n\r\n"
    )


def test_add_unsubscribe_puts_one_of_each_field() -> None:
    https = "https://mail.posthorn.test/u/" + "t" * 120  # long enough to be folded
    out = add_unsubscribe(MESSAGE, (https, "mailto:u+tok@bounces.posthorn.test"))
    headers = read_headers(out)
    assert headers["list-unsubscribe"] == [f"<{https}>, <mailto:u+tok@bounces.posthorn.test>"]
    assert headers["list-unsubscribe-post"] == ["List-Unsubscribe=One-Click"]
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))


def test_a_plain_http_url_gets_no_one_click_field() -> None:
    out = add_unsubscribe(MESSAGE, ("http://localhost:8000/u/t", "mailto:u@b.test"))
    assert "list-unsubscribe-post" not in read_headers(out)


@pytest.mark.parametrize(
    "value",
    [
        "user@example.test",
        "  <User.Name+tag@Example.TEST>\t",
        "Jane <jane@example.test>",
        '"Doe, John" <john@example.test>, ann@example.test',
        "a@b@c",
        "<a@b> trailing",
        "(comment) a@example.test",
        "a@example.test (comment)",
        "group: a@example.test, b@example.test;",
        "<@route:a@example.test>",
        "a..b@example.test",
        "\xa0a@example.test",
        "\u65e5\u672c@example.test",
        "no-address",
        "",
    ],
)
def test_address_list_reads_a_field_as_getaddresses_does(value: str) -> None:
    expected = [addr for _, addr in getaddresses([value]) if "@" in addr]
    assert address_list({"to": [value]}, "To") == expected


def test_address_list_reads_every_field_of_the_name() -> None:
    headers = {"cc": ["a@example.test", "B <b@example.test>"]}
    assert address_list(headers, "cc") == ["a@example.test", "b@example.test"]
    assert address_list(headers, "to") == []
