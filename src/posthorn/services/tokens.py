"""Tokens for users who logged in: short-lived JWT access tokens, rotating refresh tokens.

**Access tokens** are JWTs (RFC 7519) signed with HMAC-SHA256. The key is derived from the
server secret with HKDF-SHA256 (RFC 5869) under its own purpose string, never the raw secret,
and is 256 bits as RFC 7518 §3.2 requires for HS256. Verification follows the JWT BCP
(RFC 8725): the algorithm is pinned to HS256 whatever the header says (§3.1: no ``none``, no
RS/HS key confusion), the type is explicit, ``typ: at+jwt`` (RFC 9068 §2.1, RFC 8725 §3.11),
and ``iss``, ``aud``, ``exp``, ``iat``, ``sub`` and ``jti`` are required and checked (§3.8,
§3.9). Claims: ``iss`` (the public URL), ``aud`` (``posthorn:bizmail``), ``sub`` (the user
id), ``account_id``, ``sid`` (the refresh-token family the token was issued with), ``iat``,
``exp``, ``jti``.

**Refresh tokens** are opaque random strings (``phr_`` + 256 bits), stored only as their
SHA-256. Each use rotates the token: the old one is spent and a new one of the same family is
issued. Presenting a spent token again means it was copied, so the whole family is revoked
(RFC 6819 §5.2.2.3, RFC 9700 §4.14.2); access tokens of a revoked family stop working too,
since :meth:`Tokens.verify_access` checks the family.

**Failed logins** are counted per client network for the whole deployment, in the database
(:mod:`posthorn.services.login_throttle`): after ``LOGIN_FAILURE_LIMIT`` of them within
``LOGIN_FAILURE_WINDOW`` seconds, :meth:`Tokens.login` refuses with 429 before looking at the
credentials, the same refusal for a known and an unknown user name.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.errors import AuthenticationFailed, LimitExceeded
from posthorn.services.login_throttle import LoginThrottle
from posthorn.services.users import Users
from posthorn.settings import Settings
from posthorn.store import refresh_tokens as repo
from posthorn.store import users as user_repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
AUDIENCE = "posthorn:bizmail"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type (RFC 9068 §2.1), not a secret
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "jti")
# RFC 7519 §4.1.4 allows "some small leeway" for clock skew between the hosts that issue and
# check tokens (several `posthorn web` processes may share one database).
LEEWAY_SECONDS = 30
MAX_TOKEN_CHARS = 4096  # refuse before parsing: real tokens are a few hundred characters
REFRESH_PREFIX = "phr_"
REFRESH_BYTES = 32  # 256 bits of entropy
THROTTLE_SCOPE = "bizmail"
_KEY_INFO = b"posthorn:jwt:access-token:v1"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says."""

    user_id: str
    account_id: str
    session: str  # the refresh-token family (``sid``)
    token_id: str  # ``jti``
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int  # seconds the access token lives
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 scheme name, not a secret

    def as_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
        }


@functools.lru_cache(maxsize=8)
def signing_key(secret_key: str) -> bytes:
    """The HS256 key: HKDF-SHA256 of the server secret for this one purpose (RFC 5869 §3.2)."""
    if not secret_key:
        raise ValueError("the server secret is empty")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(
        secret_key.encode("utf-8")
    )


def issuer_of(settings: Settings) -> str:
    return settings.public_url.rstrip("/") or "posthorn"


