"""What a render is charged for: not the parse of a template that is not cached yet, and
every value it makes, in bytes, against one allowance (measured with tracemalloc)."""

from __future__ import annotations

import time
import tracemalloc
import uuid
from collections.abc import Iterator

import pytest

from posthorn.mime import templating
from posthorn.mime.templating import Limits, RenderLimit
from posthorn.services.template_compiler import TemplateCompiler

# ~27,000 lexer tokens (under the 30,000 accepted when a template is saved): about a second
# to parse and compile, 15 ms to render once compiled.
LARGE_HTML = "<p>{{ a }}</p>" * 4_800
# The existing peak bound of a single render (see test_template_limits.py); the allowance
# is 16,000,000 bytes and the values below are charged before they are kept.
PEAK_BYTES = 25_000_000


@pytest.fixture
def child_compiler() -> Iterator[TemplateCompiler]:
    """Sources compiled in a child process, as in a serving process; a cold cache."""
    previous = templating._compiler
    compiler = TemplateCompiler(children=1)
    templating.use_compiler(compiler)
    yield compiler
    templating.use_compiler(previous)


def test_a_cold_parse_is_not_charged_to_the_render_budget(
    child_compiler: TemplateCompiler,
) -> None:
    # Before: the parse (child start included) ran inside the 0.5 s, RenderLimit("time").
    source = f"{{# {uuid.uuid4()} #}}" + LARGE_HTML
    started = time.monotonic()
    done = templating.render_parts("Hi {{ a }}", source, None, {"a": "x"}, limits=Limits(0.5))
    assert time.monotonic() - started > 0.5, "the parse was quick: this proves nothing"
    assert done.subject == "Hi x"
    assert done.html == "<p>x</p>" * 4_800
    # render() of one source likewise.
    other = f"{{# {uuid.uuid4()} #}}" + LARGE_HTML
    assert templating.render(other, {"a": "y"}, html=True, limits=Limits(0.5)).count("y") == 4_800


def test_a_parse_error_still_names_its_part(child_compiler: TemplateCompiler) -> None:
    with pytest.raises(templating.TemplateSyntax) as problem:
        templating.render_parts("ok", "<p>{{ a }}</p>", "{{ a + }}", {"a": 1})
    assert problem.value.part == "text"


def _peak(source: str, data: dict[str, str]) -> tuple[int, Exception | str]:
    templating.parse(source, html=True)
    tracemalloc.start()
    try:
        result: Exception | str = templating.render(source, data, html=True)
    except templating.TemplateProblem as exc:
        result = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, result


@pytest.mark.parametrize(
    "source",
    [
        "{% set l = [" + ", ".join(["x * 2"] * 30) + "] %}{{ l | length }}",
        "{% set l = [" + ", ".join(["x ~ 'b'"] * 30) + "] %}{{ l | length }}",
        "{% set l = [" + ", ".join(["x | upper"] * 30) + "] %}{{ l | length }}",
        "{% set l = [" + ", ".join(["x[1:]"] * 30) + "] %}{{ l | length }}",
        "{% set l = [" + ", ".join(["x.replace('a', 'b')"] * 30) + "] %}{{ l | length }}",
    ],
)
def test_values_kept_alive_together_are_bounded(source: str) -> None:
    # Before: 30 values of 1 to 2 MB each, all alive at once: peaks of 30 to 60 MB.
    peak, result = _peak(source, {"x": "a" * 1_000_000})
    assert isinstance(result, RenderLimit) and result.kind == "memory", result
    assert "16,000,000 bytes" in result.reason
    assert peak < PEAK_BYTES, f"{source}: peak {peak / 1e6:.1f} MB"


def test_the_largest_output_in_the_widest_characters_still_renders() -> None:
    # 2,000,000 characters of 4 bytes each (8 MB), made by an operator, then printed.
    peak, result = _peak("{{ x * 2 }}", {"x": "\U0001f600" * 1_000_000})
    assert result == "\U0001f600" * 2_000_000
    assert peak < PEAK_BYTES + 8_000_000  # the output itself is 8 MB
