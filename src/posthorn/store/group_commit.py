"""Group commit: many concurrent callers share one transaction, each awaiting its own result.

A durable commit costs one fsync whatever it holds, so committing 200 requests at once costs
about what committing one does. Callers ``await submit(item)``; a single background task
commits what is waiting, up to ``max_batch`` items in one write transaction. Batches form on
their own: what arrives while a transaction is being written goes into the next one. Only
when the committer was idle does it wait for company, at most ``max_wait`` (and not at all
once a batch is full). When a batch fails, its items are retried one by one, so one bad item
fails alone and the others still commit.

Submitting costs a list append and a future: no task, queue or timer per item, which matters
at thousands of submissions a second on one event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.database import Database

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

Flush = Callable[[AsyncConnection, Sequence[T]], Coroutine[Any, Any, Sequence[R]]]


class GroupCommitter(Generic[T, R]):
    def __init__(
        self,
        db: Database,
        flush: Flush[T, R],
        *,
        max_batch: int = 256,
        max_wait: float = 0.002,
        name: str = "group-commit",
    ) -> None:
        self._db = db
        self._flush = flush
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._name = name
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._arrived = asyncio.Event()  # something is waiting, or close() was called
        self._company: asyncio.Future[None] | None = None  # resolved when a batch is full
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait until the transaction holding it has committed."""
        if self._task is None or self._task.done():
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=self._name)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._arrived.set()
        company = self._company
        if company is not None and len(self._waiting) >= self._max_batch and not company.done():
            company.set_result(None)
        return await future

    async def close(self) -> None:
        """Commit what is waiting, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._arrived.set()
        if self._company is not None and not self._company.done():
            self._company.set_result(None)  # no more waiting for company
        await self._task

    async def _run(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while True:
                await self._arrived.wait()
                self._arrived.clear()
                if self._waiting and self._max_wait > 0 and not self._closing:
                    await self._wait_for_company()
                while self._waiting:  # what arrives during a commit goes into the next one
                    batch = self._waiting[: self._max_batch]
                    del self._waiting[: len(batch)]
                    await self._commit(batch)
                    batch = []
                if self._closing:
                    return
        finally:  # cancelled: nobody is left waiting forever
            for _, future in [*batch, *self._waiting]:
                future.cancel()
            self._waiting.clear()

    async def _wait_for_company(self) -> None:
        """Up to ``max_wait`` for more items, unless the batch fills first."""
        if len(self._waiting) >= self._max_batch:
            return
        loop = asyncio.get_running_loop()
        self._company = company = loop.create_future()
        timer = loop.call_later(self._max_wait, _resolve, company)
        try:
            await company
        finally:
            timer.cancel()
            self._company = None

    async def _commit(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self._write(items)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            log.warning(
                "%s: batch of %d failed (%s); retrying one by one", self._name, len(batch), exc
            )
            for entry in batch:
                await self._commit([entry])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)

    async def _write(self, items: Sequence[T]) -> Sequence[R]:
        return await self._db.run_write(lambda conn: self._flush(conn, items))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _settle(
    future: asyncio.Future[R], *, result: R | None = None, error: BaseException | None = None
) -> None:
    if future.done():  # the caller went away (cancelled); the work is committed regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
