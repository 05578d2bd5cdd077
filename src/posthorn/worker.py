"""The worker loop: claim due deliveries, send them, record what happened to each.

    claim (lease) ──▶ group ──▶ suppressed? ──▶ route ──▶ DKIM-sign ──▶ send ──▶ decide ──▶ record
        ▲                                                                                     │
        └──────────────────── free slot ◀─────────────────────────────────────────────────────┘

A *transaction* is what one slot sends: one delivery, or several deliveries of one email that
get the email's own message (no per-recipient tracking) at one recipient domain, up to
``destination_recipient_limit``: one MAIL FROM, an RCPT TO each, one DATA, signed once. Each
delivery still gets its own result, event and retry. A lone delivery's return path names it
(VERP); a shared transaction's names the group, and a bounce to it is matched to the recipient
it names (:mod:`posthorn.domain.verp`). A delivery whose recipient has tracking links or an
unsubscribe URL of their own goes alone, its copy made from the email's message just before
it is signed (:mod:`posthorn.services.personal_copies`); so workers need the same
``PUBLIC_URL`` and ``SECRET_KEY`` as the web processes.

Up to ``worker_concurrency`` transactions are in flight; the loop claims only as many
deliveries as there are free slots (plus the due ones that join their transactions), so a
claimed delivery never waits in memory while its lease runs out. A heartbeat renews the
leases of in-flight deliveries every third of a lease (until their results are committed), so
a slow MX keeps them while a dead worker's return to the queue within one lease. Results are
recorded through a group commit. ``stop()`` (SIGTERM) stops claiming, lets in-flight sends
finish and records them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from posthorn.delivery.envelope import Batch, Envelope
from posthorn.domain import verp
from posthorn.domain.outcomes import decide
from posthorn.domain.results import (
    Attempt,
    Delivered,
    DeliveryResult,
    HardFail,
    Refused,
    SoftFail,
)
from posthorn.services.personal_copies import CopyPlan, make_copy
from posthorn.services.relays import Relays
from posthorn.services.routing import Deliverer, DelivererFactory, Routes
from posthorn.settings import Settings
from posthorn.store import queue, suppressions
from posthorn.store.database import Database
from posthorn.store.group_commit import GroupCommitter
from posthorn.store.tables import utcnow

log = logging.getLogger(__name__)


COPY_THREADS = 2  # per-recipient copies made at once; CPU-bound, so about one per core


class Signer(Protocol):
    """Adds DKIM signatures for the sender's domain (``services/signing.py``)."""

    async def sign(self, domain: str, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _Transaction:
    """Deliveries that go out in one SMTP transaction, and what they send."""

    items: tuple[queue.ClaimedDelivery, ...]
    message: queue.QueuedMessage
    suppressed: dict[int, str]  # delivery id → why the recipient is suppressed
    personal: queue.PersonalMessage | None = None  # the one recipient's own message


def group_transactions(
    claimed: Sequence[queue.ClaimedDelivery], per_transaction: int
) -> list[tuple[queue.ClaimedDelivery, ...]]:
    """Claimed deliveries as transactions: those of one email that share its message and a
    recipient domain together, at most ``per_transaction`` each; any other alone."""
    transactions: list[tuple[queue.ClaimedDelivery, ...]] = []
    shared: dict[tuple[str, str], list[queue.ClaimedDelivery]] = {}
    for item in claimed:
        if item.shared and per_transaction > 1:
            key = (item.email_id, queue.destination_of(item.recipient))
            shared.setdefault(key, []).append(item)
        else:
            transactions.append((item,))
    for members in shared.values():
        for start in range(0, len(members), per_transaction):
            transactions.append(tuple(members[start : start + per_transaction]))
    return transactions


class Worker:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        deliverer: Deliverer,
        signer: Signer,
        *,
        relays: Relays | None = None,
        make_deliverer: DelivererFactory | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._routes = Routes(settings, deliverer, relays, make=make_deliverer)
        self._signer = signer
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._copying = asyncio.Semaphore(COPY_THREADS)
        self._in_flight: dict[int, str] = {}  # delivery id → lease token
        self._per_transaction = settings.destination_recipient_limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._lease = timedelta(seconds=settings.worker_lease_seconds)
        self._recorder: GroupCommitter[queue.RecordedOutcome, bool] = GroupCommitter(
            db, queue.record_outcomes, max_batch=200, max_wait=0.005, name="worker-record"
        )
        self.id = uuid.uuid4().hex[:12]

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        """Poll now instead of after the idle wait (e.g. when mail was just queued)."""
        self._wake.set()

    async def run(self) -> None:
        log.info("worker %s started", self.id)
        try:
            async with self._heartbeating():
                try:
                    while not self._stopping.is_set():
                        claimed = await self._claim_batch()
                        if not claimed:
                            await self._idle()
                finally:
                    if self._tasks:
                        await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            await self.close()
            log.info("worker %s stopped", self.id)

    async def run_until_idle(self, *, within: float = 30.0) -> None:
        """Deliver everything that is due now, then return (for `posthorn send` and tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with self._heartbeating():
            while loop.time() < deadline:
                claimed = await self._claim_batch()
                if not claimed and not self._tasks:
                    break
                if not claimed:
                    await asyncio.sleep(0.01)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Commit the last results and close the outgoing connections."""
        await self._recorder.close()
        await self._routes.aclose()

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._settings.worker_poll_seconds)

    async def _claim_batch(self) -> int:
        await self._slots.acquire()  # wait for at least one free slot before claiming
        if self._stopping.is_set():
            self._slots.release()
            return 0
        free = 1
        while free < self._settings.worker_concurrency and not self._slots.locked():
            await self._slots.acquire()
            free += 1
        try:
            now = utcnow()
            token = str(uuid.uuid4())
            lease_until = now + self._lease
            async with self._db.write() as conn:
                claimed = await queue.claim(
                    conn,
                    now=now,
                    lease_until=lease_until,
                    token=token,
                    limit=free,
                    for_update=not self._db.is_sqlite,
                )
                if self._per_transaction > 1:
                    claimed += await queue.claim_companions(
                        conn,
                        claimed,
                        now=now,
                        lease_until=lease_until,
                        token=token,
                        per_transaction=self._per_transaction,
                        for_update=not self._db.is_sqlite,
                    )
                messages = await queue.load_messages(conn, [c.email_id for c in claimed])
                personal = await queue.load_personal_messages(
                    conn, [c.id for c in claimed if not c.shared]
                )
                blocked = await suppressions.suppressed_many(
                    conn, [(c.account_id, c.recipient) for c in claimed]
                )
        except Exception:
            for _ in range(free):
                self._slots.release()
            log.exception("worker %s: claim failed", self.id)
            await asyncio.sleep(1)
            return 0
        # Companions only join transactions of deliveries claimed by the limit, so there are
        # never more transactions than slots.
        transactions = group_transactions(claimed, self._per_transaction)
        for _ in range(free - len(transactions)):
            self._slots.release()
        for items in transactions:
            first = items[0]
            if first.email_id not in messages:  # the email was deleted meanwhile
                self._slots.release()
                continue
            for item in items:
                self._in_flight[item.id] = item.lease_token
            message = messages[first.email_id]
            suppressed = {
                item.id: reason
                for item in items
                if (reason := blocked.get((item.account_id, item.recipient.lower()))) is not None
            }
            job = _Transaction(items, message, suppressed, personal.get(first.id))
            task = asyncio.create_task(self._process(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _attempt(self, job: _Transaction) -> list[DeliveryResult]:
        """The pipeline of one transaction: check suppression → route → DKIM-sign → send.
        Each step may end it early, for one recipient or for all; a result per delivery."""
        results: dict[int, DeliveryResult] = {}
        sendable: list[queue.ClaimedDelivery] = []
        for item in job.items:
            reason = job.suppressed.get(item.id)
            if reason is None:
                sendable.append(item)
                continue
            note = f"recipient is on the suppression list ({reason})"
            results[item.id] = Refused(Attempt(message=note), reason="suppressed")
        if sendable:
            deliverer = await self._routes.for_account(job.items[0].account_id)
            raw = await self._message_for(job)
            signed = await self._signer.sign(job.message.sender.rpartition("@")[2], raw)
            if len(sendable) == 1:
                (item,) = sendable
                envelope = Envelope(self._return_path(item), item.recipient, signed)
                results[item.id] = await deliverer.deliver(envelope)
            else:
                batch = Batch(
                    self._group_return_path(sendable),
                    tuple(item.recipient for item in sendable),
                    signed,
                )
                sent = await deliverer.deliver_many(batch)
                results.update(zip((item.id for item in sendable), sent, strict=True))
        return [results[item.id] for item in job.items]

    async def _message_for(self, job: _Transaction) -> bytes:
        """The message the transaction sends: the email's, or its one recipient's copy.

        Making a copy rewrites every link of the body in Python: seconds for a large,
        link-heavy body. It runs in a thread, a few at a time, so that the heartbeat keeps
        renewing this worker's leases and its other sessions keep moving meanwhile.
        """
        personal = job.personal
        if personal is None:
            return job.message.raw
        if personal.raw is not None:
            return personal.raw
        assert personal.plan is not None
        (item,) = job.items
        build = functools.partial(
            make_copy,
            self._settings,
            CopyPlan.loads(personal.plan),
            account_id=item.account_id,
            email_id=item.email_id,
            recipient=item.recipient,
            message=job.message.raw,
            html=personal.html,
            text=personal.text,
        )
        async with self._copying:
            return await asyncio.to_thread(build)

    def _return_path(self, item: queue.ClaimedDelivery) -> str:
        """MAIL FROM: a VERP address naming this delivery, so a bounce finds its way back."""
        return verp.return_path(
            self._settings.secret_key, item.id, self._settings.effective_bounce_domain
        )

    def _group_return_path(self, items: Sequence[queue.ClaimedDelivery]) -> str:
        """MAIL FROM of a shared transaction: one VERP address for all its recipients (RFC
        5321 §3.3 gives a transaction one reverse-path), naming the group by its first
        delivery; a bounce says which recipient it is about."""
        lead = min(item.id for item in items)
        return verp.group_return_path(
            self._settings.secret_key, lead, self._settings.effective_bounce_domain
        )

    async def _process(self, job: _Transaction) -> None:
        try:
            try:
                results = await self._attempt(job)
            except Exception as exc:  # a bug on our side: retry later rather than lose it
                log.exception(
                    "worker %s: deliveries %s raised",
                    self.id,
                    ", ".join(str(item.id) for item in job.items),
                )
                failed = SoftFail(
                    attempt=Attempt(message=f"internal error: {exc}"), reason="internal"
                )
                results = [failed] * len(job.items)
            now = utcnow()
            outcomes = [
                self._outcome(item, job.message, result, now)
                for item, result in zip(job.items, results, strict=True)
            ]
            recorded = await asyncio.gather(
                *(self._recorder.submit(outcome) for outcome in outcomes), return_exceptions=True
            )
            for item, ok in zip(job.items, recorded, strict=True):
                if isinstance(ok, BaseException):
                    log.error(
                        "worker %s: recording delivery %s failed",
                        self.id,
                        item.id,
                        exc_info=ok,
                    )
                elif not ok:
                    log.warning("worker %s: lease on delivery %s was lost", self.id, item.id)
        except Exception:
            log.exception("worker %s: recording deliveries failed", self.id)
        finally:
            for item in job.items:
                self._in_flight.pop(item.id, None)
            self._slots.release()

    def _outcome(
        self,
        item: queue.ClaimedDelivery,
        message: queue.QueuedMessage,
        result: DeliveryResult,
        now: datetime,
    ) -> queue.RecordedOutcome:
        attempts = item.attempts + 1
        decision = decide(
            result,
            attempts=attempts,
            created_at=item.created_at,
            now=now,
            schedule_minutes=self._settings.retry_schedule_minutes,
            max_age=timedelta(hours=self._settings.retry_max_age_hours),
        )
        attempt = result.attempt
        data: dict[str, object] = {
            "attempt": attempts,
            "code": attempt.code,
            "enhanced_code": attempt.enhanced_code,
            "message": attempt.message,
            "remote_host": attempt.remote_host,
            "remote_ip": attempt.remote_ip,
            "tls": attempt.tls_version,
            "transcript": list(attempt.transcript),
        }
        if isinstance(result, SoftFail | HardFail | Refused):
            data["reason"] = result.reason
        if isinstance(result, SoftFail) and result.possible_duplicate:
            data["possible_duplicate"] = True
        if isinstance(result, Delivered):
            data["via_relay"] = result.via_relay
        if decision.next_attempt_at is not None:
            data["next_attempt_at"] = decision.next_attempt_at.isoformat()
        log.info(
            "delivery %s to %s: %s (%s %s)",
            item.id,
            item.recipient,
            decision.status,
            attempt.code,
            attempt.message[:200],
        )
        return queue.RecordedOutcome(
            delivery_id=item.id,
            lease_token=item.lease_token,
            email_id=item.email_id,
            account_id=item.account_id,
            recipient=item.recipient,
            sender=message.sender,
            source=message.source,
            status=str(decision.status),
            attempts=attempts,
            next_attempt_at=decision.next_attempt_at,
            last_code=attempt.code,
            last_reply=attempt.message[:1000] or None,
            remote_host=attempt.remote_host,
            delivered_at=decision.delivered_at,
            event_type=decision.event_type,
            event_data=data,
            now=now,
            suppress_reason="bounce" if isinstance(result, HardFail) and result.suppress else None,
        )

    @contextlib.asynccontextmanager
    async def _heartbeating(self) -> AsyncIterator[None]:
        """Renew in-flight leases for as long as the block runs (sends included)."""
        heartbeat = asyncio.create_task(self._heartbeat(), name="worker-heartbeat")
        try:
            yield
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self) -> None:
        # A third of a lease between renewals leaves room for two more tries before a lease
        # runs out; a failed one (e.g. the database briefly unreachable) is retried sooner.
        interval = self._lease.total_seconds() / 3
        retry = min(interval, 1.0)
        wait = interval
        while True:
            await asyncio.sleep(wait)
            held = list(self._in_flight.items())
            if not held:
                wait = interval
                continue
            try:
                async with self._db.write() as conn:
                    renewed = await queue.extend_leases(conn, held, utcnow() + self._lease)
            except Exception:
                log.exception("worker %s: lease heartbeat failed", self.id)
                wait = retry
                continue
            wait = interval
            # Still in flight but not renewed: another worker took it over after this one
            # stalled past a lease, and this one's result will be dropped.
            kept = set(renewed)
            lost = [i for i, token in held if i not in kept and self._in_flight.get(i) == token]
            if lost:
                log.warning(
                    "worker %s: leases on deliveries %s were lost",
                    self.id,
                    ", ".join(map(str, lost)),
                )
