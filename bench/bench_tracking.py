"""Rewrites per second of a ~20 KB newsletter with 40 links.

Run with ``.venv/bin/python bench/bench_tracking.py``; it takes about 10 seconds. Cases:

- the tokenizer and rewrite alone (``click_url`` returns a fixed string);
- the full per-recipient rewrite intake does: 40 signed click tokens and an open pixel;
- for scale, the standard library's ``html.parser`` only *reading* the same document
  (collecting the hrefs, rewriting nothing), the usual Python way to find links.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

from posthorn.mime.tracking import rewrite_html
from posthorn.services.tracking import tracking_for
from posthorn.settings import Settings

SECONDS_PER_RUN = 2.0
RUNS = 8


def newsletter(links: int = 40) -> str:
    head = (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html xmlns="http://www.w3.org/1999/xhtml"><head><meta charset="utf-8">'
        "<title>The Weekly Horn</title><style>body{margin:0;padding:0}"
        " .btn a{color:#fff;background:#0a5;padding:8px 16px} td{font-family:Arial}</style>"
        "<!--[if mso]><style>td{font-family:Arial}</style><![endif]--></head>"
        '<body style="margin:0"><table role="presentation" width="100%" cellpadding="0">'
    )
    rows = []
    for n in range(links):
        rows.append(
            '<tr><td class="story" style="padding:12px 24px;border-bottom:1px solid #eee">'
            f'<h2 style="font-size:18px;margin:0 0 8px">Story number {n}: what happened</h2>'
            '<p style="margin:0 0 8px;line-height:1.5">Lorem ipsum dolor sit amet, consectetur '
            "adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua."
            " Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.</p>"
            f'<a href="https://news.example.com/stories/{n}?utm_source=newsletter&amp;'
            f'utm_medium=email&amp;utm_campaign=weekly-48" style="color:#0a5">Read more</a>'
            "</td></tr>\n"
        )
    tail = (
        '<tr><td style="font-size:12px;color:#888">You receive this because you signed up. '
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a> · '
        '<a href="mailto:editor@example.com">Write to us</a></td></tr></table></body></html>'
    )
    return head + "".join(rows) + tail


class _Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def stdlib_read(html: str) -> str:
    parser = _Hrefs()
    parser.feed(html)
    parser.close()
    return html


def rate(function: Callable[[str], str], html: str) -> float:
    """The best of several short runs: on a shared machine the fastest run is the one least
    disturbed by other work (the same reasoning as ``timeit``'s minimum)."""
    function(html)
    best = 0.0
    for _ in range(RUNS):
        count = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < SECONDS_PER_RUN / RUNS:
            for _ in range(10):
                function(html)
            count += 10
        best = max(best, count / elapsed)
    return best


def main() -> None:
    html = newsletter()
    settings = Settings(
        data_dir=Path("/tmp"),  # never written: the secret is given
        secret_key="bench-" + uuid.uuid4().hex,
        public_url="https://track.example.net",
        hostname="mail.example.net",
    )
    personal = tracking_for(
        settings,
        account_id=str(uuid.uuid4()),
        email_id=str(uuid.uuid4()),
        recipient="jane.doe@example.org",
        track_opens=True,
        track_clicks=True,
        unsubscribe=True,
    )
    assert personal.html_rewrite is not None
    full = personal.html_rewrite

    def plain(text: str) -> str:
        return rewrite_html(text, click_url=lambda _url: "https://t.example/c", open_pixel_url=None)

    print(f"document: {len(html.encode()) / 1024:.1f} KB, {html.count('<a ')} links")
    print(f"tracked document: {len(full(html).encode()) / 1024:.1f} KB")
    lexer = rate(plain, html)
    signed = rate(full, html)
    stdlib = rate(stdlib_read, html)
    print(f"rewrite, fixed click URL       {lexer:10,.0f} rewrites/s  {1e3 / lexer:6.3f} ms")
    print(f"rewrite, 40 signed tokens+pixel{signed:10,.0f} rewrites/s  {1e3 / signed:6.3f} ms")
    print(f"html.parser, read hrefs only   {stdlib:10,.0f} parses/s    {1e3 / stdlib:6.3f} ms")
    print(f"ratio full rewrite / html.parser read: {signed / stdlib:.1f}x")


if __name__ == "__main__":
    main()
