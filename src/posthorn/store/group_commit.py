"""Group commit: many concurrent callers share one transaction, each awaiting its own result.

A durable commit costs one fsync whatever it holds, so committing 200 requests at once costs
about what committing one does. Callers ``await submit(item)``; a single background task
drains the queue, waiting at most ``max_wait`` for company, and runs ``flush`` on up to
``max_batch`` items in one write transaction. When a batch fails, its items are retried one
by one, so one bad item fails alone and the others still commit.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait until the transaction holding it has committed."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is not None and not self._task.done():
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

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


def _settle(
    future: asyncio.Future[R], *, result: R | None = None, error: BaseException | None = None
) -> None:
    if future.done():  # the caller went away (cancelled); the work is committed regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
