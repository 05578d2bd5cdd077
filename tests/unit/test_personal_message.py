"""personalise_message(): a recipient's copy made from the shared message at send time is the
message personalise() would have composed for them, byte for byte but for the boundaries."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from posthorn.mime import MessageSpec, compose
from posthorn.mime.compose import Attachment
from posthorn.mime.tracking import personalise, personalise_message, rewrite_html
from tests.unit.test_tracking_personalise import HTTPS, MAILTO, spec

_BOUNDARY = re.compile(rb"=_[a-z][0-9a-f]{24}")


def canonical(message: bytes) -> bytes:
    """The message with each boundary renamed by its order of appearance."""
    names: dict[bytes, bytes] = {}
    return _BOUNDARY.sub(lambda m: names.setdefault(m[0], b"BOUNDARY-%d" % len(names)), message)


def track(html: str) -> str:
    return rewrite_html(
        html,
        click_url=lambda url: f"https://t.test/c/{len(url)}",
        open_pixel_url="https://t.test/o",
    )


PDF = Attachment("report.pdf", bytes(range(256)) * 40, "application/pdf")
PAGE = Attachment(
    "page.html", b"<p>{{ unsubscribe_url }} <a href='https://x.test'>x</a></p>", "text/html"
)
CASES: dict[str, MessageSpec] = {
    "text and html": spec(),
    "html only": spec(text=None),
    "text only": spec(html=None),
    "with attachments": spec(attachments=(PDF, PAGE)),
    "html only with an attachment": spec(text=None, attachments=(PAGE, PDF)),
    "a client's list-unsubscribe": spec(
        headers=(("List-Unsubscribe", "<mailto:old@acme.test>"), ("X-Campaign", "w48"))
    ),
    "non-ascii bodies": spec(text="Grüße {{ unsubscribe_url }}\n", html="<p>Grüße</p>"),
    "no placeholders": spec(text="plain", html="<p>plain</p>", attachments=(PDF,)),
}
REWRITES: dict[str, tuple[Callable[[str], str] | None, tuple[str, str] | None]] = {
    "tracking and unsubscribe": (track, (HTTPS, MAILTO)),
    "tracking only": (track, None),
    "unsubscribe only": (None, (HTTPS, MAILTO)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rewrite", REWRITES)
def test_the_copy_is_what_composing_it_whole_gives(case: str, rewrite: str) -> None:
    shared = CASES[case]
    html_rewrite, unsubscribe = REWRITES[rewrite]
    whole = compose(personalise(shared, html_rewrite=html_rewrite, unsubscribe=unsubscribe))
    made = personalise_message(
        compose(shared),
        html=shared.html,
        text=shared.text,
        html_rewrite=html_rewrite,
        unsubscribe=unsubscribe,
    )
    assert canonical(made) == canonical(whole)


def test_attachments_are_copied_not_encoded_again() -> None:
    shared = compose(spec(attachments=(PDF,)))
    made = personalise_message(
        shared, html=spec().html, text=spec().text, html_rewrite=track, unsubscribe=None
    )
    attachment = shared[shared.index(b"Content-Type: application/pdf") :]
    assert made.endswith(attachment)


def test_a_new_body_never_holds_a_boundary_of_the_shared_message() -> None:
    """7bit text that came to hold a boundary (from a URL put in at send time) is sent as
    quoted-printable instead, where "=_" cannot occur (RFC 2045 §6.7)."""
    shared = compose(spec(text="see {{ unsubscribe_url }}\n", html=None, attachments=(PDF,)))
    (boundary,) = set(_BOUNDARY.findall(shared))
    url = "https://mail.acme.test/u/" + boundary.decode()
    made = personalise_message(
        shared,
        html=None,
        text="see {{ unsubscribe_url }}\n",
        html_rewrite=None,
        unsubscribe=(url, MAILTO),
    )
    body = made.split(b"\r\n\r\n", 1)[1]
    assert body.count(boundary) == 3  # the delimiters only: first, between, last
    assert b"Content-Transfer-Encoding: quoted-printable" in made
