"""Template sources are parsed and compiled in child processes, never in a serving process.

Parsing and compiling a template is pure Python and CPython's ``compile()``: ~30 µs per
token, and ``compile()`` holds the GIL from start to end (~5 s of 0.5 MB of ``{{a}}``). In a
thread of the web process it would still stop the event loop for that long, so every
process that renders templates sends its sources to a small pool of children and gets back
the compiled module as ``marshal`` bytes, which load in milliseconds. A child that passes
the parse deadline is killed and replaced; the caller gets :class:`ParseLimit`.

Callers wait on a pipe, which releases the GIL, in a thread. Async code parses through
:func:`variables` and :func:`parse`, which wait in this module's own threads, one per child:
a wait of up to the parse deadline (10 s) must not hold one of the event loop's default
executor threads, which logins (argon2), DKIM signing and rendering share.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from posthorn.mime import templating
from posthorn.mime.templating import Compiled, ParseLimit, TemplateProblem, TemplateSyntax

log = logging.getLogger(__name__)

CHILDREN = 2
GRACE_SECONDS = 1.0  # past the cooperative deadline, before the child is killed
NICENESS = 10


def _serve(requests: Connection, replies: Connection) -> None:
    """The child's loop: (source, html, seconds) in, a tuple describing the outcome out."""
    while True:
        try:
            source, html, seconds = requests.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        reply: tuple[Any, ...]
        try:
            compiled = templating.compile_source(source, html, seconds=seconds)
            reply = ("ok", compiled.code, sorted(compiled.variables))
        except TemplateSyntax as exc:
            reply = ("syntax", exc.reason, exc.line, exc.column)
        except TemplateProblem as exc:
            reply = ("limit", exc.reason)
        except MemoryError:
            reply = ("limit", "the template is too large to parse")
        replies.send(reply)


class _Child:
    """One child process, started on first use and again after it was killed."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._replies: Connection | None = None

    def compile(self, source: str, html: bool, seconds: float) -> Compiled:
        requests, replies = self._started()
        try:
            requests.send((source, html, seconds))
            if not replies.poll(seconds + GRACE_SECONDS):
                self.stop()
                raise ParseLimit(f"parsing took longer than {seconds:g} s")
            reply = replies.recv()
        except (EOFError, OSError):
            self.stop()
            raise ParseLimit("the template is too large to parse") from None
        if reply[0] == "ok":
            return Compiled(reply[1], frozenset(reply[2]))
        if reply[0] == "syntax":
            raise TemplateSyntax(reply[1], line=reply[2], column=reply[3])
        raise ParseLimit(reply[1])

    def _started(self) -> tuple[Connection, Connection]:
        if self._process is not None and self._process.poll() is None:
            assert self._requests is not None and self._replies is not None
            return self._requests, self._replies
        self.stop()
        # A plain ``python -m`` child rather than multiprocessing's spawn, which would
        # re-import whatever script started this process.
        path = os.pathsep.join(entry for entry in sys.path if entry)
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        assert process.stdin is not None and process.stdout is not None
        self._requests = Connection(os.dup(process.stdin.fileno()), readable=False)
        self._replies = Connection(os.dup(process.stdout.fileno()), writable=False)
        process.stdin.close()
        process.stdout.close()
        self._process = process
        return self._requests, self._replies

    def stop(self) -> None:
        for conn in (self._requests, self._replies):
            if conn is not None:
                conn.close()
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
        self._process, self._requests, self._replies = None, None, None


class TemplateCompiler:
    """A :data:`templating.Compiler` backed by up to ``children`` child processes."""

    def __init__(
        self, *, children: int = CHILDREN, seconds: float = templating.MAX_PARSE_SECONDS
    ) -> None:
        self._seconds = seconds
        self._idle: queue.LifoQueue[_Child] = queue.LifoQueue()
        for _ in range(children):
            self._idle.put(_Child())

    def __call__(self, source: str, html: bool) -> Compiled:
        # A child is free again within one parse deadline; waiting longer means every
        # child is taken by callers outside :data:`_WAITERS`, and this one gives up.
        try:
            child = self._idle.get(timeout=self._seconds + GRACE_SECONDS)
        except queue.Empty:
            raise ParseLimit("the template parsers are busy; try again later") from None
        try:
            return child.compile(source, html, self._seconds)
        finally:
            self._idle.put(child)


_shared: TemplateCompiler | None = None
_shared_lock = threading.Lock()
# The threads that wait for a child: no more than there are children, so parses queue here
# as tasks instead of each holding a thread.
_WAITERS = ThreadPoolExecutor(max_workers=CHILDREN, thread_name_prefix="posthorn-template-parse")


def install() -> None:
    """Compile this process's templates in child processes (idempotent). The children
    start on first use: most processes (SMTP sessions, workers without bulk jobs) never parse
    a template, and the first parse's wait for them is not charged to any render."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TemplateCompiler()
            templating.use_compiler(_shared)
            log.debug("template compiler: %d child processes", CHILDREN)


async def variables(subject: str, html: str | None, text: str | None) -> list[str]:
    """:func:`templating.variables`, parsing what is not cached yet in a thread of
    :data:`_WAITERS` (a template already compiled is answered at once)."""
    found = templating.cached_variables(subject, html, text)
    if found is None:
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(_WAITERS, templating.variables, subject, html, text)
    return found


async def parse(subject: str, html: str | None, text: str | None) -> None:
    """Parse the parts before rendering them in another thread; the render then finds
    them in the cache. Raises :class:`TemplateProblem` naming the part."""
    await variables(subject, html, text)


if __name__ == "__main__":
    # Parsing is one tenant's CPU work: on a busy machine the serving processes come first.
    os.nice(NICENESS)
    # The protocol uses the inherited stdin and stdout; anything printed goes to stderr.
    _replies = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    _serve(Connection(0, writable=False), _replies)
