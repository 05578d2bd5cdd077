"""Accounts (tenants) and their API keys."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from posthorn.domain.network import ip_allowed, parse_networks
from posthorn.domain.permissions import Permission, allows
from posthorn.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from posthorn.store import accounts as repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

KEY_PREFIX = "phk_"
KEY_BYTES = 32  # 256 bits of entropy
# The lifetimes the API offers, as the seed API does; the CLI accepts any number of days.
API_EXPIRY_DAYS = frozenset({7, 30, 60, 90, 180, 365})
MAX_ALLOWLIST = 100


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

    async def create_account(self, name: str) -> repo.AccountRow:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidRequest(field="name")
        row = repo.AccountRow(id=str(uuid.uuid4()), name=name, created_at=utcnow())
        async with self._db.write() as conn:
            await repo.insert_account(conn, row)
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
        self, key: str | None, *, client_ip: str | None = None, now: datetime | None = None
    ) -> Principal:
        """The principal behind an API key: 401 for a missing, unknown, expired or revoked key,
        403 for a request from outside the key's IP allowlist."""
        if not key:
            raise AuthenticationFailed("auth_missing")
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            raise AuthenticationFailed("auth_invalid")
        async with self._db.read() as conn:
            row = await repo.find_api_key_by_hash(conn, hash_key(key))
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

    async def revoke_key(self, account_id: str, key_id: str) -> None:
        async with self._db.write() as conn:
            if not await repo.revoke_api_key(conn, account_id, key_id, utcnow()):
                raise NotFound(resource="API key")

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


def _check_allowlist(items: list[str] | None) -> list[str] | None:
    if not items:
        return None
    if len(items) > MAX_ALLOWLIST:
        raise InvalidRequest(field="ip_allowlist")
    try:
        return [str(network) for network in parse_networks(items)]
    except ValueError as exc:
        raise InvalidRequest("invalid_ip", field="ip_allowlist", value=str(exc)[:60]) from exc
