"""Per-recipient changes to a message: click-tracked links, an open pixel, unsubscribe links.

Links are found by a small tokenizer that follows the WHATWG HTML tokenization states just far
enough to know where tags are: comments, bogus comments, raw-text elements (``<style>``,
``<script>``, ``<textarea>`` …) and quoted attribute values, where a ``<`` or ``>`` is text.
Only the ``href`` of each ``<a>`` start tag (and the opt-out attribute) is rewritten; every
other byte of the document comes out as it went in.

Known limits: links inside Outlook conditional comments (``<!--[if mso]>``) are comments to
every other client and are left alone, as is the rare script-data double-escape state.
"""

from __future__ import annotations

import dataclasses
import html as html_lib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.entities import html5

from posthorn.mime.compose import MessageSpec, replace_text_parts
from posthorn.mime.headers import format_header
from posthorn.mime.parse import replace_fields

NOTRACK_ATTRIBUTE = "data-posthorn-notrack"
UNSUBSCRIBE_PLACEHOLDER = re.compile(r"\{\{\s*unsubscribe_url\s*\}\}")
# RFC 8058 §3.1: the one value of List-Unsubscribe-Post.
ONE_CLICK = "List-Unsubscribe=One-Click"

_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# WHATWG §13.2.5: a tag from its name to its ">". Possessive quantifiers keep it linear (a tag
# can be split into attributes in only one way); an "=" must be followed by a value, and a
# quoted value runs to its closing quote whatever it holds. A tag that does not match runs to
# the end of the input (eof-in-tag), and nothing after it is touched.
_TAG = re.compile(
    r"""
    (?P<name>[a-zA-Z][^\t\n\f\r />]*+)
    (?:
        [\t\n\f\r /]++
      | [^\t\n\f\r />][^\t\n\f\r /=>]*+
        (?: [\t\n\f\r ]*+ = [\t\n\f\r ]*+
            (?: "[^"]*+" | '[^']*+' | [^\t\n\f\r >"'][^\t\n\f\r >]*+ | (?=>) )
          | (?![\t\n\f\r ]*+=) )
    )*+
    >""",
    re.VERBOSE,
)
_PLAIN_END_TAG = re.compile(r"(?P<name>[a-zA-Z][^\t\n\f\r />]*+)[\t\n\f\r ]*+")
# One attribute of a tag already matched by _TAG, with the separators before it.
_ATTRIBUTE = re.compile(
    r"""
    (?P<sep>[\t\n\f\r /]*+)
    (?P<name>[^\t\n\f\r />][^\t\n\f\r /=>]*+)
    (?: [\t\n\f\r ]*+ = [\t\n\f\r ]*+
        (?P<value>"[^"]*+"|'[^']*+'|[^\t\n\f\r >"'][^\t\n\f\r >]*+|(?=>)) )?
    """,
    re.VERBOSE,
)
# WHATWG §13.2.6.2: elements whose content is text up to their own end tag (RAWTEXT, RCDATA
# and script data); <plaintext> has no end at all.
_RAW_TEXT_END = {
    name: re.compile(rf"</{name}(?=[\t\n\f\r />])", re.IGNORECASE)
    for name in ("script", "style", "xmp", "iframe", "noembed", "noframes", "textarea", "title")
}
# WHATWG §13.2.5.72 character references, as CPython's html.unescape finds them.
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
_HTTP = re.compile(r"https?://", re.IGNORECASE)
# URL Standard §4.4 (basic URL parser): leading and trailing C0 controls and spaces are
# stripped, tabs and newlines anywhere are removed.
_C0_AND_SPACE = "".join(chr(code) for code in range(0x21))
_TAB_NEWLINE = {0x09: None, 0x0A: None, 0x0D: None}


@dataclass(frozen=True, slots=True)
class _Scan:
    anchors: list[tuple[int, int]]  # the span of each <a …> start tag
    body_end: int | None  # where the last </body> end tag starts
    complete: bool  # the input ends in the data state: text appended there is body text


