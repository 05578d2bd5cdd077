"""Senders: the SMTP credentials of an address on a verified domain, with their own limits.

Passwords are hashed with argon2id (RFC 9106); hashing and checking take tens of milliseconds
on purpose, so they run in a thread and never stall the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from posthorn.domain.addresses import AddressError, parse_address
from posthorn.domain.permissions import Permission
from posthorn.domain.quotas import Limit
from posthorn.errors import Conflict, InvalidRequest, NotFound
from posthorn.services.accounts import Principal
from posthorn.settings import Settings
from posthorn.store import domains as domain_repo
from posthorn.store import senders as repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile


@dataclass(frozen=True, slots=True)
class SmtpIdentity:
    """A sender that passed SMTP authentication."""

    sender_id: int
    account_id: str
    address: str
    domain: str
    limits: tuple[Limit, ...]


def sender_limits(row: dict[str, Any]) -> tuple[Limit, ...]:
    scope = f"snd:{row['id']}"
    return (
        Limit(scope, "day", int(row["daily_limit"]), f"daily limit of sender {row['address']}"),
        Limit(scope, "hour", int(row["hourly_limit"]), f"hourly limit of sender {row['address']}"),
    )


def _check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest("password_length", field="password", minimum=MIN_PASSWORD)


class Senders:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        # A real hash to check against when the user does not exist, so that the answer
        # takes as long either way and does not tell which user names exist.
        self._decoy = _hasher.hash("decoy password")

    async def create(
        self, caller: Principal, *, address: str, domain: str, password: str
    ) -> dict[str, Any]:
        caller.require(Permission.FULL_ACCESS)
        try:
            parsed = parse_address(address)
        except AddressError as exc:
            raise InvalidRequest("invalid_address", field="account", value=address[:100]) from exc
        if parsed.name:
            raise InvalidRequest("invalid_address", field="account", value=address[:100])
        domain_name = domain.strip().rstrip(".").lower()
        if parsed.domain != domain_name:
            raise InvalidRequest("sender_domain_mismatch", field="account", domain=domain_name)
        _check_password(password)
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        now = utcnow()
        async with self._db.write() as conn:
            found = await domain_repo.find_domain(conn, caller.account_id, domain_name)
            if found is None:
                raise NotFound(resource="domain")
            if found["status"] != "verified":
                raise InvalidRequest("domain_not_verified", field="domain", domain=domain_name)
            if await repo.address_taken(conn, parsed.email):
                raise Conflict("sender_taken", address=parsed.email)
            sender_id = await repo.insert_sender(
                conn,
                {
                    "account_id": caller.account_id,
                    "domain_id": found["id"],
                    "address": parsed.email,
                    "password_hash": password_hash,
                    "active": 1,
                    "daily_limit": self._settings.sender_daily_limit,
                    "hourly_limit": self._settings.sender_hourly_limit,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        return await self.get(caller.account_id, sender_id)

    async def get(self, account_id: str, sender_id: int) -> dict[str, Any]:
        async with self._db.read() as conn:
            row = await repo.get_sender(conn, account_id, sender_id)
        if row is None:
            raise NotFound(resource="sender")
        return row

    async def page(
        self, account_id: str, *, page: int, per_page: int, search: str | None
    ) -> tuple[list[dict[str, Any]], int]:
        async with self._db.read() as conn:
            return await repo.list_senders(
                conn, account_id, search=search, offset=(page - 1) * per_page, limit=per_page
            )

    async def update(
        self, caller: Principal, sender_id: int, changes: dict[str, Any]
    ) -> dict[str, Any]:
        caller.require(Permission.FULL_ACCESS)
        await self.get(caller.account_id, sender_id)
        values: dict[str, Any] = {}
        if changes.get("active") is not None:
            values["active"] = 1 if changes["active"] else 0
        for name in ("daily_limit", "hourly_limit"):
            if changes.get(name) is not None:
                values[name] = int(changes[name])
        if changes.get("password") is not None:
            _check_password(changes["password"])
            values["password_hash"] = await asyncio.to_thread(_hasher.hash, changes["password"])
        values["updated_at"] = utcnow()
        async with self._db.write() as conn:
            await repo.update_sender(conn, sender_id, values)
        return await self.get(caller.account_id, sender_id)

    async def delete(self, caller: Principal, sender_id: int) -> None:
        caller.require(Permission.FULL_ACCESS)
        await self.get(caller.account_id, sender_id)
        async with self._db.write() as conn:
            await repo.delete_sender(conn, sender_id)

    async def authenticate(self, address: str, password: str) -> SmtpIdentity | None:
        """The active sender with these credentials on a verified domain, or ``None``."""
        async with self._db.read() as conn:
            row = await repo.find_by_address(conn, address.strip())
            domain = (
                await domain_repo.get_domain(conn, row["account_id"], row["domain_id"])
                if row
                else None
            )
        stored = row["password_hash"] if row else self._decoy
        try:
            await asyncio.to_thread(_hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or not row["active"] or domain is None or domain["status"] != "verified":
            return None
        return SmtpIdentity(
            sender_id=int(row["id"]),
            account_id=row["account_id"],
            address=row["address"],
            domain=row["domain"],
            limits=sender_limits(row),
        )
