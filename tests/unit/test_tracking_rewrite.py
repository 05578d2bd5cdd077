"""Link rewriting and the open pixel: golden inputs and outputs, and a bounded fuzz loop."""

from __future__ import annotations

import random
import time
from html.parser import HTMLParser

import pytest

from posthorn.mime.tracking import rewrite_html, tracked_links

PIXEL = (
    '<img src="https://t.test/o/P" width="1" height="1" alt="" style="display:none" border="0" />'
)


class Recorder:
    """A click_url that numbers the links it is given and remembers them."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, url: str) -> str:
        self.seen.append(url)
        return f"https://t.test/c/{len(self.seen)}"


def rewrite(html: str, *, pixel: bool = False) -> tuple[str, list[str]]:
    recorder = Recorder()
    out = rewrite_html(
        html, click_url=recorder, open_pixel_url="https://t.test/o/P" if pixel else None
    )
    return out, recorder.seen


@pytest.mark.parametrize(
    ("html", "expected", "urls"),
    [
        (
            '<p>Hi <a href="https://shop.test/?a=1&amp;b=2">shop</a>!</p>',
            '<p>Hi <a href="https://t.test/c/1">shop</a>!</p>',
            ["https://shop.test/?a=1&b=2"],
        ),
        # A reference without ";" before "=" stays as written in an attribute (WHATWG).
        (
            "<a href='http://x.test/?q=1&copy=2&amp;r=&#51;&#x34;&lt;'>x</a>",
            "<a href='https://t.test/c/1'>x</a>",
            ["http://x.test/?q=1&copy=2&r=34<"],
        ),
        (
            "<A HREF=HTTPS://Example.TEST/Path CLASS=btn>Go</A>",
            '<A HREF="https://t.test/c/1" CLASS=btn>Go</A>',
            ["HTTPS://Example.TEST/Path"],
        ),
        (
            '<a\nclass="x"\n  href = "https://x.test/a"\n>x</a>',
            '<a\nclass="x"\n  href = "https://t.test/c/1"\n>x</a>',
            ["https://x.test/a"],
        ),
        (
            '<a title="a > b" href="https://x.test/">x</a>',
            '<a title="a > b" href="https://t.test/c/1">x</a>',
            ["https://x.test/"],
        ),
        (
            '<a href="  https://x.test/a\nb  ">x</a>',
            '<a href="https://t.test/c/1">x</a>',
            ["https://x.test/ab"],
        ),
        (
            '<a href="https://例え.test/パス?q=ü">ünï ☃</a><p>日本語</p>',
            '<a href="https://t.test/c/1">ünï ☃</a><p>日本語</p>',
            ["https://例え.test/パス?q=ü"],
        ),
        # The first href is the one a browser keeps; a duplicate is left alone.
        (
            '<a href="https://one.test/" href="https://two.test/">x</a>',
            '<a href="https://t.test/c/1" href="https://two.test/">x</a>',
            ["https://one.test/"],
        ),
        (
            '<a href="https://x.test/"/>self-closing',
            '<a href="https://t.test/c/1"/>self-closing',
            ["https://x.test/"],
        ),
    ],
)
def test_links_are_rewritten(html: str, expected: str, urls: list[str]) -> None:
    out, seen = rewrite(html)
    assert out == expected
    assert seen == urls
    assert tracked_links(html) == urls


@pytest.mark.parametrize(
    "html",
    [
        '<a href="mailto:jane@example.com">mail</a>',
        '<a href="tel:+15551234">call</a>',
        '<a href="#top">top</a>',
        '<a href="/relative/path">rel</a>',
        '<a href="//proto-relative.test/">pr</a>',
        '<a href="javascript:alert(1)">js</a>',
        '<a href="{{ unsubscribe_url }}">unsubscribe</a>',
        '<a href="">empty</a><a href>bare</a><a name="anchor">named</a>',
        '<link href="https://fonts.test/css" rel="stylesheet"><area href="https://x.test/">',
        '<abbr href="https://x.test/">not a link</abbr><a:b href="https://x.test/">ns</a:b>',
        '<img src="https://img.test/a.png" alt="<a href=https://x.test/>">',
    ],
)
def test_other_links_and_tags_are_untouched(html: str) -> None:
    out, seen = rewrite(html)
    assert out == html
    assert seen == []
    assert out is html  # nothing to do: the very same string comes back


@pytest.mark.parametrize(
    "html",
    [
        '<!-- <a href="https://x.test/">commented</a> -->',
        '<!--[if mso]><a href="https://x.test/">outlook</a><![endif]-->',
        '<script>var s = "<a href=\\"https://x.test/\\">";</script>',
        '<style>a[href^="https://x.test/"]{color:red} /* <a href="https://x.test/"> */</style>',
        '<textarea><a href="https://x.test/">text</a></textarea>',
        '<title><a href="https://x.test/">t</a></title>',
        '<!DOCTYPE html><?xml version="1.0"?><![CDATA[ x ]]>',
        '<plaintext><a href="https://x.test/">plain</a>',
        "<p>1 < 2 and 3 > 2 & <3 </> </ p></p>",
    ],
)
def test_markup_that_is_not_a_tag_is_untouched(html: str) -> None:
    out, seen = rewrite(html)
    assert out == html
    assert seen == []


def test_raw_text_ends_at_its_own_end_tag_only() -> None:
    html = (
        '<style>p{}</styles></STYLE ><a href="https://x.test/">x</a>'
        '<script></scriptx><a href="https://no.test/"></script/><a href="https://y.test/">y</a>'
    )
    out, seen = rewrite(html)
    assert seen == ["https://x.test/", "https://y.test/"]
    assert '<a href="https://no.test/">' in out


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        (
            '<a data-posthorn-notrack href="https://x.test/">x</a>',
            '<a href="https://x.test/">x</a>',
        ),
        (
            '<a href="https://x.test/" data-posthorn-notrack>x</a>',
            '<a href="https://x.test/">x</a>',
        ),
        (
            '<a href="https://x.test/" DATA-POSTHORN-NOTRACK="yes" class="b">x</a>',
            '<a href="https://x.test/" class="b">x</a>',
        ),
        (
            '<a href="https://x.test/"data-posthorn-notrack>x</a>',
            '<a href="https://x.test/">x</a>',
        ),
        # Removing it must not glue "/" onto an unquoted value.
        (
            "<a href=https://x.test/ data-posthorn-notrack/>x</a>",
            "<a href=https://x.test/ />x</a>",
        ),
    ],
)
def test_notrack_links_keep_their_href_and_lose_the_attribute(html: str, expected: str) -> None:
    out, seen = rewrite(html)
    assert out == expected
    assert seen == []
    assert tracked_links(html) == []


def test_only_the_rewritten_parts_change() -> None:
    html = (
        "<!doctype html>\n<html><head><meta charset=utf-8><title>Week 48</title>"
        "<style>.a{color:red}</style></head>\n<BODY class='x'>\n"
        "<p>Hello&nbsp;Jane &amp; co,</p>\n"
        '<a class="btn" href="https://a.test/1?x=1&amp;y=2" target=_blank>One</a>\n'
        "<a href='mailto:x@y.test'>Mail</a>\n"
        '<a data-posthorn-notrack href="https://b.test/">Two</a>\n'
        '<!-- <a href="https://c.test/"> -->\n'
        "<a href=https://d.test/>Three</a>\n"
        "</BODY>\n</html>\n"
    )
    expected = (
        "<!doctype html>\n<html><head><meta charset=utf-8><title>Week 48</title>"
        "<style>.a{color:red}</style></head>\n<BODY class='x'>\n"
        "<p>Hello&nbsp;Jane &amp; co,</p>\n"
        '<a class="btn" href="https://t.test/c/1" target=_blank>One</a>\n'
        "<a href='mailto:x@y.test'>Mail</a>\n"
        '<a href="https://b.test/">Two</a>\n'
        '<!-- <a href="https://c.test/"> -->\n'
        '<a href="https://t.test/c/2">Three</a>\n'
        f"{PIXEL}</BODY>\n</html>\n"
    )
    out, seen = rewrite(html, pixel=True)
    assert out == expected
    assert seen == ["https://a.test/1?x=1&y=2", "https://d.test/"]


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>fragment</p>", f"<p>fragment</p>{PIXEL}"),
        ("<body><p>x</p></body >", f"<body><p>x</p>{PIXEL}</body >"),
        ("<body>a</body><!-- </body> --></html>", f"<body>a{PIXEL}</body><!-- </body> --></html>"),
        ("", PIXEL),
        ("x <", f"x <{PIXEL}"),
        # Ends inside a comment, a tag or raw text: anything appended would be swallowed.
        ("<p>x</p><!-- unclosed", "<p>x</p><!-- unclosed"),
        ('<p>x</p><a href="https://x.test/', '<p>x</p><a href="https://x.test/'),
        ("<p>x</p><script>never closed", "<p>x</p><script>never closed"),
    ],
)
def test_pixel_goes_before_the_end_of_the_body(html: str, expected: str) -> None:
    out, _ = rewrite(html, pixel=True)
    assert out == expected


def test_pixel_url_is_escaped() -> None:
    out = rewrite_html("<p>x</p>", click_url=None, open_pixel_url='https://t.test/o?a=1&b="2"')
    assert 'src="https://t.test/o?a=1&amp;b=&quot;2&quot;"' in out


def test_without_click_url_links_stay_but_the_opt_out_attribute_goes() -> None:
    html = '<a href="https://x.test/">x</a><a data-posthorn-notrack href="https://y.test/">y</a>'
    out = rewrite_html(html, click_url=None, open_pixel_url=None)
    assert out == '<a href="https://x.test/">x</a><a href="https://y.test/">y</a>'


def test_click_url_output_is_escaped_in_the_attribute() -> None:
    html = "<a href='https://x.test/'>x</a>"
    out = rewrite_html(html, click_url=lambda u: 'https://t.test/?a=1&b="x"', open_pixel_url=None)
    assert out == "<a href='https://t.test/?a=1&amp;b=&quot;x&quot;'>x</a>"


@pytest.mark.parametrize(
    "html",
    [
        "<a " + "b" * 200_000,
        '<a href="' + "x" * 200_000,
        "<a " + "b=" * 100_000,
        "<a " + "b='' " * 50_000,
        "<!--" + "-" * 200_000,
        "<" * 200_000,
        "</a " + "x=" * 100_000,
        "<a " + " / " * 100_000,
    ],
)
def test_pathological_inputs_take_linear_time(html: str) -> None:
    started = time.perf_counter()
    rewrite_html(html, click_url=lambda u: u, open_pixel_url="https://t.test/o")
    assert time.perf_counter() - started < 1.0


# A seeded fuzz loop: documents glued together from well-formed and broken fragments.
FRAGMENTS = [
    "<p>",
    "</p>",
    "text ",
    "ünï ☃ ",
    "&amp;",
    "&copy=",
    "<",
    ">",
    '"',
    "'",
    "=",
    "/",
    "<a ",
    "<A HREF=",
    "href=",
    '"https://x.test/a?b=1&amp;c=2"',
    "'http://y.test/'",
    "https://z.test/",
    "mailto:a@b.test",
    " data-posthorn-notrack ",
    "<a href='https://q.test/'>q</a>",
    '<a href="https://r.test/" title="a>b">r</a>',
    "<!--",
    "-->",
    "--!>",
    "<!DOCTYPE html>",
    "<script>",
    "</script>",
    "<style>",
    "</style >",
    "<textarea>",
    "</textarea>",
    "<body>",
    "</body>",
    "</BODY>",
    "<br/>",
    "\n",
    "\t",
    "\x00",
    "<?",
    "<!",
    "</",
    "</>",
]


def test_fuzz_never_crashes_and_keeps_the_document() -> None:
    rng = random.Random(20261123)
    for round_ in range(3000):
        html = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(1, 40)))
        recorder = Recorder()
        out = rewrite_html(html, click_url=recorder, open_pixel_url="https://t.test/o/P")
        links = tracked_links(html)
        assert recorder.seen == links, (round_, html)
        # Rewriting creates no link and loses none: afterwards the links are ours, plus those
        # that opted out (now without the attribute that hid them from tracked_links).
        ours = [f"https://t.test/c/{n + 1}" for n in range(len(links))]
        after = tracked_links(out)
        assert [u for u in after if u.startswith("https://t.test/c/")] == ours, (round_, html)
        stripped = rewrite_html(html, click_url=None, open_pixel_url=None)
        assert len(after) == len(tracked_links(stripped))
        # Without links to follow or pixel to add, only the opt-out attribute may go.
        if "data-posthorn-notrack" not in html:
            assert stripped is html


def test_agrees_with_the_standard_library_on_well_formed_documents() -> None:
    class Hrefs(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.urls: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            href = next((v for k, v in attrs if k == "href"), None)
            if tag == "a" and href and href.strip().lower().startswith(("http://", "https://")):
                self.urls.append(href.strip())

    parts = [
        "<p class='x'>hello</p>",
        '<a href="https://a.test/?x=1&amp;y=2">a</a>',
        "<A HREF='http://b.test/'>b</A>",
        "<a href=https://c.test/c>c</a>",
        '<a href="mailto:m@test">m</a>',
        "<!-- <a href='https://hidden.test/'> -->",
        "<script>document.write('<a href=\"https://s.test/\">')</script>",
        '<img src="https://img.test/x.png" alt="">',
        '<a title="1 > 0" href="https://d.test/">d</a>',
        "<br/>",
        "text &amp; more",
    ]
    rng = random.Random(4)
    for _ in range(500):
        html = "".join(rng.choice(parts) for _ in range(rng.randrange(1, 25)))
        parser = Hrefs()
        parser.feed(html)
        parser.close()
        assert tracked_links(html) == parser.urls, html