def rewrite_html(
    html: str, *, click_url: Callable[[str], str] | None, open_pixel_url: str | None
) -> str:
    """Send every http(s) link of an ``<a>`` through ``click_url`` (unless it carries
    ``data-posthorn-notrack``, which is removed) and add a 1×1 open pixel before ``</body>``
    (or at the end). ``click_url=None`` leaves links as they are."""
    scan = _scan(html)
    edits: list[tuple[int, int, str]] = []
    for start, end in scan.anchors:
        replacement = _rewrite_anchor(html[start:end], click_url)
        if replacement is not None:
            edits.append((start, end, replacement))
    if open_pixel_url is not None:
        where = scan.body_end
        if where is None and scan.complete:
            where = len(html)
        # An input that ends inside a comment, tag or raw text would swallow the pixel.
        if where is not None:
            edits.append((where, where, _pixel(open_pixel_url)))
            edits.sort(key=lambda edit: edit[0])
    return _splice(html, edits)


def tracked_links(html: str) -> list[str]:
    """The URLs that :func:`rewrite_html` would send through ``click_url``, in order."""
    links: list[str] = []
    for start, end in _scan(html).anchors:
        href, notrack = _href(html[start:end])
        if href is not None and not notrack:
            url = _link_target(href)
            if url is not None:
                links.append(url)
    return links


def personalise(
    spec: MessageSpec,
    *,
    html_rewrite: Callable[[str], str] | None,
    unsubscribe: tuple[str, str] | None,
) -> MessageSpec:
    """The message as one recipient gets it.

    ``unsubscribe`` is ``(https_url, mailto_url)``: both go into List-Unsubscribe (RFC 2369
    §3.2, most preferred first) and replace ``{{ unsubscribe_url }}`` in the bodies. Links are
    rewritten first, so the unsubscribe link itself is never click-tracked.
    """
    html, text = personal_bodies(
        spec.html, spec.text, html_rewrite=html_rewrite, unsubscribe=unsubscribe
    )
    headers = spec.headers
    if unsubscribe is not None:
        # RFC 2369 §3 and RFC 8058 §3.1: one of each field; Posthorn's replace the client's.
        fields = [(name, value) for name, value in headers if name.lower() not in _UNSUBSCRIBE]
        headers = (*fields, *unsubscribe_fields(*unsubscribe))
    return dataclasses.replace(spec, html=html, text=text, headers=headers)


def personalise_message(
    message: bytes,
    *,
    html: str | None,
    text: str | None,
    html_rewrite: Callable[[str], str] | None,
    unsubscribe: tuple[str, str] | None,
) -> bytes:
    """What :func:`personalise` would compose, made from the shared ``message`` that
    :func:`~posthorn.mime.compose.compose` made of a spec with this ``html`` and ``text``.

    Only the text parts and the unsubscribe fields are made anew; the attachments are copied
    as they are, so a copy per recipient costs little more than the copy itself.
    """
    new_html, new_text = personal_bodies(
        html, text, html_rewrite=html_rewrite, unsubscribe=unsubscribe
    )
    fields = b""
    if unsubscribe is not None:
        fields = b"".join(
            format_header(name, value, encode_long_words=False)
            for name, value in unsubscribe_fields(*unsubscribe)
        )
    return replace_text_parts(
        message,
        text=new_text if new_text != text else None,
        html=new_html if new_html != html else None,
        drop_fields=_UNSUBSCRIBE if unsubscribe is not None else (),
        add_fields=fields,
    )


def personal_bodies(
    html: str | None,
    text: str | None,
    *,
    html_rewrite: Callable[[str], str] | None,
    unsubscribe: tuple[str, str] | None,
) -> tuple[str | None, str | None]:
    """The HTML and text bodies with tracked links and this recipient's unsubscribe URL."""
    if html is not None and html_rewrite is not None:
        html = html_rewrite(html)
    if unsubscribe is not None:
        https_url = unsubscribe[0]
        if html is not None:
            escaped = html_lib.escape(https_url, quote=True)
            html = UNSUBSCRIBE_PLACEHOLDER.sub(lambda _m: escaped, html)
        if text is not None:
            text = UNSUBSCRIBE_PLACEHOLDER.sub(lambda _m: https_url, text)
    return html, text