class AccessTokenCodec:
    """Signs and checks access tokens. Pure: no I/O, the caller passes the issue time."""

    def __init__(
        self, secret_key: str, *, issuer: str, ttl_seconds: int, audience: str = AUDIENCE
    ) -> None:
        self._secret_key = secret_key
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds

    def encode(self, *, user_id: str, account_id: str, session: str, now: datetime) -> str:
        issued = int(now.timestamp())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user_id,
            "account_id": account_id,
            "sid": session,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            claims,
            signing_key(self._secret_key),
            algorithm=ALGORITHM,
            headers={"typ": ACCESS_TOKEN_TYPE},
        )

    def decode(self, token: str) -> AccessClaims:
        """The claims of a valid token; :class:`AuthenticationFailed` for anything else."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationFailed("token_invalid")
        try:
            decoded = jwt.decode_complete(
                token,
                signing_key(self._secret_key),
                algorithms=[ALGORITHM],  # pinned: the header's "alg" is never trusted
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed("token_invalid") from exc
        header, payload = decoded["header"], decoded["payload"]
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise AuthenticationFailed("token_invalid")
        # RFC 7519 §4.1.6: a token "issued" in the future is not one we made.
        if payload["iat"] > time.time() + LEEWAY_SECONDS:
            raise AuthenticationFailed("token_invalid")
        values = [payload.get(name) for name in ("sub", "account_id", "sid", "jti")]
        if not all(isinstance(value, str) and value for value in values):
            raise AuthenticationFailed("token_invalid")
        user_id, account_id, session, token_id = values
        return AccessClaims(
            user_id=user_id,
            account_id=account_id,
            session=session,
            token_id=token_id,
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        )


def refresh_digest(token: str) -> str:
    # A fast hash is enough: the token has 256 bits of entropy, nothing to guess.
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    def __init__(self, db: Database, settings: Settings, users: Users) -> None:
        self._db = db
        self._users = users
        self.codec = AccessTokenCodec(
            settings.secret_key,
            issuer=issuer_of(settings),
            ttl_seconds=settings.jwt_access_ttl_seconds,
        )
        self._refresh_ttl = timedelta(seconds=settings.jwt_refresh_ttl_seconds)
        self._throttle = LoginThrottle(
            db,
            scope=THROTTLE_SCOPE,
            limit=settings.login_failure_limit,
            window=settings.login_failure_window,
        )

    async def login(
        self, username: str, password: str, *, client_ip: str | None = None
    ) -> TokenPair:
        """A new token pair (a new family) for a user's credentials; 401 if they are wrong.

        With ``client_ip``, failures are counted per client network, and a network over the
        limit gets :class:`LimitExceeded` (429) without the password being checked.
        """
        if client_ip is None:
            identity = await self._users.authenticate(username, password)
        else:
            try:
                async with self._throttle.attempt(client_ip) as attempt:
                    identity = await self._users.authenticate(username, password)
                    if identity is None:
                        attempt.failed()
            except LimitExceeded:
                log.warning(
                    "login throttled peer=%s",
                    client_ip,
                    extra={"action": "login_throttled", "peer": client_ip},
                )
                raise
        if identity is None:
            log.info(
                "login refused peer=%s",
                client_ip,
                extra={"action": "login_refused", "peer": client_ip},
            )
            raise AuthenticationFailed("login_invalid")
        now = utcnow()
        async with self._db.write() as conn:
            await repo.delete_expired(conn, identity.user_id, now)
            pair = await self._issue(
                conn,
                user_id=identity.user_id,
                account_id=identity.account_id,
                family=uuid.uuid4().hex,
                now=now,
            )
        log.info(
            "login user=%s",
            identity.user_id,
            extra={"action": "login", "user_id": identity.user_id},
        )
        return pair

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Spend a refresh token for a new pair of the same family; 401 for an unknown,
        expired, revoked or already spent token (the last also revokes the family)."""
        if not refresh_token.startswith(REFRESH_PREFIX) or len(refresh_token) > 200:
            raise AuthenticationFailed("refresh_invalid")
        now = utcnow()
        async with self._db.write() as conn:
            row = await repo.lock_token(conn, refresh_digest(refresh_token))
            pair = await self._rotate(conn, row, now)
        if pair is None:
            raise AuthenticationFailed("refresh_invalid")
        return pair

    async def _rotate(
        self, conn: AsyncConnection, row: repo.RefreshRow | None, now: datetime
    ) -> TokenPair | None:
        if row is None or row.revoked_at is not None:
            return None
        if row.used_at is not None:
            # Committed together with the caller's 401: the family stays revoked.
            await repo.revoke_family(conn, row.family, now)
            log.warning(
                "refresh token reused: family revoked user=%s",
                row.user_id,
                extra={"action": "refresh_reuse", "user_id": row.user_id, "family": row.family},
            )
            return None
        if row.expires_at <= now:
            return None
        user = await user_repo.get_user(conn, row.user_id)
        if user is None:
            return None
        await repo.mark_used(conn, row.jti, now)
        return await self._issue(
            conn, user_id=user.id, account_id=user.account_id, family=row.family, now=now
        )

    async def _issue(
        self, conn: AsyncConnection, *, user_id: str, account_id: str, family: str, now: datetime
    ) -> TokenPair:
        refresh_token = REFRESH_PREFIX + secrets.token_urlsafe(REFRESH_BYTES)
        await repo.insert_token(
            conn,
            repo.RefreshRow(
                jti=refresh_digest(refresh_token),
                family=family,
                user_id=user_id,
                expires_at=now + self._refresh_ttl,
                used_at=None,
                revoked_at=None,
                created_at=now,
            ),
        )
        access_token = self.codec.encode(
            user_id=user_id, account_id=account_id, session=family, now=now
        )
        return TokenPair(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=self.codec.ttl_seconds,
        )

    async def verify_access(self, token: str | None) -> AccessClaims:
        """The claims of a valid access token whose family is still live; 401 otherwise.

        The family look-up is what makes a detected refresh-token reuse, or a deleted user
        (whose tokens go with it), end the access tokens already handed out.
        """
        if not token:
            raise AuthenticationFailed("token_missing")
        claims = self.codec.decode(token)
        async with self._db.read() as conn:
            total, revoked = await repo.family_state(conn, claims.session)
        if total == 0 or revoked > 0:
            raise AuthenticationFailed("token_invalid")
        return claims
