"""The child processes that parse templates: results, errors and limits come back from the
child as they would in-process, and a child that died is replaced."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from posthorn.mime import templating
from posthorn.services.template_compiler import TemplateCompiler


def test_compiled_in_a_child_renders_like_in_process() -> None:
    compiler = TemplateCompiler(children=1)
    compiled = compiler("Hi {{ user.name }}{% for p in plans %}<{{ p }}>{% endfor %}", True)
    assert compiled == templating.compile_source(
        "Hi {{ user.name }}{% for p in plans %}<{{ p }}>{% endfor %}", True
    )
    assert compiled.variables == {"user", "plans"}


def test_errors_and_limits_come_back_from_the_child() -> None:
    compiler = TemplateCompiler(children=1)
    with pytest.raises(templating.TemplateSyntax) as syntax:
        compiler("line one\n{{ a + }}", False)
    assert (syntax.value.line, syntax.value.column) == (2, 8)
    with pytest.raises(templating.ParseLimit, match="30,000"):
        compiler("{{a}}" * 20_000, True)
    slow = TemplateCompiler(children=1, seconds=0.000_001)
    with pytest.raises(templating.ParseLimit, match="parsing took longer than"):
        slow("{{a}}" * 2_000, True)


def test_a_dead_child_is_replaced() -> None:
    compiler = TemplateCompiler(children=1)
    assert compiler("{{ a }}", False).variables == {"a"}
    child = compiler._idle.get()
    compiler._idle.put(child)
    assert child._process is not None
    dead = child._process.pid
    os.kill(dead, signal.SIGKILL)
    child._process.wait(5)
    assert compiler("{{ c }}", False).variables == {"c"}
    assert child._process.pid != dead


def test_a_caller_does_not_wait_forever_for_a_busy_child() -> None:
    compiler = TemplateCompiler(children=1, seconds=0.5)
    taken = compiler._idle.get()  # as if another caller held it past the parse deadline
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            compiler("{{ a }}", False)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    waiter = threading.Thread(target=call, daemon=True)
    started = time.monotonic()
    waiter.start()
    waiter.join(10)
    # Before: the call waited on the idle queue with no timeout.
    assert not waiter.is_alive(), "still waiting after 10 s"
    assert time.monotonic() - started < 5
    assert isinstance(outcome[0], templating.ParseLimit) and "busy" in outcome[0].reason
    compiler._idle.put(taken)
    assert compiler("{{ b }}", False).variables == {"b"}
