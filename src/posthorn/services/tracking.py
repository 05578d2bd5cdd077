"""Open and click tracking and one-click unsubscribe: making the links, recording the events.

:func:`tracking_for` gives intake what to pass to :func:`posthorn.mime.tracking.personalise`
for one recipient. :class:`Tracking` answers the requests those links make: it checks the
token, finds the email, and writes ``opened``, ``clicked`` and ``unsubscribed`` events
through :func:`posthorn.store.events.insert_events` (so webhooks see them too).
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from posthorn.domain.machine_activity import CLICK_BURST, is_machine_click, is_machine_open
from posthorn.domain.tracking_tokens import Kind, TokenData, derive_key, make_token, read_token
from posthorn.mime.tracking import rewrite_html, tracked_links
from posthorn.settings import Settings
from posthorn.store import suppressions
from posthorn.store import tracking as repo
from posthorn.store.database import Database
from posthorn.store.events import insert_events
from posthorn.store.tables import utcnow

log = logging.getLogger(__name__)

MAX_LIST_ID = 60  # the suppressions.scope column
_LINK_CACHE_SIZE = 512


@dataclass(frozen=True, slots=True)
class Personalisation:
    """What :func:`~posthorn.mime.tracking.personalise` needs for one recipient."""

    html_rewrite: Callable[[str], str] | None
    unsubscribe: tuple[str, str] | None  # (https URL, mailto URL)


@dataclass(frozen=True, slots=True)
class Unsubscription:
    recipient: str
    list_id: str | None
    created: bool  # False when the address was already suppressed in that scope


def tracking_for(
    settings: Settings,
    *,
    account_id: str,
    email_id: str,
    recipient: str,
    track_opens: bool,
    track_clicks: bool,
    unsubscribe: bool,
    list_id: str | None = None,
) -> Personalisation:
    """Per-recipient link makers, all under ``settings.public_url``."""
    if list_id is not None and not 0 < len(list_id) <= MAX_LIST_ID:
        raise ValueError(f"list id must be 1 to {MAX_LIST_ID} characters")
    key = _key(settings.secret_key)
    base = settings.public_url.rstrip("/")

    def token(kind: Kind, **extra: Any) -> str:
        return make_token(key, TokenData(kind, account_id, email_id, recipient, **extra))

    def click_url(url: str) -> str:
        try:
            return f"{base}/t/c/{token(Kind.CLICK, url=url)}"
        except ValueError:  # too long to carry in a token: the link stays as it was
            return url

    html_rewrite = None
    if track_opens or track_clicks:
        html_rewrite = functools.partial(
            rewrite_html,
            click_url=click_url if track_clicks else None,
            open_pixel_url=f"{base}/t/o/{token(Kind.OPEN)}" if track_opens else None,
        )
    links = None
    if unsubscribe:
        unsubscribe_token = token(Kind.UNSUBSCRIBE, list_id=list_id)
        links = (
            f"{base}/u/{unsubscribe_token}",
            f"mailto:{unsubscribe_address(settings, unsubscribe_token)}",
        )
    return Personalisation(html_rewrite=html_rewrite, unsubscribe=links)


def unsubscribe_address(settings: Settings, token: str) -> str:
    """The RFC 2369 mailto target: ``unsubscribe+<token>@<hostname>``. Whatever reads mail
    sent there passes the part after "+" to :meth:`Tracking.unsubscribe`.

    A token is longer than the 64 octets RFC 5321 §4.5.3.1.1 sets for a local part; that limit
    binds the receiving server (ours), and SMTP clients pass longer ones through unchanged.
    """
    return f"unsubscribe+{token}@{settings.hostname}"


@functools.lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    return derive_key(secret)


class Tracking:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._key = _key(settings.secret_key)
        # Tracked links per email id: an email's HTML never changes once accepted.
        self._links: OrderedDict[str, frozenset[str]] = OrderedDict()

    async def record_open(self, token: str, *, ip: str, user_agent: str) -> bool:
        """Record an ``opened`` event; ``False`` (and nothing written) for a bad token."""
        data = read_token(self._key, token, kind=Kind.OPEN)
        if data is None:
            return False
        now = utcnow()
        async with self._db.write() as conn:
            email = await repo.tracked_email(
                conn, account_id=data.account_id, email_id=data.email_id, recipient=data.recipient
            )
            if email is None:
                return False
            machine = is_machine_open(
                user_agent=user_agent, at=now, delivered_at=email.delivered_at
            )
            details = {"ip": ip, "user_agent": user_agent, "machine": machine}
            await insert_events(conn, [_event("opened", data, email, details, now)])
        return True

    async def record_click(self, token: str, *, ip: str, user_agent: str) -> str | None:
        """Record a ``clicked`` event and return where to redirect; ``None`` for a bad token."""
        data = read_token(self._key, token, kind=Kind.CLICK)
        if (
            data is None
            or data.url is None
            or not data.url.lower().startswith(("https://", "http://"))
        ):
            return None
        cached = self._links.get(data.email_id)
        async with self._db.read() as conn:
            email = await repo.tracked_email(
                conn,
                account_id=data.account_id,
                email_id=data.email_id,
                recipient=data.recipient,
                with_html=cached is None,
            )
        if email is None:
            return None
        links = cached if cached is not None else self._remember(email.id, email.html)
        now = utcnow()
        async with self._db.write() as conn:
            recent = await repo.recent_clicks(
                conn, email_id=email.id, recipient=data.recipient, since=now - CLICK_BURST
            )
            machine = is_machine_click(
                user_agent=user_agent, url=data.url, at=now, links=links, recent_clicks=recent
            )
            details = {"url": data.url, "ip": ip, "user_agent": user_agent, "machine": machine}
            await insert_events(conn, [_event("clicked", data, email, details, now)])
        return data.url

    async def unsubscription(self, token: str) -> TokenData | None:
        """What an unsubscribe link is for, when it is genuine and its email is known."""
        data = read_token(self._key, token, kind=Kind.UNSUBSCRIBE)
        if data is None:
            return None
        async with self._db.read() as conn:
            email = await repo.tracked_email(
                conn, account_id=data.account_id, email_id=data.email_id, recipient=data.recipient
            )
        return data if email is not None else None

    async def unsubscribe(self, token: str, *, ip: str, user_agent: str) -> Unsubscription | None:
        """Suppress the recipient (in the token's list, if it names one) with reason
        ``unsubscribe``. Repeating it changes nothing; ``None`` for a bad token."""
        data = read_token(self._key, token, kind=Kind.UNSUBSCRIBE)
        if data is None:
            return None
        now = utcnow()
        async with self._db.write() as conn:
            email = await repo.tracked_email(
                conn, account_id=data.account_id, email_id=data.email_id, recipient=data.recipient
            )
            if email is None:
                return None
            created = await suppressions.add(
                conn,
                account_id=data.account_id,
                address=data.recipient,
                reason="unsubscribe",
                now=now,
                scope=data.list_id or "",
                email_id=data.email_id,
            )
            # Only the request that made the suppression tells of it: a mailbox provider
            # retrying its POST must not fire the customer's webhook twice.
            if created:
                details = {"ip": ip, "user_agent": user_agent, "list_id": data.list_id}
                await insert_events(conn, [_event("unsubscribed", data, email, details, now)])
        log.info("unsubscribe via email %s (new suppression: %s)", data.email_id, created)
        return Unsubscription(recipient=data.recipient, list_id=data.list_id, created=created)

    def _remember(self, email_id: str, html: str | None) -> frozenset[str]:
        links = frozenset(tracked_links(html)) if html else frozenset()
        self._links[email_id] = links
        if len(self._links) > _LINK_CACHE_SIZE:
            self._links.popitem(last=False)
        return links


def _event(
    kind: str, data: TokenData, email: repo.TrackedEmail, details: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "account_id": email.account_id,
        "email_id": email.id,
        "delivery_id": email.delivery_id,
        "type": kind,
        "recipient": data.recipient,
        "sender": email.sender,
        "source": email.source,
        "data": details,
        "created_at": now,
    }
