"""A short-lived cache in front of a database look-up that every request makes.

Answers are kept for ``ttl`` seconds. Concurrent misses of one key share a single look-up
(when an entry expires under load, one query goes out, not one per waiting request), and
:meth:`LookupCache.clear` forgets everything, including look-ups still in flight, so a change
made in this process is seen by the very next request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LookupCache(Generic[K, V]):
    def __init__(self, ttl: float, *, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._flights: dict[K, asyncio.Future[V]] = {}
        self._generation = 0

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        """The cached answer for ``key``, or ``await load()`` (shared by concurrent callers)."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(load())
            self._flights[key] = flight
            flight.add_done_callback(self._landed(key, self._generation))
        # A caller that goes away does not cancel the look-up the others are waiting for.
        return await asyncio.shield(flight)

    def clear(self) -> None:
        self._entries.clear()
        self._flights.clear()
        self._generation += 1  # answers still in flight were read before the change

    def _landed(self, key: K, generation: int) -> Callable[[asyncio.Future[V]], None]:
        def keep(flight: asyncio.Future[V]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if flight.cancelled() or flight.exception() is not None:
                return
            if generation != self._generation:
                return
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self._ttl, flight.result())

        return keep
