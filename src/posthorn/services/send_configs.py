"""Send configurations: what BillionMail calls an "API". Each binds a template, an optional
subject, a default sender, an IP allowlist and tracking switches to a key of its own
(``bmk_…``, shown once, stored as a SHA-256 hash like API keys).

A send through a configuration renders its template with the caller's variables and goes
through the intake like any other email, tagged ``send_config:<id>`` so that statistics can
be read per configuration.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from posthorn.domain.addresses import AddressError, parse_address
from posthorn.domain.network import ip_allowed, parse_networks
from posthorn.domain.permissions import Permission
from posthorn.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from posthorn.mime import templating
from posthorn.mime.tracking import UNSUBSCRIBE_PLACEHOLDER
from posthorn.services import template_compiler
from posthorn.services.accounts import Principal, hash_key
from posthorn.services.admission import Accepted
from posthorn.services.dialect_support import DialectSupport
from posthorn.services.intake import SendRequest, Tag
from posthorn.services.stats import Report, Stats
from posthorn.services.templates import MAX_SUBJECT_SOURCE_CHARS, Templates, invalid
from posthorn.store import send_configs as repo
from posthorn.store.database import Database
from posthorn.store.send_configs import SendConfigRow
from posthorn.store.tables import utcnow

KEY_PREFIX = "bmk_"
KEY_BYTES = 32  # 256 bits, as API keys
TAG_NAME = "send_config"
SOURCE = "billion"  # the emails.source column holds 10 characters
MAX_NAME_CHARS = 200
MAX_ALLOWLIST = 100
EDITABLE = (
    "name",
    "template_id",
    "subject",
    "addresser",
    "ip_allowlist",
    "track_opens",
    "track_clicks",
    "unsubscribe",
)
# BillionMail adds an unsubscribe link at the bottom of a template that has none; intake puts
# the recipient's own URL in place of the placeholder (see mime/tracking.py).
PLACEHOLDER = "{{ unsubscribe_url }}"
FOOTER_HTML = f'<p style="font-size:12px;color:#888"><a href="{PLACEHOLDER}">Unsubscribe</a></p>'
FOOTER_TEXT = f"\n\nUnsubscribe: {PLACEHOLDER}\n"


@dataclass(frozen=True, slots=True)
class CreatedConfig:
    row: SendConfigRow
    key: str  # the full key: shown once, never stored


def display_key(key: str) -> str:
    return f"{KEY_PREFIX}...{key[-4:]}"


def stats_tag(config_id: str) -> str:
    """The tag filter (``name:value``) that selects the emails sent through a configuration."""
    return f"{TAG_NAME}:{config_id}"


class SendConfigs:
    def __init__(
        self, db: Database, *, templates: Templates, stats: Stats, support: DialectSupport
    ) -> None:
        self._db = db
        self._templates = templates
        self._stats = stats
        self._support = support

    # ── management ──────────────────────────────────────────────────────────────────────

    async def create(self, caller: Principal, values: Mapping[str, Any]) -> CreatedConfig:
        """A new configuration; ``name`` and ``template_id`` are required. Tracking of opens
        and clicks is on unless switched off, unsubscribe links are off, as in BillionMail."""
        caller.require(Permission.FULL_ACCESS)
        merged: dict[str, Any] = {
            "subject": None,
            "addresser": None,
            "ip_allowlist": None,
            "track_opens": True,
            "track_clicks": True,
            "unsubscribe": False,
        }
        merged.update({k: v for k, v in values.items() if k in EDITABLE})
        for required in ("name", "template_id"):
            if not merged.get(required):
                raise InvalidRequest("field_required", field=required)
        checked = await self._checked(caller.account_id, merged)
        key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
        now = utcnow()
        row = SendConfigRow(
            id="cfg_" + secrets.token_hex(8),
            account_id=caller.account_id,
            display=display_key(key),
            created_at=now,
            updated_at=now,
            **checked,
        )
        async with self._db.write() as conn:
            await repo.insert_config(conn, row, key_hash=hash_key(key))
        return CreatedConfig(row=row, key=key)

    async def get(self, account_id: str, config_id: str) -> SendConfigRow:
        async with self._db.read() as conn:
            row = await repo.get_config(conn, account_id, config_id)
        if row is None:
            raise NotFound(resource="send configuration")
        return row

    async def page(
        self, account_id: str, *, page: int, per_page: int
    ) -> tuple[list[SendConfigRow], int]:
        async with self._db.read() as conn:
            return await repo.list_configs(
                conn, account_id, offset=(page - 1) * per_page, limit=per_page
            )

    async def update(
        self, caller: Principal, config_id: str, changes: Mapping[str, Any]
    ) -> SendConfigRow:
        """Change any editable field; ``subject``, ``addresser`` or ``ip_allowlist`` set to
        None clear it."""
        caller.require(Permission.FULL_ACCESS)
        current = await self.get(caller.account_id, config_id)
        merged = {name: getattr(current, name) for name in EDITABLE}
        merged.update({k: v for k, v in changes.items() if k in EDITABLE})
        if not merged.get("name"):
            raise InvalidRequest("field_required", field="name")
        if not merged.get("template_id"):
            raise InvalidRequest("field_required", field="template_id")
        checked = await self._checked(
            caller.account_id, merged, check_template="template_id" in changes
        )
        values = {**checked, "updated_at": utcnow()}
        async with self._db.write() as conn:
            if not await repo.update_config(conn, caller.account_id, config_id, values):
                raise NotFound(resource="send configuration")
        return await self.get(caller.account_id, config_id)

    async def delete(self, caller: Principal, config_id: str) -> None:
        """Delete a configuration: its key stops working at once; its emails stay."""
        caller.require(Permission.FULL_ACCESS)
        async with self._db.write() as conn:
            if not await repo.delete_config(conn, caller.account_id, config_id):
                raise NotFound(resource="send configuration")

    async def rotate_key(self, caller: Principal, config_id: str) -> CreatedConfig:
        """A new key for the configuration; the old one stops working at once."""
        caller.require(Permission.FULL_ACCESS)
        await self.get(caller.account_id, config_id)
        key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
        values = {"display": display_key(key), "key_hash": hash_key(key), "updated_at": utcnow()}
        async with self._db.write() as conn:
            if not await repo.update_config(conn, caller.account_id, config_id, values):
                raise NotFound(resource="send configuration")
        return CreatedConfig(row=await self.get(caller.account_id, config_id), key=key)

    async def _checked(
        self, account_id: str, values: dict[str, Any], *, check_template: bool = True
    ) -> dict[str, Any]:
        name = str(values["name"]).strip()
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidRequest(field="name")
        template_id = str(values["template_id"])
        if check_template:
            try:
                await self._templates.get(account_id, template_id)
            except NotFound:
                raise InvalidRequest(
                    "template_unknown", field="template_id", value=template_id[:40]
                ) from None
        subject = values.get("subject") or None
        if subject is not None:
            if len(subject) > MAX_SUBJECT_SOURCE_CHARS:
                raise InvalidRequest(
                    "template_too_long", field="subject", limit=MAX_SUBJECT_SOURCE_CHARS
                )
            try:
                await template_compiler.variables(subject, None, None)
            except templating.TemplateProblem as problem:
                raise invalid(problem) from None
        addresser = values.get("addresser") or None
        if addresser is not None:
            try:
                parse_address(addresser)
            except AddressError as exc:
                raise InvalidRequest(
                    "invalid_address", field="addresser", value=addresser[:100]
                ) from exc
        return {
            "name": name,
            "template_id": template_id,
            "subject": subject,
            "addresser": addresser,
            "ip_allowlist": _allowlist(values.get("ip_allowlist")),
            "track_opens": bool(values["track_opens"]),
            "track_clicks": bool(values["track_clicks"]),
            "unsubscribe": bool(values["unsubscribe"]),
        }

    # ── sending ─────────────────────────────────────────────────────────────────────────

    async def authenticate(self, key: str | None, *, client_ip: str | None) -> SendConfigRow:
        """The configuration behind a ``bmk_`` key: :class:`AuthenticationFailed` for a
        missing or unknown key, :class:`PermissionDenied` (``ip_not_allowed``) for a caller
        outside its IP allowlist."""
        if not key:
            raise AuthenticationFailed("auth_missing")
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            raise AuthenticationFailed("auth_invalid")
        async with self._db.read() as conn:
            row = await repo.find_by_hash(conn, hash_key(key))
        if row is None:
            raise AuthenticationFailed("auth_invalid")
        if client_ip is not None and not ip_allowed(client_ip, row.ip_allowlist):
            raise PermissionDenied("ip_not_allowed", ip=client_ip)
        return row

    async def send(
        self,
        config: SendConfigRow,
        *,
        recipient: str,
        addresser: str | None = None,
        attribs: Mapping[str, Any] | None = None,
    ) -> Accepted:
        """Render the configuration's template for one recipient and queue it.

        Checked in BillionMail's order: the template (:class:`NotFound`), the recipient
        (:class:`InvalidRequest` on ``recipient``), then rendering and the intake's checks.
        The sender is ``addresser``, else the configuration's, else the account's default.
        """
        if config.template_id is None:
            raise NotFound(resource="template")
        await self._templates.get(config.account_id, config.template_id)
        try:
            parse_address(recipient)
        except AddressError as exc:
            raise InvalidRequest(
                "invalid_address", field="recipient", value=recipient[:100]
            ) from exc
        data = dict(attribs or {})
        if config.unsubscribe:
            data["unsubscribe_url"] = PLACEHOLDER  # kept for the intake to fill in
        rendered = await self._templates.render(config.account_id, config.template_id, data)
        subject = rendered.subject
        if config.subject:
            subject = await _render_subject(config.subject, data)
        html, text = rendered.html, rendered.text
        if config.unsubscribe:
            html, text = _with_unsubscribe_link(html, text)
        sender = (
            addresser or config.addresser or await self._support.default_sender(config.account_id)
        )
        request = SendRequest(
            account_id=config.account_id,
            source=SOURCE,
            from_=sender,
            to=[recipient],
            subject=subject,
            html=html,
            text=text,
            tags=[Tag(name=TAG_NAME, value=config.id)],
            track_opens=config.track_opens,
            track_clicks=config.track_clicks,
            unsubscribe=config.unsubscribe,
            rendered_from=config.template_id,
        )
        return await self._support.submit(request)

    async def stats(
        self,
        account_id: str,
        config_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        interval: str = "day",
    ) -> Report:
        """The statistics service's report, for the emails sent through this configuration."""
        await self.get(account_id, config_id)
        return await self._stats.report(
            account_id, start=start, end=end, interval=interval, tag=stats_tag(config_id)
        )


async def _render_subject(source: str, data: Mapping[str, Any]) -> str:
    try:
        await template_compiler.parse(source, None, None)
        return await asyncio.to_thread(templating.render, source, data)
    except templating.TemplateProblem as problem:
        problem.part = "subject"
        raise invalid(problem) from None


def _with_unsubscribe_link(html: str | None, text: str | None) -> tuple[str | None, str | None]:
    if html is not None and not UNSUBSCRIBE_PLACEHOLDER.search(html):
        end = html.lower().rfind("</body>")
        html = html + FOOTER_HTML if end < 0 else html[:end] + FOOTER_HTML + html[end:]
    if text is not None and not UNSUBSCRIBE_PLACEHOLDER.search(text):
        text = text + FOOTER_TEXT
    return html, text


def _allowlist(items: Any) -> list[str] | None:
    if not items:
        return None
    if not isinstance(items, list) or len(items) > MAX_ALLOWLIST:
        raise InvalidRequest(field="ip_allowlist")
    try:
        return [str(network) for network in parse_networks([str(i) for i in items])]
    except ValueError as exc:
        raise InvalidRequest("invalid_ip", field="ip_allowlist", value=str(exc)[:60]) from exc
