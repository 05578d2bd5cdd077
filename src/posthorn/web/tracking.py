"""The public tracking and unsubscribe endpoints: no key, no login, no cookie.

``GET /t/o/{token}``  the open pixel (always served; an event only for a genuine token)
``GET /t/c/{token}``  a click: 302 to the URL inside the signed token, or 404
``GET /u/{token}``    a confirmation page that changes nothing (link scanners fetch GETs)
``POST /u/{token}``   RFC 8058 one-click unsubscribe, also what the confirmation form sends
"""

from __future__ import annotations

import base64
import contextlib
import email.policy
import html
import logging
from email.message import Message
from email.parser import BytesParser
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from posthorn.api.deps import ServicesDep, client_ip

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# The smallest transparent GIF: 1×1, one palette entry.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
MAX_FORM_BYTES = 16 * 1024
# Tokens travel in these URLs: never cache them, never pass them on in a Referer.
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_PAGE_HEADERS = {
    **_PRIVATE,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Robots-Tag": "noindex",
}
# RFC 3986 §2.2 reserved characters and "%": what a Location keeps as it is.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"


@router.get("/t/o/{token}")
async def open_pixel(token: str, request: Request, svc: ServicesDep) -> Response:
    try:
        await svc.tracking.record_open(
            token, ip=client_ip(request, svc.settings), user_agent=_user_agent(request)
        )
    except Exception:  # the image must load whatever happens to the bookkeeping
        log.exception("recording an open failed")
    return Response(PIXEL, media_type="image/gif", headers=_PRIVATE)


@router.get("/t/c/{token}")
async def click(token: str, request: Request, svc: ServicesDep) -> Response:
    url = await svc.tracking.record_click(
        token, ip=client_ip(request, svc.settings), user_agent=_user_agent(request)
    )
    if url is None:
        return _page("Link not found", "This link is not valid.", status_code=404)
    return Response(status_code=302, headers={**_PRIVATE, "Location": _location(url)})


@router.get("/u/{token}")
async def unsubscribe_page(token: str, svc: ServicesDep) -> Response:
    target = await svc.tracking.unsubscription(token)
    if target is None:
        return _page("Link not found", "This unsubscribe link is not valid.", status_code=404)
    # The same body a mail client sends for a one-click unsubscribe (RFC 8058 §3.2).
    form = (
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page(
        "Unsubscribe",
        f"Stop sending these emails to <b>{html.escape(target.recipient)}</b>?",
        extra=form,
    )


@router.post("/u/{token}")
async def unsubscribe(token: str, request: Request, svc: ServicesDep) -> Response:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES or not one_click(request.headers.get("content-type", ""), body):
        return _page("Unsubscribe", "Use the button on the unsubscribe page.", status_code=400)
    done = await svc.tracking.unsubscribe(
        token, ip=client_ip(request, svc.settings), user_agent=_user_agent(request)
    )
    if done is None:
        return _page("Link not found", "This unsubscribe link is not valid.", status_code=404)
    # RFC 8058 §3.2: answer the POST itself; no redirect, nothing more to do.
    return _page(
        "Unsubscribed",
        f"<b>{html.escape(done.recipient)}</b> will not receive these emails any more.",
    )


def one_click(content_type: str, body: bytes) -> bool:
    """Whether a POST body holds ``List-Unsubscribe=One-Click``, in either encoding RFC 8058
    §3.2 allows: application/x-www-form-urlencoded or multipart/form-data."""
    if content_type.lower().startswith("multipart/form-data"):
        try:
            head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
            message = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
            return any(
                part.get_param("name", header="content-disposition") == "List-Unsubscribe"
                and _payload(part) == b"One-Click"
                for part in message.walk()
                if not part.is_multipart()
            )
        except (ValueError, TypeError, AttributeError, UnicodeError):
            return False
    fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return ("List-Unsubscribe", "One-Click") in fields


def _payload(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload.strip() if isinstance(payload, bytes) else b""


def _location(url: str) -> str:
    """The URL as a Location value: an IDN host in A-labels (RFC 5891), the rest of any
    non-ASCII or unsafe character %-encoded as UTF-8 (RFC 3987 §3.1)."""
    if not url.isascii():
        parts = urlsplit(url)
        userinfo, at, hostport = parts.netloc.rpartition("@")
        host, colon, port = hostport.partition(":")
        # A host IDNA refuses is left to quote(): a broken link stays broken, but a link.
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
        url = urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}{colon}{port}"))
    return quote(url, safe=_URL_SAFE)


def _user_agent(request: Request) -> str:
    return request.headers.get("user-agent", "")[:512]


def _page(title: str, message: str, *, extra: str = "", status_code: int = 200) -> HTMLResponse:
    """A small self-contained page; callers escape whatever they put into ``message``."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;"
        "padding:0 1rem;color:#222}button{font-size:1rem;padding:.5rem 1.2rem}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p>{message}</p>{extra}</body></html>"
    )
    return HTMLResponse(body, status_code=status_code, headers=_PAGE_HEADERS)