_UNSUBSCRIBE = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


def unsubscribe_fields(https_url: str, mailto_url: str) -> list[tuple[str, str]]:
    """List-Unsubscribe (RFC 2369 §3.2, most preferred first) and, for an https URL, the
    one-click List-Unsubscribe-Post (RFC 8058 §3.1; a plain-http set-up gets RFC 2369 only)."""
    fields = [("List-Unsubscribe", f"<{https_url}>, <{mailto_url}>")]
    if https_url.lower().startswith("https://"):
        fields.append(("List-Unsubscribe-Post", ONE_CLICK))
    return fields


def add_unsubscribe(message: bytes, unsubscribe: tuple[str, str]) -> bytes:
    """A message someone else composed (SMTP), with this recipient's unsubscribe fields in
    place of any it had. Its bodies stay as written: their encodings are the author's."""
    fields = b"".join(
        format_header(name, value, encode_long_words=False)
        for name, value in unsubscribe_fields(*unsubscribe)
    )
    return replace_fields(message, _UNSUBSCRIBE, fields)


def _scan(html: str) -> _Scan:
    anchors: list[tuple[int, int]] = []
    body_end: int | None = None
    find = html.find
    size = len(html)
    pos = 0
    while True:
        lt = find("<", pos)
        if lt < 0 or lt + 1 >= size:
            return _Scan(anchors, body_end, True)
        after = html[lt + 1]
        if after in _LETTERS:  # a start tag
            match = _TAG.match(html, lt + 1)
            if match is None:
                return _Scan(anchors, body_end, False)
            pos = match.end()
            name = match["name"].lower()
            if name == "a":
                anchors.append((lt, pos))
            elif name == "plaintext":
                return _Scan(anchors, body_end, False)
            elif name in _RAW_TEXT_END:
                close = _RAW_TEXT_END[name].search(html, pos)
                if close is None:
                    return _Scan(anchors, body_end, False)
                pos = close.start()
        elif after == "/":  # an end tag, or a bogus comment
            if lt + 2 >= size:
                return _Scan(anchors, body_end, True)
            gt = find(">", lt + 2)
            plain = _PLAIN_END_TAG.fullmatch(html, lt + 2, gt) if gt > 0 else None
            if plain is not None:  # the usual "</td>": a name alone, so the first ">" ends it
                if plain.end("name") - lt == 6 and plain["name"].lower() == "body":
                    body_end = lt
                pos = gt + 1
            elif html[lt + 2] in _LETTERS:
                match = _TAG.match(html, lt + 2)
                if match is None:
                    return _Scan(anchors, body_end, False)
                if match["name"].lower() == "body":
                    body_end = lt
                pos = match.end()
            elif html[lt + 2] == ">":  # "</>" is dropped
                pos = lt + 3
            else:
                gt = find(">", lt + 2)
                if gt < 0:
                    return _Scan(anchors, body_end, False)
                pos = gt + 1
        elif after == "!" and html.startswith("<!--", lt):
            end = _comment_end(html, lt + 4)
            if end < 0:
                return _Scan(anchors, body_end, False)
            pos = end
        elif after in "!?":  # <!DOCTYPE …>, <![CDATA[ …, <? …: up to the next ">"
            gt = find(">", lt + 2)
            if gt < 0:
                return _Scan(anchors, body_end, False)
            pos = gt + 1
        else:  # a "<" that starts nothing is text
            pos = lt + 1


def _comment_end(html: str, start: int) -> int:
    """Where the comment whose text starts at ``start`` ends (after its closing), or -1."""
    # WHATWG §13.2.5.43-44: "<!-->" and "<!--->" are (abruptly) closed comments.
    if html.startswith(">", start):
        return start + 1
    if html.startswith("->", start):
        return start + 2
    ends = [
        (at, len(closer)) for closer in ("-->", "--!>") if (at := html.find(closer, start)) >= 0
    ]
    if not ends:
        return -1
    at, length = min(ends)
    return at + length


