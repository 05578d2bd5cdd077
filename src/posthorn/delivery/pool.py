"""Reusable connections and concurrency slots per destination.

A delivery *leases* a slot for one destination (a server address and port): at most
``per_destination`` leases run at once for one destination and ``total`` over all of them,
so a burst of mail to one domain cannot open hundreds of sessions to its MX (receivers count
concurrent connections per client and answer 421 past a few). A lease may take an idle
connection left by an earlier delivery and may give its own back; idle connections are closed
after ``idle_seconds``.

The pool knows nothing about SMTP: a connection is anything with ``aclose()`` (polite, bounded
in time, never raises) and ``abort()``. Whether an idle connection suits a delivery (say, it is
encrypted as that delivery's TLS policy demands) is the caller's judgement, passed as ``accept``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    async def aclose(self) -> None: ...

    def abort(self) -> None: ...


ConnT = TypeVar("ConnT", bound=Closable)


class PoolTimeout(Exception):
    """No slot for the destination became free in time."""


class PoolClosed(RuntimeError):
    """The pool was closed; using it afterwards is a programming error."""


@dataclass(slots=True)
class _Idle(Generic[ConnT]):
    key: Hashable
    conn: ConnT
    since: float
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Destination(Generic[ConnT]):
    slots: asyncio.Semaphore
    idle: list[_Idle[ConnT]] = field(default_factory=list)
    users: int = 0


class Lease(Generic[ConnT]):
    """One delivery's hold on a destination: take an idle connection, give one back."""

    def __init__(self, pool: ConnectionPool[ConnT], key: Hashable) -> None:
        self._pool = pool
        self._key = key
        self.kept: ConnT | None = None

    def take_idle(self, accept: Callable[[ConnT], bool] | None = None) -> ConnT | None:
        """The most recently used idle connection to this destination that ``accept`` takes.

        None when there is none. When idle connections exist but ``accept`` refuses them all,
        the oldest is closed: this lease is about to open a connection of its own, and both
        would count against the receiver's limit of connections per client.
        """
        return self._pool._take_idle(self._key, accept)

    def keep(self, conn: ConnT) -> None:
        """Offer ``conn`` for reuse when the lease ends."""
        self.kept = conn


class ConnectionPool(Generic[ConnT]):
    def __init__(
        self, *, per_destination: int = 10, total: int = 100, idle_seconds: float = 30.0
    ) -> None:
        self._per_destination = per_destination
        self._total = asyncio.Semaphore(total)
        self._total_limit = total
        self._idle_seconds = idle_seconds
        self._destinations: dict[Hashable, _Destination[ConnT]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def idle_count(self) -> int:
        return sum(len(dest.idle) for dest in self._destinations.values())

    @asynccontextmanager
    async def lease(self, key: Hashable, *, within: float) -> AsyncIterator[Lease[ConnT]]:
        """Hold a slot for ``key`` for the duration of the ``async with`` block.

        Raises :class:`PoolTimeout` when no slot frees up ``within`` that many seconds.
        """
        if self._closed:
            raise PoolClosed("connection pool is closed")
        dest = self._destinations.get(key)
        if dest is None:
            dest = _Destination(asyncio.Semaphore(self._per_destination))
            self._destinations[key] = dest
        dest.users += 1
        try:
            await self._acquire(dest.slots, self._total, within)
        except BaseException:
            dest.users -= 1
            self._forget_if_unused(key, dest)
            raise
        lease = Lease(self, key)
        try:
            yield lease
        finally:
            dest.slots.release()
            self._total.release()
            dest.users -= 1
            if lease.kept is not None:
                self._give_back(key, dest, lease.kept)
            self._forget_if_unused(key, dest)

    async def aclose(self) -> None:
        """Close every idle connection; connections in use are closed when given back."""
        self._closed = True
        idle = [entry for dest in self._destinations.values() for entry in dest.idle]
        for dest in self._destinations.values():
            dest.idle.clear()
        for entry in idle:
            if entry.timer is not None:
                entry.timer.cancel()
        pending = [*self._closing]
        await asyncio.gather(*(entry.conn.aclose() for entry in idle), *pending)

    @staticmethod
    async def _acquire(own: asyncio.Semaphore, total: asyncio.Semaphore, within: float) -> None:
        # The destination's slot first, so that deliveries queued behind a busy destination
        # do not sit on slots of the global budget.
        try:
            async with asyncio.timeout(within):
                await own.acquire()
                try:
                    await total.acquire()
                except BaseException:
                    own.release()
                    raise
        except TimeoutError as exc:
            raise PoolTimeout(f"no free connection slot within {within:g} s") from exc

    def _take_idle(self, key: Hashable, accept: Callable[[ConnT], bool] | None) -> ConnT | None:
        dest = self._destinations.get(key)
        if dest is None or not dest.idle:
            return None
        for index in range(len(dest.idle) - 1, -1, -1):
            entry = dest.idle[index]
            if accept is None or accept(entry.conn):
                del dest.idle[index]
                if entry.timer is not None:
                    entry.timer.cancel()
                return entry.conn
        self._expire(dest.idle[0])
        return None

    def _give_back(self, key: Hashable, dest: _Destination[ConnT], conn: ConnT) -> None:
        if self._closed:
            self._spawn_close(conn)
            return
        entry = _Idle(key, conn, time.monotonic())
        entry.timer = asyncio.get_running_loop().call_later(self._idle_seconds, self._expire, entry)
        dest.idle.append(entry)
        # Idle connections hold sockets on both ends: keep no more than the concurrency budget.
        if self.idle_count > self._total_limit:
            oldest = min(
                (entry for d in self._destinations.values() for entry in d.idle),
                key=lambda entry: entry.since,
            )
            self._expire(oldest)

    def _expire(self, entry: _Idle[ConnT]) -> None:
        dest = self._destinations.get(entry.key)
        if dest is None or entry not in dest.idle:
            return
        dest.idle.remove(entry)
        if entry.timer is not None:
            entry.timer.cancel()
        self._spawn_close(entry.conn)
        self._forget_if_unused(entry.key, dest)

    def _spawn_close(self, conn: ConnT) -> None:
        task = asyncio.get_running_loop().create_task(conn.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _forget_if_unused(self, key: Hashable, dest: _Destination[ConnT]) -> None:
        if dest.users == 0 and not dest.idle and self._destinations.get(key) is dest:
            del self._destinations[key]
