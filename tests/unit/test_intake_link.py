"""The intake link between SMTP processes, over a real socket pair, with a stand-in intake."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from posthorn.domain.statuses import Status
from posthorn.errors import InvalidRequest, LimitExceeded, PermissionDenied
from posthorn.mime.dkim_canon import DkimError
from posthorn.services.admission import Accepted
from posthorn.services.intake import RawSubmission
from posthorn.smtp.intake_link import IntakeLink, LinkClosed, serve_link


class StandInIntake:
    """Answers by the message's first line: accept, refuse, or fail."""

    def __init__(self) -> None:
        self.seen: list[RawSubmission] = []
        self.release = asyncio.Event()

    async def submit_raw(self, submission: RawSubmission) -> Accepted:
        self.seen.append(submission)
        first = submission.message.split(b"\r\n", 1)[0]
        if first == b"quota":
            raise LimitExceeded("quota_exceeded", retry_after=42, label="daily", limit=1)
        if first == b"domain":
            raise PermissionDenied("domain_not_verified", field="from", domain="x.test")
        if first == b"crash":
            raise ValueError("disk on fire")
        if first == b"malformed":
            raise DkimError("not a header field: b'malformed'")
        if first == b"slow":
            await self.release.wait()
        return Accepted(
            id=f"id-{len(self.seen)}",
            message_id="m@x",
            from_="a@acme.test",
            to=tuple(submission.recipients),
            status=Status.QUEUED,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )


def submission(first_line: bytes, size: int = 10) -> RawSubmission:
    return RawSubmission(
        account_id="acct",
        source="smtp",
        mail_from="a@acme.test",
        recipients=["b@example.test"],
        message=first_line + b"\r\n" + b"x" * size,
    )


@pytest.fixture
async def linked() -> AsyncIterator[tuple[IntakeLink, StandInIntake, asyncio.Task[None]]]:
    ours, theirs = socket.socketpair()
    intake = StandInIntake()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    served = asyncio.create_task(serve_link(reader, writer, intake))  # type: ignore[arg-type]
    link = await IntakeLink.open(theirs.detach())
    yield link, intake, served
    await link.close()
    await asyncio.wait_for(asyncio.gather(served, return_exceptions=True), 5)


async def test_answers_reach_the_session_that_asked(
    linked: tuple[IntakeLink, StandInIntake, asyncio.Task[None]],
) -> None:
    link, intake, _ = linked
    big = await link.submit_raw(submission(b"ok", size=3 * 1024 * 1024))
    assert big.to == ("b@example.test",)
    assert len(intake.seen[0].message) == 3 * 1024 * 1024 + 4  # whole, across many reads
    answers = await asyncio.gather(*(link.submit_raw(submission(b"ok")) for _ in range(50)))
    assert len({a.id for a in answers}) == 50


async def test_refusals_keep_their_code_and_details(
    linked: tuple[IntakeLink, StandInIntake, asyncio.Task[None]],
) -> None:
    link, _, _ = linked
    with pytest.raises(LimitExceeded) as quota:
        await link.submit_raw(submission(b"quota"))
    assert quota.value.retry_after == 42 and quota.value.params["label"] == "daily"
    with pytest.raises(PermissionDenied) as denied:
        await link.submit_raw(submission(b"domain"))
    assert denied.value.field == "from" and "x.test" in str(denied.value)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await link.submit_raw(submission(b"crash"))
    # A header the intake cannot read is the message's fault: a refusal, not our failure,
    # so the session answers 5xx in a session process as it does in one process.
    with pytest.raises(InvalidRequest) as malformed:
        await link.submit_raw(submission(b"malformed"))
    assert malformed.value.code == "message_malformed" and malformed.value.field == "message"
    assert (await link.submit_raw(submission(b"ok"))).id  # the link still works


async def test_a_closed_link_fails_what_waits_and_what_comes(
    linked: tuple[IntakeLink, StandInIntake, asyncio.Task[None]],
) -> None:
    link, _, served = linked
    waiting = asyncio.create_task(link.submit_raw(submission(b"slow")))
    await asyncio.sleep(0.05)
    served.cancel()  # the committing process goes away
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(link.gone.wait(), 5)
    with pytest.raises(LinkClosed):
        await link.submit_raw(submission(b"ok"))
