"""Accounts (tenants), their settings, and their API keys.

An account's settings are what the dialects need beyond a request: ``default_sender``, the
From of a request that names none (an address on one of the account's domains), and
``timezone``, the IANA zone in which local times such as the v2 API's ``d_schedule`` are read.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import uuid
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from posthorn.domain.addresses import AddressError, parse_address
from posthorn.domain.network import ip_allowed, parse_networks
from posthorn.domain.permissions import Permission, allows
from posthorn.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from posthorn.services.lookup_cache import LookupCache
from posthorn.store import accounts as repo
from posthorn.store import domains as domain_repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

KEY_PREFIX = "phk_"
KEY_BYTES = 32  # 256 bits of entropy
# The lifetimes the API offers, as the seed API does; the CLI accepts any number of days.
API_EXPIRY_DAYS = frozenset({7, 30, 60, 90, 180, 365})
MAX_ALLOWLIST = 100
# How long a key's row may be reused for send requests. A key's permission, expiry and
# allowlist never change; its revocation is checked again where the email is queued.
KEY_CACHE_SECONDS = 60.0
MAX_DEFAULT_SENDER = 320  # the accounts.default_sender column
MAX_TIMEZONE = 64  # the accounts.timezone column
DEFAULT_TIMEZONE = "UTC"
# On Debian a link to the host's own zone: a name that means something else on every machine.
_NOT_IANA = frozenset({"localtime"})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an account, through one API key with one permission."""

    account_id: str
    key_id: str
    permission: Permission

    def require(self, needed: Permission) -> None:
        if not allows(self.permission, needed):
            raise PermissionDenied(permission=str(self.permission))


@dataclass(frozen=True, slots=True)
class CreatedKey:
    row: repo.ApiKeyRow
    key: str  # the full key: shown once, never stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_key(key: str) -> str:
    """The masked form shown after creation, as the seed does ("etrans_...xyz")."""
    return f"{KEY_PREFIX}...{key[-4:]}"


