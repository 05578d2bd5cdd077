"""The bulk runner: takes due bulk jobs and queues their emails at a steady pace.

    claim due jobs (lease) ──▶ next chunk of pending recipients ──▶ skip? ──▶ render
        ▲                                                                      │
        └── next_run_at = tick + 1 s ◀── record outcomes ◀── intake.submit ◀───┘

Each tick queues at most ``bulk_rate_per_second`` emails of a job (one tick per second), so
a job of 100,000 recipients enters the delivery queue as a trickle: transactional mail
queued meanwhile is claimed by the worker as soon as it arrives instead of waiting behind
the whole job, and no destination gets more than the job's rate from it.

Restart safety: a recipient stays ``pending`` until the transaction that records its email
commits. A runner that dies between queueing and recording leaves it pending; the next
runner (once the lease runs out) submits it again with the same idempotency key
``bulk:<job>:<position>``, and intake answers with the email it queued the first time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from posthorn.errors import InvalidRequest, LimitExceeded, PosthornError
from posthorn.mime import templating
from posthorn.mime.compose import Attachment
from posthorn.services import template_compiler
from posthorn.services.container import Services
from posthorn.services.intake import UNSUBSCRIBE_PLACEHOLDER, SendRequest
from posthorn.services.templates import invalid
from posthorn.settings import Settings
from posthorn.store import bulk as repo
from posthorn.store import suppressions
from posthorn.store.tables import utcnow

log = logging.getLogger(__name__)

TICK = timedelta(seconds=1)
LEASE = timedelta(seconds=120)  # far longer than a tick takes; a dead runner's job returns
JOBS_PER_CLAIM = 20
IDLE_SECONDS = 1.0
MAX_CHUNK = 5000  # emails per job per tick, whatever the rate
# Concurrent intake calls: enough to fill group commits, few enough to leave the process's
# database connections to its other work.
SUBMITS_IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class Content:
    subject: str
    html: str | None
    text: str | None
    template_data: dict[str, Any] | None = None  # a stored template: intake renders it


@dataclass(frozen=True, slots=True)
class ChunkResult:
    outcomes: list[dict[str, Any]]  # id, status, error, email_id: for store.bulk.record
    retry_after: int | None  # a quota stopped the chunk: come back in this many seconds


class BulkRunner:
    def __init__(self, services: Services, *, settings: Settings | None = None) -> None:
        self._services = services
        self._settings = settings or services.settings
        self._db = services.db
        self.chunk = max(1, min(MAX_CHUNK, int(self._settings.bulk_rate_per_second * TICK.seconds)))

    async def tick(self, *, now: datetime | None = None) -> int:
        """Work one chunk of every due job; the number of recipients settled."""
        now = now or utcnow()
        lease = str(uuid.uuid4())
        async with self._db.write() as conn:
            jobs = await repo.claim(
                conn,
                now=now,
                lease_until=now + LEASE,
                token=lease,
                limit=JOBS_PER_CLAIM,
                for_update=not self._db.is_sqlite,
            )
        settled = 0
        for job in jobs:
            try:
                settled += await self._work(job, lease, now)
            except Exception:
                # Left leased: the job comes back when the lease runs out.
                log.exception("bulk job %s: tick failed", job["id"])
        return settled

    async def _work(self, job: dict[str, Any], lease: str, now: datetime) -> int:
        async with self._db.read() as conn:
            recipients = await repo.pending(conn, job["id"], limit=self.chunk)
        result = await process(self._services, job, recipients)
        async with self._db.write() as conn:
            changed = await repo.record(conn, job["id"], result.outcomes)
            more = await repo.has_pending(conn, job["id"])
            # Paced from the tick's start: a tick that overran leaves the job due at once.
            if result.retry_after is not None:
                next_run: datetime | None = now + timedelta(seconds=result.retry_after)
            else:
                next_run = now + TICK if more else None
            await repo.release(conn, job["id"], lease, next_run_at=next_run, now=utcnow())
        log.info(
            "bulk job %s: %d settled, %s",
            job["id"],
            changed,
            "more to come" if next_run else "done",
            extra={"action": "bulk.tick", "job_id": job["id"]},
        )
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        log.info("bulk runner started (%d emails per job per tick)", self.chunk)
        while not stop.is_set():
            try:
                await self.tick()
                async with self._db.read() as conn:
                    due = await repo.next_due(conn)
            except Exception:
                log.exception("bulk runner: tick failed")
                due = None
            wait = IDLE_SECONDS if due is None else (due - utcnow()).total_seconds()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(wait, IDLE_SECONDS))
        log.info("bulk runner stopped")

    async def run_until_idle(self, *, within: float = 30.0) -> None:
        """Tick until no job has pending recipients (for tests and one-off runs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            await self.tick()
            async with self._db.read() as conn:
                waiting = await repo.next_due(conn)
            if waiting is None:
                return
            delay = (waiting - utcnow()).total_seconds()
            await asyncio.sleep(min(max(delay, 0.0), max(deadline - loop.time(), 0.0)))


async def run_bulk(settings: Settings, services: Services, *, stop: asyncio.Event) -> None:
    """The bulk runner's loop, until ``stop`` is set (run inside ``posthorn worker``)."""
    await BulkRunner(services, settings=settings).run(stop)


# ── one chunk ───────────────────────────────────────────────────────────────────────────


async def process(
    services: Services, job: dict[str, Any], recipients: Sequence[dict[str, Any]]
) -> ChunkResult:
    """Skip, render and queue one chunk of a job's recipients."""
    if not recipients:
        return ChunkResult([], None)
    account_id = job["account_id"]
    params = job["params"]
    emails = [r["email"].lower() for r in recipients]
    async with services.db.read() as conn:
        blocked = await suppressions.suppressed(conn, account_id, emails, job["list_id"] or "")
        members = await repo.list_members(conn, job["list_id"], emails) if job["list_id"] else None
    outcomes: list[dict[str, Any]] = []
    to_send: list[dict[str, Any]] = []
    for recipient in recipients:
        address = recipient["email"].lower()
        reason = _skip_reason(address, blocked, members)
        if reason:
            outcomes.append(_outcome(recipient, repo.SKIPPED, reason))
        else:
            to_send.append(recipient)
    await _parse_sources(job, to_send)
    contents = await asyncio.to_thread(_render_all, job, to_send)
    attachments = tuple(
        Attachment(a["filename"], base64.b64decode(a["content"]), a["content_type"])
        for a in params.get("attachments") or ()
    )
    slots = asyncio.Semaphore(SUBMITS_IN_FLIGHT)

    async def submit(recipient: dict[str, Any], content: Content | str) -> dict[str, Any] | int:
        async with slots:
            return await _submit(services, job, recipient, content, attachments)

    results = await asyncio.gather(*(submit(r, c) for r, c in zip(to_send, contents, strict=True)))
    retry_after: int | None = None
    for result in results:
        if isinstance(result, int):
            retry_after = result if retry_after is None else min(retry_after, result)
        else:
            outcomes.append(result)
    return ChunkResult(outcomes, retry_after)


def _skip_reason(
    address: str, blocked: dict[str, str], members: dict[str, str] | None
) -> str | None:
    if members is not None:
        if address not in members:
            return "removed from the list"
        if members[address] == "unsubscribed":
            return "unsubscribed"
    if address in blocked:
        return f"suppressed: {blocked[address]}"
    return None


async def _parse_sources(job: dict[str, Any], recipients: Sequence[dict[str, Any]]) -> None:
    """Parse the inline sources before the render thread starts, so that it finds them
    compiled instead of waiting for a parser in a shared thread. A source that does not
    parse is reported by the render, for each recipient."""
    params = job["params"]
    if params.get("template_id") or not params.get("personalize"):
        return
    sources = {(params["subject"] or "", params["html"], params["text"])}
    if job["kind"] == "personal":
        sources = {
            ((r["variables"] or {}).get("subject") or "", (r["variables"] or {}).get("html"), None)
            for r in recipients
        }
    for subject, html, text in sources:
        with contextlib.suppress(templating.TemplateProblem):
            await template_compiler.parse(subject, html, text)


def _render_all(job: dict[str, Any], recipients: Sequence[dict[str, Any]]) -> list[Content | str]:
    """Each recipient's subject and body, or why it could not be made (CPU work: a thread).

    A stored template is left to intake, which renders it with the recipient's data; inline
    sources of a personalised job go through the same sandbox here.
    """
    params = job["params"]
    made: list[Content | str] = []
    for recipient in recipients:
        variables = recipient["variables"] or {}
        data = {**variables, "email": recipient["email"]}
        if params.get("unsubscribe"):
            # Left in place: intake puts each recipient's own URL there.
            data.setdefault("unsubscribe_url", UNSUBSCRIBE_PLACEHOLDER)
        subject, html, text = params["subject"], params["html"], params["text"]
        if job["kind"] == "personal":
            subject, html, text = variables.get("subject"), variables.get("html"), None
        if params.get("template_id"):
            made.append(Content("", None, None, template_data=data))
        elif params.get("personalize"):
            try:
                done = templating.render_parts(subject or "", html, text, data)
            except templating.TemplateProblem as problem:
                made.append(invalid(problem).message())
                continue
            made.append(Content(done.subject, done.html, done.text))
        else:
            made.append(Content(subject or "", html, text))
    return made


async def _submit(
    services: Services,
    job: dict[str, Any],
    recipient: dict[str, Any],
    content: Content | str,
    attachments: tuple[Attachment, ...],
) -> dict[str, Any] | int:
    """The recipient's outcome, or the seconds to wait when a quota is reached."""
    if isinstance(content, str):
        return _outcome(recipient, repo.FAILED, content)
    params = job["params"]
    request = SendRequest(
        account_id=job["account_id"],
        source=params.get("source") or "api",
        from_=params["from"],
        to=[recipient["email"]],
        subject=content.subject,
        html=content.html,
        text=content.text,
        attachments=attachments,
        api_key_id=params.get("api_key_id"),
        check_key=False,  # the job was accepted with the key; revoking it later loses nothing
        metadata={"bulk_job_id": job["id"]},
        track_opens=bool(params.get("track_opens")),
        track_clicks=bool(params.get("track_clicks")),
        unsubscribe=bool(params.get("unsubscribe")),
        list_id=job["list_id"],
        template_id=params.get("template_id"),
        template_data=content.template_data,
    )
    key = f"bulk:{job['id']}:{recipient['position']}"
    try:
        accepted = await services.intake.submit(request, idempotency_key=key)
    except LimitExceeded as exc:
        return exc.retry_after
    except InvalidRequest as exc:
        if exc.code == "invalid_address":
            return _outcome(recipient, repo.INVALID, "The recipient's email address is incorrect")
        return _outcome(recipient, repo.FAILED, exc.message())
    except PosthornError as exc:
        return _outcome(recipient, repo.FAILED, exc.message())
    if {r.lower() for r in accepted.rejected} & {recipient["email"].lower()}:
        return _outcome(recipient, repo.SKIPPED, "suppressed", accepted.id)
    return _outcome(recipient, repo.QUEUED, None, accepted.id)


def _outcome(
    recipient: dict[str, Any], status: str, error: str | None, email_id: str | None = None
) -> dict[str, Any]:
    return {"id": recipient["id"], "status": status, "error": error, "email_id": email_id}
