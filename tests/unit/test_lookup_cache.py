"""The look-up cache: shared misses, expiry, and a clear() that also beats answers in flight."""

from __future__ import annotations

import asyncio

import pytest

from posthorn.services.lookup_cache import LookupCache


class Source:
    """A look-up that counts its calls and answers when released."""

    def __init__(self) -> None:
        self.calls = 0
        self.value = "v1"
        self.release = asyncio.Event()

    async def load(self) -> str:
        self.calls += 1
        seen = self.value  # what the database held when the look-up read it
        await self.release.wait()
        return seen


async def test_concurrent_misses_share_one_look_up() -> None:
    cache: LookupCache[str, str] = LookupCache(60)
    source = Source()
    waiting = [asyncio.create_task(cache.get("k", source.load)) for _ in range(50)]
    await asyncio.sleep(0)
    source.release.set()
    assert await asyncio.gather(*waiting) == ["v1"] * 50
    assert source.calls == 1
    assert await cache.get("k", source.load) == "v1" and source.calls == 1


async def test_answers_expire() -> None:
    cache: LookupCache[str, str] = LookupCache(0.05)
    source = Source()
    source.release.set()
    assert await cache.get("k", source.load) == "v1"
    source.value = "v2"
    assert await cache.get("k", source.load) == "v1"
    await asyncio.sleep(0.06)
    assert await cache.get("k", source.load) == "v2" and source.calls == 2


async def test_clear_forgets_answers_and_those_still_in_flight() -> None:
    cache: LookupCache[str, str] = LookupCache(60)
    source = Source()
    stale = asyncio.create_task(cache.get("k", source.load))
    while source.calls == 0:  # the look-up has read
        await asyncio.sleep(0)
    cache.clear()  # a change was made while the first look-up was reading
    source.value = "v2"
    source.release.set()
    assert await stale == "v1"  # that caller gets what it asked for…
    assert await cache.get("k", source.load) == "v2"  # …but it is not kept
    assert source.calls == 2


async def test_failures_are_not_kept_and_reach_every_waiter() -> None:
    cache: LookupCache[str, str] = LookupCache(60)
    calls = 0

    async def broken() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise ConnectionError("database went away")

    results = await asyncio.gather(
        *(cache.get("k", broken) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results) and calls == 1
    with pytest.raises(ConnectionError):
        await cache.get("k", broken)
    assert calls == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    cache: LookupCache[str, str] = LookupCache(60)
    source = Source()
    impatient = asyncio.create_task(cache.get("k", source.load))
    patient = asyncio.create_task(cache.get("k", source.load))
    await asyncio.sleep(0)
    impatient.cancel()
    source.release.set()
    assert await patient == "v1" and source.calls == 1
