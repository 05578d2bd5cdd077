"""The link between an SMTP session process and the process that commits its messages.

With ``POSTHORN_SMTP_WORKERS`` > 1, ``posthorn smtp`` runs the sessions in child processes
(see :mod:`posthorn.smtp.workers`) and keeps the intake to itself: every child hands each
complete message to the parent over a socket pair and waits for the answer, so the messages
of all the children share the parent's group commits, and the 250 still comes only after the
durable commit.

On the wire, each frame is a 4-byte big-endian length and a pickle. The socket pair is made
by the parent before it starts the child and is inherited by that child alone: nothing else
can write to it. A request is ``(number, RawSubmission)``; its answer is ``(number, OK,
Accepted)``, ``(number, REFUSED, PosthornError)`` for a message the intake refused (the
session replies as it would in one process), or ``(number, FAILED, text)`` for anything else
(the session replies 451 and the client tries again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import socket
import struct
from typing import Any

from posthorn.errors import PosthornError
from posthorn.mime.dkim_canon import DkimError
from posthorn.services.admission import Accepted
from posthorn.services.intake import Intake, RawSubmission
from posthorn.smtp.replies import malformed

log = logging.getLogger("posthorn.smtp")

HEADER = struct.Struct("!I")
OK, REFUSED, FAILED = "ok", "refused", "failed"
# A message is at most MAX_MESSAGE_BYTES; the envelope and pickling add little.
FRAME_LIMIT = 64 * 1024 * 1024
STREAM_LIMIT = 1024 * 1024


class LinkClosed(ConnectionError):
    """The committing process has gone: the message was not taken."""


async def write_frame(writer: asyncio.StreamWriter, obj: Any) -> None:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(HEADER.pack(len(body)) + body)
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next object, or ``None`` once the other side has closed."""
    try:
        (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        if length > FRAME_LIMIT:
            raise ValueError(f"intake link frame of {length} bytes")
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None
    return pickle.loads(body)  # noqa: S301 - a socket pair shared with our own child only


class IntakeLink:
    """The session process's end: ``submit_raw`` as if the intake were here."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._numbers = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Accepted]] = {}
        self._closed = False
        self.gone = asyncio.Event()  # set when the committing process has closed the link
        self._task = asyncio.create_task(self._read_answers(), name="intake-link")

    @classmethod
    async def open(cls, fd: int) -> IntakeLink:
        sock = socket.socket(fileno=fd)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=STREAM_LIMIT)
        return cls(reader, writer)

    async def submit_raw(self, submission: RawSubmission) -> Accepted:
        if self._closed:
            raise LinkClosed("the intake process is gone")
        number = next(self._numbers)
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        try:
            await write_frame(self._writer, (number, submission))
            return await future
        finally:
            self._waiting.pop(number, None)

    async def close(self) -> None:
        self._closed = True
        self._writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read_answers(self) -> None:
        try:
            while (answer := await read_frame(self._reader)) is not None:
                number, kind, value = answer
                future = self._waiting.get(number)
                if future is None or future.done():
                    continue  # the session went away; the parent committed regardless
                if kind == OK:
                    future.set_result(value)
                elif kind == REFUSED:
                    future.set_exception(value)
                else:
                    future.set_exception(RuntimeError(f"intake failed: {value}"))
        finally:
            self._closed = True
            self.gone.set()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(LinkClosed("the intake process is gone"))


async def serve_link(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, intake: Intake
) -> None:
    """The committing process's end, for one child, until that child closes it."""
    pending: set[asyncio.Task[None]] = set()
    outbox = _Outbox(writer)

    async def answer(number: int, submission: RawSubmission) -> None:
        try:
            reply: tuple[int, str, Any] = (number, OK, await intake.submit_raw(submission))
        except PosthornError as exc:
            reply = (number, REFUSED, exc)
        except DkimError as exc:  # a header that cannot be read: the message's fault
            reply = (number, REFUSED, malformed(exc))
        except Exception as exc:
            log.exception("smtp intake failed", extra={"action": "smtp_error"})
            reply = (number, FAILED, repr(exc))
        outbox.put(reply)

    try:
        while (request := await read_frame(reader)) is not None:
            task = asyncio.create_task(answer(*request))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:  # the child closed its end: finish what it handed over
            await asyncio.gather(*pending, return_exceptions=True)
        outbox.flush()
    finally:
        writer.close()


class _Outbox:
    """Answers go out together: the messages of one group commit are answered in the same
    turn of the loop, so they leave in one write, and the child wakes up once for them all.

    Each answer stands for a message the child is waiting on, so what is buffered here is
    bounded by what the child has sent; there is nothing to drain for. If the child is gone,
    what was committed stays committed.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._frames: list[bytes] = []

    def put(self, obj: Any) -> None:
        body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        if not self._frames:
            asyncio.get_running_loop().call_soon(self.flush)
        self._frames.append(HEADER.pack(len(body)) + body)

    def flush(self) -> None:
        frames, self._frames = self._frames, []
        if frames and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError):
                self._writer.write(b"".join(frames))
