"""The memory and time a single render may take, measured: peak allocations with tracemalloc
and wall-clock time, against values that multiply text without looking like it."""

from __future__ import annotations

import contextlib
import json
import time
import tracemalloc
from typing import Any

import pytest
from jinja2.utils import htmlsafe_json_dumps

from posthorn.mime import templating
from posthorn.mime.templating import Limits, RenderLimit

MEGABYTE = "a" * 1_000_000
PROSE = ("lorem ipsum dolor sit amet " * 40_000)[:1_000_000]
PROSE_LINES = "\n".join((PROSE * 2)[i : i + 1000] for i in range(0, 1_500_000, 1000))
# A render is refused at 2,000,000 characters; the text it builds on the way must stay
# within a small multiple of that. Before these checks the peaks were 232 MB to 650 MB.
PEAK_BYTES = 25_000_000


def _peak(source: str, data: dict[str, Any], *, html: bool) -> tuple[int, Exception | str]:
    templating.parse(source, html=html)
    tracemalloc.start()
    try:
        result: Exception | str = templating.render(source, data, html=html)
    except templating.TemplateProblem as exc:
        result = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, result


@pytest.mark.parametrize("html", [False, True])
@pytest.mark.parametrize(
    "source",
    [
        "{{ [x] * 200 }}",
        "{{ ([x] * 200) | tojson }}",
        "{{ ([x] * 200) | string }}",
        "{{ ([x] * 200) | pprint }}",
        "{{ ([x] * 200) | e }}",
        "{{ ([x] * 200) | upper }}",
        "{{ 'a' ~ [x] * 200 }}",
        "{{ '%s' | format([x] * 200) }}",
        "{{ '{}'.format([x] * 200) }}",
        "{{ '%s' % ([x] * 200,) }}",
        "{{ {'k': [x] * 200} }}",
        "{% set ns = namespace(v=[x] * 200) %}{{ ns }}",
    ],
)
def test_text_of_a_repeated_value_is_refused_before_it_is_built(source: str, html: bool) -> None:
    peak, result = _peak(source, {"x": MEGABYTE}, html=html)
    assert isinstance(result, RenderLimit) and result.kind == "size", result
    assert peak < PEAK_BYTES, f"{source}: peak {peak / 1e6:.1f} MB"


@pytest.mark.parametrize("html", [False, True])
def test_tojson_matches_jinja_below_the_limit(html: bool) -> None:
    value = {"b": ["<script>", "it's & done", 1.5, None, True], "a": {"ü": "\u2028"}}
    out = templating.render("{{ v | tojson }}|{{ v | tojson(2) }}", {"v": value}, html=html)
    assert out == f"{htmlsafe_json_dumps(value, sort_keys=True)}|" + str(
        htmlsafe_json_dumps(value, sort_keys=True, indent=2)
    )
    assert json.loads(out.split("|")[0]) == value


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("{{ x | wordwrap(10) }}", PROSE_LINES),
        ("{{ x | title | wordwrap(5) }}", PROSE_LINES),
        ("{{ x | urlize }}", PROSE),
    ],
)
def test_a_slow_filter_is_stopped_at_the_time_limit(source: str, text: str) -> None:
    # wordwrap of 1 MB ran 2.3 s and urlize 25 s against the 1 s limit: the budget was only
    # checked between operations, and one filter call is one operation.
    templating.parse(source)
    started = time.monotonic()
    with contextlib.suppress(RenderLimit):
        templating.render(source, {"x": text}, limits=Limits(seconds=5))
    whole = time.monotonic() - started
    assert whole > 0.3, f"the filter alone takes {whole:.2f} s here: too fast to test with"

    started = time.monotonic()
    with pytest.raises(RenderLimit) as stopped:
        templating.render(source, {"x": text}, limits=Limits(seconds=0.05))
    elapsed = time.monotonic() - started
    assert stopped.value.kind == "time"
    report = f"{source}: stopped after {elapsed:.2f} s (the whole call: {whole:.2f} s)"
    # What remains is the longest single C call (a regular-expression split of the text).
    assert elapsed < whole / 3, report


def test_wordwrap_refuses_a_line_it_could_not_stop_splitting() -> None:
    started = time.monotonic()
    with pytest.raises(RenderLimit) as refused:
        templating.render("{{ x | wordwrap(10) }}", {"x": PROSE})
    assert refused.value.kind == "size" and "100,000" in str(refused.value)
    assert time.monotonic() - started < 0.5
    assert templating.render("{{ x | wordwrap(11) }}", {"x": PROSE[:23]}) == (
        "lorem ipsum\ndolor sit a"
    )


def test_the_watchdog_never_fires_after_a_render() -> None:
    """Renders that end right at their deadline leave nothing pending in the thread."""
    source = "{{ x | wordwrap(7) }}"
    outcomes = set()
    for seconds in (0.001, 0.002, 0.003, 0.005) * 10:
        try:
            templating.render(source, {"x": PROSE[:20_000]}, limits=Limits(seconds=seconds))
            outcomes.add("done")
        except RenderLimit:
            outcomes.add("stopped")
        # Ordinary Python keeps running here; a late asynchronous exception would land in it.
        deadline = time.monotonic() + 0.01
        while time.monotonic() < deadline:
            sum(range(100))
    assert "stopped" in outcomes


def test_template_data_is_bounded() -> None:
    big = {"rows": [MEGABYTE, MEGABYTE, "b"]}
    with pytest.raises(RenderLimit) as refused:
        templating.render_parts("hi", None, "{{ rows | length }}", big)
    assert refused.value.part == "data" and refused.value.kind == "size"
    assert templating.render("{{ rows | length }}", {"rows": [MEGABYTE]}) == "1"


def test_nesting_beyond_what_python_compiles_is_a_syntax_error() -> None:
    # Python's compiler refuses 200 nested calls with its own SyntaxError, which used to
    # escape as a server error.
    with pytest.raises(templating.TemplateSyntax) as refused:
        templating.variables("s", "{{ " + "a." * 200 + "b }}", None)
    assert refused.value.part == "html" and "nested too deeply" in refused.value.reason


def test_the_token_cap_is_reported_before_parsing_the_rest() -> None:
    started = time.monotonic()
    with pytest.raises(templating.ParseLimit) as refused:
        templating.compile_source("{{a}}" * 104_000, True)
    assert "30,000" in refused.value.reason
    assert time.monotonic() - started < 2  # 15 s to parse it all
    compiled = templating.compile_source("{{a}}" * 1_000 + "{{ b.c }}", True)
    assert compiled.variables == {"a", "b"}
