"""A watchdog that stops a render stuck inside one long Python-level call.

The template budget is checked between operations, but a single filter call (``wordwrap``
and ``urlize`` on a megabyte of text run for seconds in pure Python) never returns to a
check. CPython delivers an *asynchronous exception* to another thread at its next bytecode
boundary (``PyThreadState_SetAsyncExc``), so one watchdog thread can stop such a call at the
render's deadline. Long C calls (a ``str.join`` or ``repr`` of a huge value) cannot be
interrupted this way; the size checks in ``templating.py`` refuse those before they start.

The exception is set, and cleared again on disarm if it was not yet delivered, under one
lock, so it can never land in code that runs after the render has finished.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class Overtime(Exception):
    """Raised into a render thread that ran past its deadline."""


@dataclass(order=True, slots=True)
class _Armed:
    deadline: float
    serial: int
    thread_id: int = field(compare=False)
    active: bool = field(default=True, compare=False)
    fired: bool = field(default=False, compare=False)


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    # None clears a pending exception that has not been delivered yet.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[_Armed] = []
        self._serial = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        """Raise :class:`Overtime` into the calling thread if the block runs past ``at``
        (``time.monotonic()``)."""
        armed = _Armed(at, next(self._serial), threading.get_ident())
        with self._wake:
            heapq.heappush(self._heap, armed)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="posthorn-template-watchdog", daemon=True
                )
                self._thread.start()
            if self._heap[0] is armed:
                self._wake.notify()  # the watchdog sleeps until a later deadline
        try:
            yield
        finally:
            with self._lock:
                armed.active = False
                if armed.fired:
                    _raise_in(armed.thread_id, None)

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._heap and not self._heap[0].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                wait = self._heap[0].deadline - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                armed = heapq.heappop(self._heap)
                armed.fired = True
                _raise_in(armed.thread_id, Overtime)


WATCHDOG = Watchdog()
