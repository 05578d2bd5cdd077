"""Users: the people who log in, to BizMail's JWT auth, to SMTP as a portal login, and later
to the dashboard. A user belongs to one account and acts for all of it.

User names are case-insensitive: they are stored in lower case, so the database's unique
index is what makes them unique, even between two concurrent creations. Passwords are hashed
with argon2id (RFC 9106) in a thread, as the senders' are.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from posthorn.errors import Conflict, InvalidRequest, NotFound
from posthorn.store import users as repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_USERNAME = 200
# ASCII only: no look-alike letters in a login name. "@" is allowed so an email address works.
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@+-]*")
# The SMTP server reads the user name "apikey" as "the password is an API key".
RESERVED_USERNAMES = frozenset({"apikey"})
_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """A user who proved their password: they act for the whole account."""

    user_id: str
    account_id: str
    username: str


def normalize_username(username: str) -> str:
    return username.strip().lower()


def valid_username(username: str) -> bool:
    return (
        len(username) <= MAX_USERNAME
        and _USERNAME.fullmatch(username) is not None
        and username not in RESERVED_USERNAMES
    )


class Users:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._decoy: str | None = None

    async def create_user(self, account_id: str, *, username: str, password: str) -> repo.UserRow:
        """A new user of the account: 422 for a bad name or a password shorter than 8
        characters, 404 for an unknown account, 409 when the name is taken (in any case)."""
        name = normalize_username(username)
        if not valid_username(name):
            raise InvalidRequest("username_invalid", field="username", limit=MAX_USERNAME)
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise InvalidRequest("password_length", field="password", minimum=MIN_PASSWORD)
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        row = repo.UserRow(
            id=str(uuid.uuid4()), account_id=account_id, username=name, created_at=utcnow()
        )
        try:
            async with self._db.write() as conn:
                if not await repo.account_exists(conn, account_id):
                    raise NotFound(resource="account")
                if await repo.username_taken(conn, name):
                    raise Conflict("username_taken", username=name)
                await repo.insert_user(conn, row, password_hash=password_hash)
        except IntegrityError as exc:  # created concurrently by someone else
            raise Conflict("username_taken", username=name) from exc
        return row

    async def authenticate(self, username: str, password: str) -> UserIdentity | None:
        """The user with these credentials, or ``None``.

        Exactly one argon2 check runs whether or not the user exists (against a decoy hash
        when not), so the time taken does not tell which user names exist.
        """
        name = normalize_username(username)
        found = None
        if valid_username(name) and len(password) <= MAX_PASSWORD:
            async with self._db.read() as conn:
                found = await repo.find_credentials(conn, name)
        stored = found.password_hash if found else await self._decoy_hash()
        try:
            await asyncio.to_thread(_hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if found is None:
            return None
        user = found.user
        return UserIdentity(user_id=user.id, account_id=user.account_id, username=user.username)

    async def _decoy_hash(self) -> str:
        # Made on first use, not at start-up: one-off commands never need it.
        if self._decoy is None:
            self._decoy = await asyncio.to_thread(_hasher.hash, "decoy password")
        return self._decoy
