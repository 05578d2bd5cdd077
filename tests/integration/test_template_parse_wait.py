"""Waiting for a template parser holds none of the event loop's default executor threads,
which password hashing, DKIM signing and rendering share."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from posthorn.services.container import Services

# ~27,000 lexer tokens, under the 30,000 a saved template may have: about a second each to
# parse in a child process, so six of them keep both children busy for several seconds.
NEAR_CAP_HTML = "<p>{{ a }}</p>" * 4_800
SHARED_THREADS = 4
PARSES = SHARED_THREADS + 2


async def test_other_thread_work_runs_while_the_parsers_are_busy(services: Services) -> None:
    loop = asyncio.get_running_loop()
    shared = ThreadPoolExecutor(max_workers=SHARED_THREADS)
    loop.set_default_executor(shared)
    sources = [f"{{# {uuid.uuid4()} #}}" + NEAR_CAP_HTML for _ in range(PARSES)]
    parses = [
        asyncio.create_task(services.templates.variables("Hi", source, None)) for source in sources
    ]
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await asyncio.to_thread(time.monotonic)
    waited = time.monotonic() - started
    busy = sum(not task.done() for task in parses)
    # Before: every shared thread waited for a parser, and this call for the first parse
    # to end (over a second).
    assert busy >= 2, "the parses ended too soon: this proves nothing"
    assert waited < 0.5, f"a thread call waited {waited:.2f} s behind {busy} parses"
    assert [await task for task in parses] == [["a"]] * PARSES
