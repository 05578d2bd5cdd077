"""Telling opens and clicks made by machines from those made by people.

Mailbox providers and security gateways fetch images and follow links on the recipient's
behalf. The events are still recorded (they are real requests), flagged ``machine`` so that
statistics and the customer can leave them out. The rules are heuristics over what a request
shows: its User-Agent and its timing.

Opens:
- Apple Mail Privacy Protection (iOS 15 / macOS 12 and later) downloads the remote content
  of every message through Apple's proxies as soon as the message arrives, whether or not it
  is read; those fetches carry the bare User-Agent ``Mozilla/5.0`` and no other token, which
  no browser or mail client sends.
- Gmail fetches every image through its proxy (``… (via ggpht.com GoogleImageProxy)``), Yahoo
  through ``YahooMailProxy``: the request says nothing reliable about the reader.
- Any fetch within a few seconds of delivery is a prefetch: nobody reads mail that fast.

Clicks:
- Link scanners (Microsoft Safe Links, Proofpoint, Mimecast, Barracuda …), chat previewers
  and plain HTTP libraries announce themselves in their User-Agent, or send none.
- A scanner follows every link of a message at once; a person does not click all of them
  within the same second.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta

PREFETCH_WINDOW = timedelta(seconds=10)
CLICK_BURST = timedelta(seconds=1)

# Apple MPP's proxy fetch: exactly this, no platform comment, no engine token.
_APPLE_PRIVACY_PROXY = "Mozilla/5.0"
_IMAGE_PROXIES = re.compile(
    r"GoogleImageProxy|ggpht\.com|YahooMailProxy|BingPreview",
    re.IGNORECASE,
)
_LINK_SCANNERS = re.compile(
    r"(?:bot|crawler|spider|scanner|preview)\b|headless|"
    r"safelinks|urldefense|proofpoint|mimecast|barracuda|symantec|messagelabs|forcepoint|"
    r"trend ?micro|sophos|ironport|fortiguard|cloudmark|"
    r"Microsoft Office Existence Discovery|"
    r"facebookexternalhit|slackbot|twitterbot|linkedinbot|discordbot|telegrambot|whatsapp|"
    r"googleimageproxy|"
    r"^(?:curl|wget|python-requests|python-urllib|python-httpx|aiohttp|go-http-client|"
    r"java|okhttp|axios|node-fetch|libwww-perl|httpclient)\b",
    re.IGNORECASE,
)


def is_machine_open(
    *,
    user_agent: str | None,
    at: datetime,
    delivered_at: datetime | None,
    prefetch_window: timedelta = PREFETCH_WINDOW,
) -> bool:
    """Whether a pixel fetch at ``at`` was made by a proxy or prefetcher, not a reader."""
    agent = (user_agent or "").strip()
    if not agent or agent == _APPLE_PRIVACY_PROXY or _IMAGE_PROXIES.search(agent):
        return True
    return _within(at, delivered_at, prefetch_window)


def is_machine_click(
    *,
    user_agent: str | None,
    url: str,
    at: datetime,
    links: Collection[str],
    recent_clicks: Iterable[tuple[str, datetime]],
    burst: timedelta = CLICK_BURST,
) -> bool:
    """Whether a click on ``url`` at ``at`` was made by a link scanner.

    ``links`` are the tracked links of the email, ``recent_clicks`` the earlier clicks on it
    by the same recipient as ``(url, when)``. The click that completes a set of clicks on every
    link (two or more) within ``burst`` is a machine's.
    """
    agent = (user_agent or "").strip()
    if not agent or agent == _APPLE_PRIVACY_PROXY or _LINK_SCANNERS.search(agent):
        return True
    distinct = set(links)
    if len(distinct) < 2:
        return False
    clicked = {url} | {u for u, when in recent_clicks if timedelta(0) <= at - when <= burst}
    return distinct <= clicked


def _within(at: datetime, since: datetime | None, window: timedelta) -> bool:
    return since is not None and timedelta(0) <= at - since <= window