class Accounts:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._recent_keys: LookupCache[str, repo.ApiKeyRow | None] = LookupCache(KEY_CACHE_SECONDS)

    async def create_account(self, name: str) -> repo.AccountRow:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidRequest(field="name")
        row = repo.AccountRow(id=str(uuid.uuid4()), name=name, created_at=utcnow())
        async with self._db.write() as conn:
            await repo.insert_account(conn, row)
        return row

    async def get_account(self, account_id: str) -> repo.AccountRow:
        async with self._db.read() as conn:
            row = await repo.get_account(conn, account_id)
        if row is None:
            raise NotFound(resource="account")
        return row

    async def update_account(
        self,
        account_id: str,
        changes: Mapping[str, Any],
        *,
        updated_by: Principal | None = None,
    ) -> repo.AccountRow:
        """Change the account's settings; a setting not in ``changes`` stays as it is.

        ``default_sender``: ``"addr"`` or ``"Name <addr>"`` on a domain of the account, in any
        verification state (the send itself refuses an unverified one, as for any From);
        ``None`` or ``""`` clears it. ``timezone``: an IANA name, in any letter case (stored
        as IANA spells it); ``None`` returns to UTC. Through the API (``updated_by``) only a
        full_access key may.
        """
        if updated_by is not None:
            updated_by.require(Permission.FULL_ACCESS)
        values: dict[str, Any] = {}
        domain: str | None = None
        if "default_sender" in changes:
            values["default_sender"], domain = _check_default_sender(changes["default_sender"])
        if "timezone" in changes:
            values["timezone"] = await _check_timezone(changes["timezone"])
        async with self._db.write() as conn:
            if await repo.get_account(conn, account_id) is None:
                raise NotFound(resource="account")
            if (
                domain is not None
                and await domain_repo.find_domain(conn, account_id, domain) is None
            ):
                raise InvalidRequest("default_sender_domain", field="default_sender", domain=domain)
            await repo.update_account(conn, account_id, values)
            row = await repo.get_account(conn, account_id)
        if row is None:  # deleted in between: no longer there
            raise NotFound(resource="account")
        return row

    async def create_key(
        self,
        account_id: str,
        *,
        name: str,
        permission: Permission = Permission.FULL_ACCESS,
        expires_in_days: int | None = None,
        ip_allowlist: list[str] | None = None,
        created_by: Principal | None = None,
        now: datetime | None = None,
    ) -> CreatedKey:
        """Create a key. Through the API (``created_by``) only a full_access key may, and never
        one with more permission than its own."""
        if created_by is not None:
            created_by.require(Permission.FULL_ACCESS)
            created_by.require(permission)
            if expires_in_days is not None and expires_in_days not in API_EXPIRY_DAYS:
                raise InvalidRequest("expiry_choice", field="expires_in_days")
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidRequest(field="name")
        if expires_in_days is not None and expires_in_days <= 0:
            raise InvalidRequest(field="expires_in_days")
        allowlist = _check_allowlist(ip_allowlist)
        now = now or utcnow()
        key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
        row = repo.ApiKeyRow(
            id=str(uuid.uuid4()),
            account_id=account_id,
            name=name,
            display=display_key(key),
            permission=str(Permission(permission)),
            ip_allowlist=allowlist,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
            revoked_at=None,
            last_used_at=None,
            created_at=now,
            updated_at=now,
        )
        async with self._db.write() as conn:
            if await repo.get_account(conn, account_id) is None:
                raise NotFound(resource="account")
            await repo.insert_api_key(conn, row, key_hash=hash_key(key))
        return CreatedKey(row=row, key=key)

    async def authenticate(
        self,
        key: str | None,
        *,
        client_ip: str | None = None,
        now: datetime | None = None,
        for_sending: bool = False,
    ) -> Principal:
        """The principal behind an API key: 401 for a missing, unknown, expired or revoked key,
        403 for a request from outside the key's IP allowlist.

        ``for_sending``: the caller only queues email, and intake refuses a key revoked since
        in the very transaction that would queue it (``services/admission.py``). So the key's
        row may come from a cache of recently used keys, and the request needs no query.
        """
        if not key:
            raise AuthenticationFailed("auth_missing")
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            raise AuthenticationFailed("auth_invalid")
        hashed = hash_key(key)
        if for_sending:
            row = await self._recent_keys.get(hashed, lambda: self._find_key(hashed))
        else:
            row = await self._find_key(hashed)
        now = now or utcnow()
        if row is None or row.revoked_at is not None:
            raise AuthenticationFailed("auth_invalid")
        if row.expires_at is not None and row.expires_at <= now:
            raise AuthenticationFailed("auth_invalid")
        if client_ip is not None and not ip_allowed(client_ip, row.ip_allowlist):
            raise PermissionDenied("ip_not_allowed", ip=client_ip)
        return Principal(
            account_id=row.account_id, key_id=row.id, permission=Permission(row.permission)
        )

    async def _find_key(self, hashed: str) -> repo.ApiKeyRow | None:
        async with self._db.read() as conn:
            return await repo.find_api_key_by_hash(conn, hashed)

    async def revoke_key(self, account_id: str, key_id: str) -> None:
        async with self._db.write() as conn:
            if not await repo.revoke_api_key(conn, account_id, key_id, utcnow()):
                raise NotFound(resource="API key")
        self._recent_keys.clear()

    async def list_keys(
        self, account_id: str, *, page: int, per_page: int
    ) -> tuple[list[repo.ApiKeyRow], int]:
        async with self._db.read() as conn:
            return await repo.list_api_keys(
                conn, account_id, offset=(page - 1) * per_page, limit=per_page
            )

    async def get_key(self, account_id: str, key_id: str) -> repo.ApiKeyRow:
        async with self._db.read() as conn:
            row = await repo.get_api_key(conn, account_id, key_id)
        if row is None or row.revoked_at is not None:
            raise NotFound(resource="API key")
        return row


def _check_default_sender(value: Any) -> tuple[str | None, str | None]:
    """The default sender to store (as given, trimmed) and its domain; (None, None) clears."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if not isinstance(value, str):
        raise InvalidRequest(field="default_sender")
    text = value.strip()
    if len(text) > MAX_DEFAULT_SENDER:
        raise InvalidRequest("value_too_long", field="default_sender", limit=MAX_DEFAULT_SENDER)
    try:
        address = parse_address(text)
    except AddressError as exc:
        raise InvalidRequest("invalid_address", field="default_sender", value=text[:100]) from exc
    return text, address.domain


@functools.cache
def _time_zones() -> dict[str, str]:
    """The IANA time zone names this machine knows, by their lower-case form."""
    return {name.lower(): name for name in zoneinfo.available_timezones() - _NOT_IANA}


async def _check_timezone(value: Any) -> str:
    """An IANA time zone name as IANA spells it; ``None`` is UTC."""
    if value is None:
        return DEFAULT_TIMEZONE
    if not isinstance(value, str):
        raise InvalidRequest(field="timezone")
    text = value.strip()
    known = await asyncio.to_thread(_time_zones)  # walks the zone files once per process
    name = known.get(text.lower()) if len(text) <= MAX_TIMEZONE else None
    if name is None:
        raise InvalidRequest("timezone_unknown", field="timezone", value=text[:MAX_TIMEZONE])
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidRequest("timezone_unknown", field="timezone", value=name) from exc
    return name


def _check_allowlist(items: list[str] | None) -> list[str] | None:
    if not items:
        return None
    if len(items) > MAX_ALLOWLIST:
        raise InvalidRequest(field="ip_allowlist")
    try:
        return [str(network) for network in parse_networks(items)]
    except ValueError as exc:
        raise InvalidRequest("invalid_ip", field="ip_allowlist", value=str(exc)[:60]) from exc
