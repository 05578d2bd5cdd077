"""The webhook dispatcher: outbox rows → signed POSTs → recorded attempts.

    claim (lease, per-endpoint room) ──▶ sign ──▶ POST ──▶ decide ──▶ record (group commit)
        ▲                                                                     │
        └───────────────────────── free slot ◀───────────────────────────────┘

At most ``concurrency`` messages are in flight, and at most ``per_endpoint`` for any one
endpoint, so a slow or dead endpoint holds a few slots and never all of them: the claim asks
only for messages of endpoints with room left. Every attempt is bounded by ``timeout``, so
the lease (several times longer) never runs out under a live attempt. A message keeps its id,
the ``webhook-id`` header, across retries; receivers use it to drop duplicates, which
at-least-once delivery can produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

import orjson

from posthorn.crypto import SealError, unseal
from posthorn.domain.webhook_retry import (
    DISABLE_AFTER,
    JITTER,
    RETRY_WINDOW,
    SCHEDULE,
    decide,
    is_success,
    parse_retry_after,
)
from posthorn.domain.webhook_signing import signed_headers
from posthorn.services.webhooks import SECRET_PURPOSE
from posthorn.settings import Settings
from posthorn.store import webhooks as repo
from posthorn.store.database import Database
from posthorn.store.group_commit import GroupCommitter
from posthorn.store.tables import utcnow
from posthorn.webhooks.resolver import DnsHostResolver
from posthorn.webhooks.sender import HttpAttempt, Sender
from posthorn.webhooks.transport import HostResolver

log = logging.getLogger(__name__)

TIMEOUT = 15.0
CONCURRENCY = 32
PER_ENDPOINT = 4


class Dispatcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        resolver: HostResolver | None = None,
        schedule: Sequence[timedelta] = SCHEDULE,
        retry_window: timedelta = RETRY_WINDOW,
        disable_after: timedelta = DISABLE_AFTER,
        timeout: float = TIMEOUT,
        concurrency: int = CONCURRENCY,
        per_endpoint: int = PER_ENDPOINT,
        poll_seconds: float | None = None,
        jitter: float = JITTER,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if concurrency < 1 or per_endpoint < 1:
            raise ValueError("concurrency and per_endpoint must be at least 1")
        self._db = db
        self._secret_key = settings.secret_key
        self._schedule = tuple(schedule)
        self._window = retry_window
        self._disable_after = disable_after
        self._concurrency = concurrency
        self._per_endpoint = per_endpoint
        self._poll = settings.worker_poll_seconds if poll_seconds is None else poll_seconds
        self._jitter = jitter
        self._rng = rng or random.Random()  # jitter only, not cryptography
        # Several times the longest attempt: a lease never runs out under a live attempt.
        self._lease = timedelta(seconds=max(60.0, 4 * timeout))
        self._sender = Sender(
            resolver or DnsHostResolver(settings),
            allow_private=settings.webhook_allow_private,
            timeout=timeout,
            max_connections=concurrency,
            ssl_context=ssl_context,
        )
        self._recorder: GroupCommitter[repo.RecordedAttempt, bool] = GroupCommitter(
            db, repo.record_attempts, max_batch=100, max_wait=0.005, name="webhook-record"
        )
        self._in_flight: dict[str, str] = {}  # message id → webhook id
        self._per_webhook: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()  # an attempt finished: a slot is free
        self.id = uuid.uuid4().hex[:12]

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, then let the attempts in flight finish."""
        log.info("webhook dispatcher %s started", self.id)
        try:
            while not stop.is_set():
                self._changed.clear()
                if await self._fill() == 0:
                    await self._pause(self._poll, stop)
        finally:
            await self._drain()
            log.info("webhook dispatcher %s stopped", self.id)

    async def run_until_idle(self, *, within: float) -> None:
        """Send everything that is due, and every retry that comes due, until nothing is
        left before ``within`` seconds have passed (for tests and one-shot runs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (remaining := deadline - loop.time()) > 0:
            self._changed.clear()
            if await self._fill() > 0:
                continue
            if self._in_flight:
                await self._pause(min(self._poll, remaining))
                continue
            async with self._db.read() as conn:
                due = await repo.next_due(conn)
            if due is None:
                break
            wait = (due - utcnow()).total_seconds()
            if wait > remaining:
                break
            await asyncio.sleep(min(max(wait, 0.01), remaining))
        await self._drain()

    async def aclose(self) -> None:
        """Commit the last attempts and close the connections."""
        await self._drain()
        await self._recorder.close()
        await self._sender.aclose()

    async def _pause(self, seconds: float, stop: asyncio.Event | None = None) -> None:
        """Wait until an attempt finishes, ``stop`` is set, or ``seconds`` have passed."""
        waiters = [asyncio.create_task(self._changed.wait())]
        if stop is not None:
            waiters.append(asyncio.create_task(stop.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _fill(self) -> int:
        """Claim as many due messages as there are free slots, and start them."""
        free = self._concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        room = {hook: self._per_endpoint - n for hook, n in self._per_webhook.items() if n}
        now = utcnow()
        try:
            async with self._db.write() as conn:
                claimed = await repo.claim(
                    conn,
                    now=now,
                    lease_until=now + self._lease,
                    token=str(uuid.uuid4()),
                    limit=free,
                    room=room,
                    default_room=self._per_endpoint,
                    for_update=not self._db.is_sqlite,
                )
        except Exception:
            log.exception("webhook dispatcher %s: claim failed", self.id)
            return 0
        for message in claimed:
            self._in_flight[message.id] = message.webhook_id
            self._per_webhook[message.webhook_id] += 1
            task = asyncio.create_task(self._deliver(message), name=f"webhook-{message.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _deliver(self, message: repo.ClaimedMessage) -> None:
        try:
            try:
                result = await self._attempt(message)
            except Exception as exc:  # a bug on our side: retry later rather than lose it
                log.exception("webhook dispatcher %s: message %s raised", self.id, message.id)
                result = HttpAttempt(
                    None, 0, None, f"internal error: {exc.__class__.__name__}", None
                )
            recorded = await self._recorder.submit(self._outcome(message, result, utcnow()))
            if not recorded:
                log.warning("webhook message %s: lease lost, attempt not applied", message.id)
        except Exception:
            log.exception("webhook dispatcher %s: recording %s failed", self.id, message.id)
        finally:
            self._in_flight.pop(message.id, None)
            self._per_webhook[message.webhook_id] -= 1
            if self._per_webhook[message.webhook_id] <= 0:
                del self._per_webhook[message.webhook_id]
            self._changed.set()

    async def _attempt(self, message: repo.ClaimedMessage) -> HttpAttempt:
        now = utcnow()
        try:
            keys = self._signing_secrets(message, now)
        except SealError:
            # The server secret changed since the webhook was made: nothing can sign.
            log.error("webhook %s: the signing secret cannot be unsealed", message.webhook_id)
            return HttpAttempt(None, 0, None, "the signing secret cannot be unsealed", None)
        body = orjson.dumps(message.payload)
        headers = signed_headers(keys, msg_id=message.id, timestamp=int(now.timestamp()), body=body)
        return await self._sender.post(message.url, body, headers)

    def _signing_secrets(self, message: repo.ClaimedMessage, now: datetime) -> list[str]:
        """The current secret, and the previous one while a rotation's overlap lasts."""
        sealed = [message.secret]
        until = message.previous_secret_until
        if message.previous_secret and until is not None and until > now:
            sealed.append(message.previous_secret)
        return [
            unseal(self._secret_key, token, purpose=SECRET_PURPOSE).decode("ascii")
            for token in sealed
        ]

    def _outcome(
        self, message: repo.ClaimedMessage, result: HttpAttempt, now: datetime
    ) -> repo.RecordedAttempt:
        attempts = message.attempts + 1
        verdict = decide(
            status_code=result.status_code,
            attempts=attempts,
            created_at=message.created_at,
            now=now,
            retry_after=parse_retry_after(result.retry_after, now=now),
            schedule=self._schedule,
            window=self._window,
            jitter=self._jitter,
            rng=self._rng,
        )
        log.info(
            "webhook %s: message %s (%s) attempt %d: %s, %s",
            message.webhook_id,
            message.id,
            message.event_type,
            attempts,
            result.status_code if result.status_code is not None else result.error,
            verdict.status,
        )
        return repo.RecordedAttempt(
            message_id=message.id,
            lease_token=message.lease_token,
            webhook_id=message.webhook_id,
            status=verdict.status,
            attempts=attempts,
            next_attempt_at=verdict.next_attempt_at,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            response_excerpt=result.excerpt,
            error=result.error,
            now=now,
            endpoint_ok=is_success(result.status_code),
            disable_after=self._disable_after,
        )


async def run_dispatcher(settings: Settings, db: Database, *, stop: asyncio.Event) -> None:
    """The dispatcher of one process, until ``stop`` is set (the worker role starts it)."""
    dispatcher = Dispatcher(db, settings)
    try:
        await dispatcher.run(stop)
    finally:
        await dispatcher.aclose()
