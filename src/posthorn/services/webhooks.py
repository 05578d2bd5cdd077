"""Webhook endpoints: register, change, rotate the secret, send a test, read the attempts.

Events reach endpoints through the outbox (``store/events.py::insert_events`` writes the
messages, ``webhooks/dispatcher.py`` sends them). The signing secret is shown once, when it is
made, and kept sealed (``crypto.seal``, purpose ``webhook``): signing needs the secret itself,
so it cannot be stored as a hash. After a rotation the previous secret keeps signing beside
the new one for :data:`ROTATION_OVERLAP`, so receivers can switch without losing a message.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.crypto import seal
from posthorn.domain.permissions import Permission
from posthorn.domain.ssrf import first_refused, parse_url
from posthorn.domain.webhook_payloads import WEBHOOK_EVENTS, build_payload
from posthorn.domain.webhook_signing import KEY_BYTES, format_secret
from posthorn.errors import Conflict, InvalidRequest, NotFound
from posthorn.services.accounts import Principal
from posthorn.settings import Settings
from posthorn.store import webhooks as repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

SECRET_PURPOSE = "webhook"  # noqa: S105 - the crypto.seal purpose, not a secret
TEST_EVENT = "webhook.test"
ROTATION_OVERLAP = timedelta(hours=24)


class HostResolver(Protocol):
    """Resolves a host to its addresses, [] when it has none (``webhooks/resolver.py``)."""

    async def addresses(self, host: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class WebhookView:
    """An endpoint as its account sees it: never the secret."""

    id: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_until: datetime | None  # while set, two signatures go out
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WithSecret:
    view: WebhookView
    secret: str  # whsec_…: shown once


def _view(row: repo.WebhookRow, now: datetime) -> WebhookView:
    overlap = row.previous_secret_until
    return WebhookView(
        id=row.id,
        url=row.url,
        events=row.events,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        failing_since=row.failing_since,
        previous_secret_until=overlap if overlap is not None and overlap > now else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class Webhooks:
    def __init__(self, db: Database, settings: Settings, resolver: HostResolver) -> None:
        self._db = db
        self._settings = settings
        self._resolver = resolver

    async def create(
        self, caller: Principal, *, url: str, events: Sequence[str] = (), enabled: bool = True
    ) -> WithSecret:
        caller.require(Permission.FULL_ACCESS)
        url = await self._check_url(url)
        wanted = _check_events(events)
        secret = self._new_secret()
        now = utcnow()
        row = repo.WebhookRow(
            id="wh_" + uuid.uuid4().hex,
            account_id=caller.account_id,
            url=url,
            events=wanted,
            enabled=enabled,
            secret=self._seal(secret),
            previous_secret=None,
            previous_secret_until=None,
            disabled_reason=None,
            failing_since=None,
            created_at=now,
            updated_at=now,
        )
        async with self._db.write() as conn:
            await repo.insert_webhook(conn, row)
        return WithSecret(_view(row, now), secret)

    async def page(
        self, account_id: str, *, page: int, per_page: int
    ) -> tuple[list[WebhookView], int]:
        async with self._db.read() as conn:
            rows, total = await repo.list_webhooks(
                conn, account_id, offset=(page - 1) * per_page, limit=per_page
            )
        now = utcnow()
        return [_view(row, now) for row in rows], total

    async def get(self, account_id: str, webhook_id: str) -> WebhookView:
        async with self._db.read() as conn:
            row = await _owned(conn, account_id, webhook_id)
        return _view(row, utcnow())

    async def update(
        self,
        caller: Principal,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        enabled: bool | None = None,
    ) -> WebhookView:
        """Change what is given. Enabling an endpoint clears why it was disabled and sends
        its pending messages now; disabling holds them until it is enabled again."""
        caller.require(Permission.FULL_ACCESS)
        values: dict[str, Any] = {}
        if url is not None:
            values["url"] = await self._check_url(url)
        if events is not None:
            values["events"] = _check_events(events)
        now = utcnow()
        async with self._db.write() as conn:
            row = await _owned(conn, caller.account_id, webhook_id)
            if enabled is not None and enabled != row.enabled:
                values.update(enabled=enabled, disabled_reason=None, failing_since=None)
                if enabled:
                    await repo.unpark_messages(conn, webhook_id, now)
                else:
                    await repo.park_messages(conn, webhook_id)
            if values:
                await repo.update_webhook(conn, webhook_id, {**values, "updated_at": now})
            row = await _owned(conn, caller.account_id, webhook_id)
        return _view(row, now)

    async def delete(self, caller: Principal, webhook_id: str) -> None:
        caller.require(Permission.FULL_ACCESS)
        async with self._db.write() as conn:
            await _owned(conn, caller.account_id, webhook_id)
            await repo.delete_webhook(conn, webhook_id)

    async def rotate_secret(self, caller: Principal, webhook_id: str) -> WithSecret:
        """A new secret, shown once; the current one keeps signing for ROTATION_OVERLAP."""
        caller.require(Permission.FULL_ACCESS)
        secret = self._new_secret()
        now = utcnow()
        async with self._db.write() as conn:
            row = await _owned(conn, caller.account_id, webhook_id)
            await repo.update_webhook(
                conn,
                webhook_id,
                {
                    "secret": self._seal(secret),
                    "previous_secret": row.secret,
                    "previous_secret_until": now + ROTATION_OVERLAP,
                    "updated_at": now,
                },
            )
            row = await _owned(conn, caller.account_id, webhook_id)
        return WithSecret(_view(row, now), secret)

    async def send_test(self, caller: Principal, webhook_id: str) -> dict[str, Any]:
        """Queue a ``webhook.test`` message for this endpoint, through the same outbox."""
        caller.require(Permission.FULL_ACCESS)
        now = utcnow()
        message = {
            "id": "msg_" + uuid.uuid4().hex,
            "webhook_id": webhook_id,
            "account_id": caller.account_id,
            "event_type": TEST_EVENT,
            "payload": build_payload(
                event_type=TEST_EVENT,
                created_at=now,
                email_id=None,
                recipient=None,
                tags=None,
                metadata=None,
                detail={"test": True},
            ),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.write() as conn:
            row = await _owned(conn, caller.account_id, webhook_id)
            if not row.enabled:
                raise Conflict("webhook_disabled")
            await repo.insert_message(conn, message)
        return message

    async def attempts(
        self, account_id: str, webhook_id: str, *, page: int, per_page: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Every attempt at the endpoint, newest first."""
        async with self._db.read() as conn:
            await _owned(conn, account_id, webhook_id)
            return await repo.list_attempts(
                conn, webhook_id, offset=(page - 1) * per_page, limit=per_page
            )

    async def retry(self, caller: Principal, webhook_id: str, message_id: str) -> dict[str, Any]:
        """Send one message again now, whatever became of it."""
        caller.require(Permission.FULL_ACCESS)
        now = utcnow()
        async with self._db.write() as conn:
            row = await _owned(conn, caller.account_id, webhook_id)
            if await repo.get_message(conn, webhook_id, message_id) is None:
                raise NotFound(resource="webhook message")
            if not row.enabled:
                raise Conflict("webhook_disabled")
            await repo.requeue_message(conn, message_id, now)
            message = await repo.get_message(conn, webhook_id, message_id)
        assert message is not None
        return message

    async def _check_url(self, url: str) -> str:
        """The URL, stripped; 422 unless it is http(s) with a host whose every address is
        public (unless private addresses are allowed; metadata addresses never are)."""
        text = url.strip()
        try:
            parsed = parse_url(text)
        except ValueError as exc:
            raise InvalidRequest("webhook_url_invalid", field="url", reason=str(exc)) from exc
        allow_private = self._settings.webhook_allow_private
        addresses = await self._resolver.addresses(parsed.host)
        if not addresses:
            if allow_private:
                return text  # checked again, for metadata, when it is dialled
            raise InvalidRequest("webhook_url_unresolvable", field="url", host=parsed.host)
        # Private receivers may be allowed; cloud metadata endpoints never are.
        refused = first_refused(addresses, allow_private=allow_private)
        if refused is not None:
            raise InvalidRequest(
                "webhook_url_refused",
                field="url",
                host=parsed.host,
                address=refused[0],
                problem=refused[1],
            )
        return text

    def _new_secret(self) -> str:
        return format_secret(secrets.token_bytes(KEY_BYTES))

    def _seal(self, secret: str) -> str:
        return seal(self._settings.secret_key, secret.encode("ascii"), purpose=SECRET_PURPOSE)


async def _owned(conn: AsyncConnection, account_id: str, webhook_id: str) -> repo.WebhookRow:
    row = await repo.get_webhook(conn, account_id, webhook_id)
    if row is None:
        raise NotFound(resource="webhook")
    return row


def _check_events(events: Sequence[str]) -> list[str]:
    """Known event names, each once, in the given order; [] subscribes to every event."""
    wanted: list[str] = []
    for name in events:
        if name not in WEBHOOK_EVENTS:
            raise InvalidRequest("webhook_event_unknown", field="events", value=str(name)[:60])
        if name not in wanted:
            wanted.append(name)
    return wanted
