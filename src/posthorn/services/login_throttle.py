"""Failed logins throttled per client network for the whole deployment, not per process.

The count of failures lives in the database (``store/login_failures.py``), so every process
on every host that shares it shares the limit. :meth:`LoginThrottle.attempt` follows these
rules, step by step:

1. An attempt from a network whose completed failures reach ``limit`` within the window is
   refused (:class:`~posthorn.errors.LimitExceeded`, with the seconds until it may try again)
   without its credentials being looked at.
2. Otherwise it may start its check while the network's completed failures plus the checks of
   that network in flight in this process are fewer than ``limit``, and fewer than
   ``MAX_IN_FLIGHT`` are in flight. Else it waits (at most ``MAX_WAIT`` seconds) for one of
   them to finish, and looks again. So an application that opens many sessions at once with
   a valid key is never refused for its own pending checks, and parallel guesses never get
   more checks than the limit.
3. Only a failure that was checked and found wrong is written (one upsert, before the place
   in flight is given up, so that whoever waited reads it). A success writes nothing and
   costs one indexed read; an error of ours (the database, a bug) counts as nothing.

Checks in flight are counted per process: processes that start checks for the same network at
the same instant can together run past the limit by those in flight (at most
``MAX_IN_FLIGHT`` each), once. Guesses made one after the other, from any mix of processes,
get exactly ``limit`` checks per window.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

from posthorn.domain.throttle import FailureWindow, client_key
from posthorn.errors import LimitExceeded
from posthorn.store import login_failures as repo
from posthorn.store.database import Database

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4  # checks of one client network at once in one process (argon2 each)
MAX_WAIT = 10.0  # seconds an attempt waits for a place; well inside the SMTP AUTH timeout
KNOWN_BLOCKED_MAX = 10_000  # networks remembered as refused, for an answer without I/O


class Attempt:
    """One credential check; the caller says whether the credentials were wrong."""

    __slots__ = ("wrong",)

    def __init__(self) -> None:
        self.wrong = False

    def failed(self) -> None:
        self.wrong = True


class _Flight:
    """This process's checks in flight for one client network."""

    __slots__ = ("checks", "finished", "generation", "users")

    def __init__(self) -> None:
        self.checks = 0
        self.users = 0  # attempts holding this object: it is dropped when none do
        self.generation = 0  # checks finished so far
        self.finished = asyncio.Event()


class LoginThrottle:
    def __init__(
        self,
        db: Database,
        *,
        scope: str,
        limit: int,
        window: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._scope = scope
        self._window = FailureWindow(limit=limit, seconds=window)
        self._clock = clock  # Unix time: the buckets are shared by hosts
        self._flights: dict[str, _Flight] = {}
        self._blocked_until: dict[str, float] = {}
        self._pruned_at = 0.0

    def known_blocked(self, ip: str) -> bool:
        """Whether this process has refused ``ip``'s network lately (no I/O): an early answer
        for a client that is still trying. :meth:`attempt` is the authoritative one."""
        until = self._blocked_until.get(client_key(ip))
        return until is not None and until > self._clock()

    @asynccontextmanager
    async def attempt(self, ip: str) -> AsyncIterator[Attempt]:
        """A place for one check of ``ip``'s credentials (rules 1 to 3 above); call
        :meth:`Attempt.failed` inside if they were wrong."""
        if self._window.limit <= 0:
            yield Attempt()
            return
        key = client_key(ip)
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
        flight.users += 1
        try:
            await self._take_place(key, flight)
            attempt = Attempt()
            try:
                yield attempt
            finally:
                try:
                    if attempt.wrong:
                        await self._record(key)
                finally:
                    flight.checks -= 1
                    flight.generation += 1
                    flight.finished.set()
        finally:
            flight.users -= 1
            if flight.users == 0:
                del self._flights[key]

    async def _take_place(self, key: str, flight: _Flight) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_WAIT
        while True:  # bounded: by MAX_WAIT, and each turn follows a finished check
            generation = flight.generation
            buckets = await self._buckets(key)
            if flight.generation != generation:
                continue  # a check finished during the read: its failure may be missing
            now = self._clock()
            failures = self._window.counted(buckets, now)
            if failures >= self._window.limit:
                raise self._refusal(key, self._window.retry_after(buckets, now))
            if flight.checks < min(MAX_IN_FLIGHT, self._window.limit - failures):
                flight.checks += 1
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                # Busy, not guessed at: the network is not marked blocked for anyone else.
                raise LimitExceeded("login_throttled", retry_after=1)
            flight.finished.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(flight.finished.wait(), remaining)

    async def _buckets(self, key: str) -> list[tuple[int, int]]:
        since = self._window.oldest_counted(self._clock())
        async with self._db.read() as conn:
            return await repo.buckets(conn, scope=self._scope, client=key, since=since)

    async def _record(self, key: str) -> None:
        now = self._clock()
        prune = now - self._pruned_at > self._window.bucket_seconds
        async with self._db.write() as conn:
            await repo.add_failure(
                conn, scope=self._scope, client=key, bucket=self._window.bucket(now)
            )
            if prune:  # now and then, not on every failure: one ranged delete for all networks
                await repo.prune(conn, scope=self._scope, before=self._window.oldest_counted(now))
        if prune:
            self._pruned_at = now

    def _refusal(self, key: str, wait: float) -> LimitExceeded:
        if len(self._blocked_until) >= KNOWN_BLOCKED_MAX:
            self._blocked_until.clear()
        self._blocked_until[key] = self._clock() + wait
        return LimitExceeded("login_throttled", retry_after=max(1, math.ceil(wait)))
