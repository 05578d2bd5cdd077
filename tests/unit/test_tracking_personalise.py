"""personalise() and tracking_for(): per-recipient messages with RFC 8058 headers that sign."""

from __future__ import annotations

import email.policy
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.parser import BytesParser
from pathlib import Path

import dkim
import pytest

from posthorn.domain.addresses import Address
from posthorn.domain.tracking_tokens import Kind, derive_key, read_token
from posthorn.mime import MessageSpec, compose
from posthorn.mime.dkim import DkimKey, dns_record_value, generate_rsa_key, sign
from posthorn.mime.tracking import personalise, rewrite_html
from posthorn.services.tracking import tracking_for, unsubscribe_address
from posthorn.settings import Settings

HTTPS = "https://mail.acme.test/u/TOKEN"
MAILTO = "mailto:unsubscribe+TOKEN@mail.acme.test"


def spec(**changes: object) -> MessageSpec:
    values: dict[str, object] = {
        "from_address": Address("news@acme.test", "Acme News"),
        "to": (Address("jane@example.com", "Jane"),),
        "subject": "Week 48",
        "message_id": "c9f0f895@acme.test",
        "date": datetime(2026, 11, 23, 18, 41, 30, tzinfo=UTC),
        "html": (
            '<html><body><p>Hi</p><a href="https://shop.test/?a=1&amp;b=2">Shop</a>'
            '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
        ),
        "text": "Hi\nShop: https://shop.test/\nUnsubscribe: {{unsubscribe_url}}\n",
        "headers": (("X-Campaign", "w48"),),
    }
    values.update(changes)
    return MessageSpec(**values)  # type: ignore[arg-type]


def test_unsubscribe_headers_and_placeholders() -> None:
    url = "https://mail.acme.test/u/T?x=1&y=2"
    out = personalise(spec(), html_rewrite=None, unsubscribe=(url, MAILTO))
    assert out.headers == (
        ("X-Campaign", "w48"),
        ("List-Unsubscribe", f"<{url}>, <{MAILTO}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    )
    assert out.html is not None and out.text is not None
    assert '<a href="https://mail.acme.test/u/T?x=1&amp;y=2">Unsubscribe</a>' in out.html
    assert f"Unsubscribe: {url}\n" in out.text
    assert "unsubscribe_url" not in out.html + out.text
    # Everything else is the same message.
    assert (out.subject, out.message_id, out.to) == (spec().subject, spec().message_id, spec().to)


def test_a_clients_own_list_unsubscribe_is_replaced() -> None:
    original = spec(
        headers=(("list-unsubscribe", "<https://old.test/>"), ("List-Unsubscribe-Post", "x"))
    )
    out = personalise(original, html_rewrite=None, unsubscribe=(HTTPS, MAILTO))
    names = [name.lower() for name, _ in out.headers]
    assert names == ["list-unsubscribe", "list-unsubscribe-post"]
    assert out.headers[0] == ("List-Unsubscribe", f"<{HTTPS}>, <{MAILTO}>")


def test_one_click_is_only_offered_over_https() -> None:
    """RFC 8058 §3.1: the one-click URI must be HTTPS; over http only RFC 2369 applies."""
    out = personalise(spec(), html_rewrite=None, unsubscribe=("http://127.0.0.1:8000/u/T", MAILTO))
    assert [name for name, _ in out.headers] == ["X-Campaign", "List-Unsubscribe"]


def test_links_are_rewritten_before_the_unsubscribe_url_goes_in() -> None:
    seen: list[str] = []

    def rewrite(html: str) -> str:
        def click(url: str) -> str:
            seen.append(url)
            return "https://t.test/c/1"

        return rewrite_html(html, click_url=click, open_pixel_url="https://t.test/o/1")

    out = personalise(spec(), html_rewrite=rewrite, unsubscribe=(HTTPS, MAILTO))
    assert seen == ["https://shop.test/?a=1&b=2"]  # not the unsubscribe link
    assert out.html is not None
    assert f'<a href="{HTTPS}">Unsubscribe</a>' in out.html
    assert '<img src="https://t.test/o/1"' in out.html
    assert out.text == spec().text.replace("{{unsubscribe_url}}", HTTPS)  # type: ignore[union-attr]


def test_nothing_asked_nothing_changed() -> None:
    original = spec()
    assert personalise(original, html_rewrite=None, unsubscribe=None) == original
    text_only = spec(html=None)
    out = personalise(text_only, html_rewrite=lambda h: h + "!", unsubscribe=(HTTPS, MAILTO))
    assert out.html is None
    assert out.text is not None and HTTPS in out.text


@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, str]:
    return generate_rsa_key()


def _dns(records: dict[str, str]) -> Callable[..., bytes]:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode(), "").encode()

    return lookup


