"""DKIM-signing outgoing mail with the keys of its From domain.

Keys are read from the database, unsealed with the server secret and kept for a minute, so a
worker signs thousands of messages per second without a query each; a rotated or deleted key
stops being used within that minute. The RSA operation runs in a thread (OpenSSL releases the
GIL), so the event loop keeps serving other deliveries meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time

from posthorn.crypto import unseal
from posthorn.mime.dkim import DkimError, DkimKey, sign
from posthorn.services.domains import DKIM_PURPOSE
from posthorn.settings import Settings
from posthorn.store import domains as repo
from posthorn.store.database import Database

CACHE_SECONDS = 60.0
log = logging.getLogger(__name__)


class DkimSigner:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._secret = settings.secret_key
        self._cache: dict[str, tuple[float, tuple[DkimKey, ...]]] = {}

    async def keys(self, domain: str) -> tuple[DkimKey, ...]:
        now = time.monotonic()
        cached = self._cache.get(domain)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._db.read() as conn:
            rows = await repo.signing_keys(conn, domain)
        keys = tuple(
            DkimKey(
                domain=domain,
                selector=row["selector"],
                private_key_pem=unseal(self._secret, row["private_key"], purpose=DKIM_PURPOSE),
                algorithm=row["algorithm"],
            )
            for row in rows
            if row["algorithm"] == "rsa-sha256" or row["ed25519"]
        )
        self._cache[domain] = (now + CACHE_SECONDS, keys)
        return keys

    async def sign(self, domain: str, message: bytes) -> bytes:
        """The message with a DKIM-Signature per active key; unchanged when there is none, or
        when the message cannot be signed (no From, a broken header: SMTP submissions are
        passed on as their author wrote them)."""
        keys = await self.keys(domain)
        if not keys:
            return message
        try:
            return await asyncio.to_thread(sign, message, keys, timestamp=int(time.time()))
        except DkimError as exc:
            log.warning("not DKIM-signing a message from %s: %s", domain, exc)
            return message
