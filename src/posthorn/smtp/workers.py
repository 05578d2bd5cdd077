"""``posthorn smtp`` with ``POSTHORN_SMTP_WORKERS`` > 1: session processes around one intake.

One Python process runs out of CPU (one core, one GIL) well before the database runs out of
commits: a one-message SMTP session costs more Python than committing it does. So the parent
process starts ``smtp_workers`` children (``posthorn smtp --intake-fd FD``) that listen on
the SMTP ports together (``SO_REUSEPORT``: the kernel spreads connections over them) and run
the sessions, authentication and checks included. Each complete message goes back to the
parent over the child's link (:mod:`posthorn.smtp.intake_link`) and is committed by the
parent's intake, so the messages of all the children still share one group commit, and each
250 still means committed. On SQLite the parent runs those commits on its event loop: while
one is written, the children's next messages wait in the socket buffers and form the next
batch.

Stopping: on SIGTERM or SIGINT the parent tells the children, which stop listening, finish
the messages they hold (the parent goes on committing them) and exit; then the parent exits.
A child that sees its link close (the parent is gone) stops the same way. A child that exits
on its own makes the parent stop the others and exit with an error, as ``serve`` does for its
roles, so whatever supervises Posthorn sees it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys

from posthorn.services.container import Services
from posthorn.settings import Settings
from posthorn.smtp.intake_link import STREAM_LIMIT, IntakeLink, serve_link
from posthorn.smtp.server import CLOSE_WAIT, SHUTDOWN_GRACE, run_smtp
from posthorn.smtp.tls import certificate_files

log = logging.getLogger("posthorn.smtp")

STOP_WAIT = SHUTDOWN_GRACE + CLOSE_WAIT + 5.0  # for the children to exit once told


class Child:
    def __init__(self, proc: asyncio.subprocess.Process, link: asyncio.Task[None]) -> None:
        self.proc = proc
        self.link = link
        self.exited = asyncio.create_task(proc.wait(), name=f"smtp-child-{proc.pid}")


async def start_child(services: Services, log_level: str) -> Child:
    ours, theirs = socket.socketpair()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "posthorn",
            "--log-level",
            log_level,
            "smtp",
            "--intake-fd",
            str(theirs.fileno()),
            pass_fds=[theirs.fileno()],
        )
    finally:
        theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=ours, limit=STREAM_LIMIT)
    link = asyncio.create_task(serve_link(reader, writer, services.intake), name="intake-link")
    return Child(proc, link)


async def run_parent(
    settings: Settings, services: Services, *, stop: asyncio.Event, log_level: str
) -> int:
    """Run the session processes until ``stop`` is set or one of them exits; the exit code."""
    # A self-signed certificate is generated here, once, before the children would race to.
    certificate_files(settings)
    # This process only reads the children's frames and commits: its loop may as well run
    # the group commits itself, which costs less than handing each one to a writer thread.
    services.db.write_on_loop()
    _freeze_startup_objects()
    children = [await start_child(services, log_level) for _ in range(settings.smtp_workers)]
    log.info(
        "smtp: %d session processes on %s:%d (pids %s), committing here",
        len(children),
        settings.smtp_host,
        settings.smtp_port,
        ", ".join(str(c.proc.pid) for c in children),
        extra={"action": "smtp_workers"},
    )
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopped, *(c.exited for c in children)], return_when="FIRST_COMPLETED")
    finally:
        stopped.cancel()
        dead = next((c for c in children if c.exited.done()), None)
        if dead is not None and not stop.is_set():
            log.error(
                "smtp session process %d exited with %s; stopping",
                dead.proc.pid,
                dead.proc.returncode,
                extra={"action": "smtp_worker_exit"},
            )
        await _stop_children(children)
    return 0 if stop.is_set() else 1


async def run_child(
    settings: Settings, services: Services, *, stop: asyncio.Event, intake_fd: int
) -> None:
    """A session process: serve SMTP, handing each message to the parent over ``intake_fd``,
    until ``stop`` is set or the parent closes the link."""
    link = await IntakeLink.open(intake_fd)
    _freeze_startup_objects()
    parent_gone = asyncio.create_task(link.gone.wait())
    parent_gone.add_done_callback(lambda _: stop.set())
    try:
        await run_smtp(
            settings,
            services,
            stop=stop,
            submit=link.submit_raw,
            reuse_port=True,
            processes=settings.smtp_workers,
        )
    finally:
        parent_gone.cancel()
        await link.close()


def _freeze_startup_objects() -> None:
    """Keep what start-up made (modules, settings, caches) out of the cyclic garbage
    collector's full passes. A session makes short-lived objects by the thousand, so the
    collector runs often, and without this each full pass walks every object of every
    imported library again."""
    gc.collect()
    gc.freeze()


async def _stop_children(children: list[Child]) -> None:
    for child in children:
        if child.proc.returncode is None:
            child.proc.send_signal(signal.SIGTERM)
    # Their links stay served meanwhile: what they hold is still committed.
    await asyncio.wait([c.exited for c in children], timeout=STOP_WAIT)
    for child in children:
        if child.proc.returncode is None:
            log.warning("smtp session process %d did not stop; killing it", child.proc.pid)
            child.proc.kill()
    await asyncio.wait([c.exited for c in children], timeout=CLOSE_WAIT)
    # Each link ends when its child's end closes, once the answers it is owed are sent.
    await asyncio.wait([c.link for c in children], timeout=CLOSE_WAIT)