def test_the_personalised_message_signs_and_verifies_with_dkimpy(
    rsa_key: tuple[bytes, str], tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        secret_key="s3cret",
        public_url="https://mail.acme.test/",
        hostname="mail.acme.test",
    )
    email_id = str(uuid.uuid4())
    personal = tracking_for(
        settings,
        account_id=str(uuid.uuid4()),
        email_id=email_id,
        recipient="jane@example.com",
        track_opens=True,
        track_clicks=True,
        unsubscribe=True,
        list_id="weekly",
    )
    out = personalise(spec(), html_rewrite=personal.html_rewrite, unsubscribe=personal.unsubscribe)
    message = compose(out)
    pem, public = rsa_key
    signed = sign(message, [DkimKey("acme.test", "ph1", pem, "rsa-sha256")])
    lookup = _dns({"ph1._domainkey.acme.test.": dns_record_value("rsa-sha256", public)})
    assert dkim.verify(signed, dnsfunc=lookup)

    parsed = BytesParser(policy=email.policy.default).parsebytes(signed)
    signature = str(parsed["DKIM-Signature"]).replace(" ", "").lower()
    assert "list-unsubscribe:list-unsubscribe-post" in signature
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_url, mailto_url = (part.strip(" <>") for part in parsed["List-Unsubscribe"].split(","))
    assert https_url.startswith("https://mail.acme.test/u/")
    token = https_url.rsplit("/", 1)[1]
    data = read_token(derive_key("s3cret"), token, kind=Kind.UNSUBSCRIBE)
    assert data is not None and data.email_id == email_id and data.list_id == "weekly"
    assert mailto_url == f"mailto:{unsubscribe_address(settings, token)}"
    assert mailto_url == f"mailto:unsubscribe+{token}@mail.acme.test"

    # The pair is covered by the signature: a relay that changes the link breaks it.
    forged = signed.replace(b"/u/" + token.encode(), b"/u/" + token[::-1].encode(), 1)
    assert forged != signed
    assert not dkim.verify(forged, dnsfunc=lookup)


def test_tracking_for_makes_working_links(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="k", public_url="http://127.0.0.1:8000")
    key = derive_key("k")
    personal = tracking_for(
        settings,
        account_id="acct",
        email_id="mail",
        recipient="r@x.test",
        track_opens=True,
        track_clicks=True,
        unsubscribe=False,
    )
    assert personal.unsubscribe is None and personal.html_rewrite is not None
    html = personal.html_rewrite('<a href="https://x.test/?a=1&amp;b=2">x</a><p>y</p>')
    click = html.split('href="', 1)[1].split('"', 1)[0]
    pixel = html.split('src="', 1)[1].split('"', 1)[0]
    assert click.startswith("http://127.0.0.1:8000/t/c/")
    assert pixel.startswith("http://127.0.0.1:8000/t/o/")
    clicked = read_token(key, click.rsplit("/", 1)[1], kind=Kind.CLICK)
    assert clicked is not None and clicked.url == "https://x.test/?a=1&b=2"
    opened = read_token(key, pixel.rsplit("/", 1)[1], kind=Kind.OPEN)
    assert opened is not None and (opened.email_id, opened.recipient) == ("mail", "r@x.test")

    opens_only = tracking_for(
        settings,
        account_id="acct",
        email_id="mail",
        recipient="r@x.test",
        track_opens=True,
        track_clicks=False,
        unsubscribe=False,
    )
    assert opens_only.html_rewrite is not None
    assert 'href="https://x.test/"' in opens_only.html_rewrite('<a href="https://x.test/">x</a>')
    nothing = tracking_for(
        settings,
        account_id="acct",
        email_id="mail",
        recipient="r@x.test",
        track_opens=False,
        track_clicks=False,
        unsubscribe=False,
    )
    assert nothing.html_rewrite is None and nothing.unsubscribe is None


def test_a_link_too_long_for_a_token_stays_untracked(tmp_path: Path) -> None:
    import random

    settings = Settings(data_dir=tmp_path, secret_key="k")
    rng = random.Random(2)
    huge = "https://x.test/" + "".join(rng.choice("abcdefghij0123456789") for _ in range(9000))
    personal = tracking_for(
        settings,
        account_id="a",
        email_id="e",
        recipient="r@x.test",
        track_opens=False,
        track_clicks=True,
        unsubscribe=False,
    )
    assert personal.html_rewrite is not None
    html = f'<a href="{huge}">x</a><a href="https://ok.test/">ok</a>'
    out = personal.html_rewrite(html)
    assert f'href="{huge}"' in out and "/t/c/" in out


def test_list_ids_must_fit_the_suppression_scope(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="k")
    with pytest.raises(ValueError):
        tracking_for(
            settings,
            account_id="a",
            email_id="e",
            recipient="r@x.test",
            track_opens=False,
            track_clicks=False,
            unsubscribe=True,
            list_id="x" * 61,
        )