def _attributes(tag: str) -> Iterator[re.Match[str]]:
    """The attributes of a start tag matched by _TAG, in order (the name is skipped)."""
    pos = 1
    while pos < len(tag) and tag[pos] not in "\t\n\f\r />":
        pos += 1
    while True:
        match = _ATTRIBUTE.match(tag, pos)
        if match is None:
            return
        yield match
        pos = match.end()


def _href(tag: str) -> tuple[re.Match[str] | None, bool]:
    """The first href attribute (the one a browser keeps) and whether the tag opts out."""
    href = None
    notrack = False
    for attribute in _attributes(tag):
        name = attribute["name"].lower()
        if name == "href" and href is None:
            href = attribute
        elif name == NOTRACK_ATTRIBUTE:
            notrack = True
    return href, notrack


def _link_target(href: re.Match[str]) -> str | None:
    """The URL an href attribute points to, when it is an http(s) URL."""
    value = href["value"]
    if not value:
        return None
    if value[0] in "\"'":
        value = value[1:-1]
    url = _unescape_attribute(value).strip(_C0_AND_SPACE)
    if "\t" in url or "\n" in url or "\r" in url:
        url = url.translate(_TAB_NEWLINE)
    return url if _HTTP.match(url) else None


def _rewrite_anchor(tag: str, click_url: Callable[[str], str] | None) -> str | None:
    """The tag with its link wrapped and the opt-out attribute removed; None if unchanged."""
    edits: list[tuple[int, int, str]] = []
    href: re.Match[str] | None = None
    notrack = False
    for attribute in _attributes(tag):
        name = attribute["name"].lower()
        if name == "href" and href is None:
            href = attribute
        elif name == NOTRACK_ATTRIBUTE:
            notrack = True
            start, end = attribute.start("name"), attribute.end()
            # Drop the white space before it too, unless what follows would then run into
            # the previous attribute (an unquoted value ending right before "/").
            following = tag[end : end + 1]
            separator = attribute["sep"]
            if separator and separator.strip("\t\n\f\r ") == "" and following in "\t\n\f\r >":
                start = attribute.start()
            edits.append((start, end, ""))
    if href is not None and not notrack and click_url is not None:
        url = _link_target(href)
        if url is not None:
            mark = href["value"][0] if href["value"][0] in "\"'" else '"'
            quoted = mark + html_lib.escape(click_url(url), quote=True) + mark
            edits.append((href.start("value"), href.end("value"), quoted))
    if not edits:
        return None
    edits.sort(key=lambda edit: edit[0])
    return _splice(tag, edits)


def _splice(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, replacement)`` applied; edits in order, disjoint."""
    if not edits:
        return text
    parts: list[str] = []
    last = 0
    for start, end, replacement in edits:
        parts.append(text[last:start])
        parts.append(replacement)
        last = end
    parts.append(text[last:])
    return "".join(parts)


def _unescape_attribute(value: str) -> str:
    """Decode character references as the HTML tokenizer does inside an attribute value."""
    ampersands = value.count("&")
    if not ampersands:
        return value
    if value.count("&amp;") == ampersands:  # the usual case, as in "?a=1&amp;b=2"
        return value.replace("&amp;", "&")
    return _CHARREF.sub(_charref, value)


def _charref(match: re.Match[str]) -> str:
    ref = match[1]
    if ref[0] == "#":
        return html_lib.unescape(match[0])
    following = match.string[match.end() : match.end() + 1]
    for length in range(len(ref), 1, -1):
        name = ref[:length]
        if name not in html5:
            continue
        # WHATWG §13.2.5.73: in an attribute, a reference without ";" followed by "=" or an
        # alphanumeric stays as written ("?a=1&copy=2" keeps its "&copy").
        after = ref[length : length + 1] or following
        if not name.endswith(";") and (after == "=" or (after.isascii() and after.isalnum())):
            return match[0]
        return html5[name] + ref[length:]
    return match[0]


def _pixel(url: str) -> str:
    src = html_lib.escape(url, quote=True)
    return f'<img src="{src}" width="1" height="1" alt="" style="display:none" border="0" />'
