"""Template rendering without a server: escaping, variables, syntax positions, the sandbox
against template injection, and the time and size limits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from posthorn.mime import templating
from posthorn.mime.templating import (
    Limits,
    MissingVariable,
    RenderFailed,
    RenderLimit,
    TemplateProblem,
    TemplateSyntax,
    UnsafeTemplate,
    render,
    render_parts,
    variables,
)

FAST = Limits(seconds=0.2)


def test_html_is_escaped_and_subject_and_text_are_not() -> None:
    data = {"name": "Ann <ann@example.test> & Co", "n": 3}
    out = render_parts(
        "Hi {{ name }}", "<p>Hello {{ name }}, {{ n * 2 }}</p>", "Hello {{ name }}", data
    )
    assert out.subject == "Hi Ann <ann@example.test> & Co"
    assert out.html == "<p>Hello Ann &lt;ann@example.test&gt; &amp; Co, 6</p>"
    assert out.text == "Hello Ann <ann@example.test> & Co"


def test_concatenation_escapes_in_html_only() -> None:
    assert render("{{ a ~ '!' }}", {"a": "<b>"}, html=True) == "&lt;b&gt;!"
    assert render("{{ a ~ '!' }}", {"a": "<b>"}) == "<b>!"


def test_a_missing_part_stays_missing() -> None:
    out = render_parts("S", None, "T {{ x }}", {"x": 1})
    assert (out.subject, out.html, out.text) == ("S", None, "T 1")


def test_data_is_text_never_template_code() -> None:
    data = {"name": "{{ 7 * 7 }}{% for x in range(3) %}x{% endfor %}"}
    assert render("{{ name }}", data) == data["name"]


def test_ordinary_features_work_under_the_guards() -> None:
    source = (
        "{% macro item(x) %}[{{ x.name|upper }}]{% endmacro %}"
        "{% for p in products if p.price > 1 %}"
        "{{ loop.index }}/{{ loop.length }}{{ item(p) }}{% if not loop.last %}, {% endif %}"
        "{% else %}none{% endfor %}"
        "|{{ products|map(attribute='name')|join(', ') }}"
        "|{{ '%.2f'|format(total) }}|{{ '{:>6}'.format(code) }}|{{ 'ab' * 2 }}"
        "|{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}"
        "{% endfor %}{{ ns.n }}|{{ missing|default('-') }}|{{ missing is defined }}"
    )
    data = {
        "products": [
            {"name": "tea", "price": 2},
            {"name": "cup", "price": 1},
            {"name": "pot", "price": 5},
        ],
        "total": 12.5,
        "code": "A1",
    }
    assert render(source, data) == ("1/2[TEA], 2/2[POT]|tea, cup, pot|12.50|    A1|abab|6|-|False")


def test_variables_are_the_undeclared_names() -> None:
    found = variables(
        "Order {{ order.id }} for {{ name }}",
        "{% for item in items %}{{ item.sku }}{{ loop.index }}{% endfor %}"
        "{% set total = 3 %}{{ total }}{{ range(2)|list }}",
        "{{ name }} {{ footer|default('') }}",
    )
    assert found == ["footer", "items", "name", "order"]
    assert variables("Hi", None, "plain") == []


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("Hello {{ name }", 1, 15),
        ("{% for x in y %}\n  {{ x }}\n{% endfo %}", 3, 4),
        ("a\n  {{ x ?? }}", 2, 8),
        ("{% if %}", 1, 7),
        ("line1\n{{ 1 +  }}", 2, 9),
        ("{{ a.b( }}", 1, 9),
    ],
)
def test_syntax_errors_give_line_and_column(source: str, line: int, column: int) -> None:
    with pytest.raises(TemplateSyntax) as caught:
        templating.parse(source)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert caught.value.reason


def test_errors_found_after_parsing_have_a_line_only() -> None:
    with pytest.raises(TemplateSyntax) as caught:
        templating.parse("ok\n{{ x|no_such_filter }}")
    assert caught.value.line == 2 and caught.value.column is None
    assert "no_such_filter" in caught.value.reason


def test_variables_names_the_part_with_the_syntax_error() -> None:
    with pytest.raises(TemplateSyntax) as caught:
        variables("fine {{ x }}", "<p>{% if x %}</p>", None)
    assert caught.value.part == "html"


@pytest.mark.parametrize(
    "source",
    [
        "{% include 'x.html' %}",
        "{% extends 'base' %}",
        "{% import 'm' as m %}",
        "{% from 'm' import f %}",
    ],
)
def test_templates_are_self_contained(source: str) -> None:
    with pytest.raises(TemplateSyntax, match="not available"):
        templating.parse(source)


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(MissingVariable) as caught:
        render_parts("Hi {{ name }}", "<p>{{ order.total }}</p>", None, {"order": {}})
    assert caught.value.name == "name" and caught.value.part == "subject"
    with pytest.raises(MissingVariable) as caught:
        render_parts("Hi", "<p>{{ order.total }}</p>", None, {"order": {}})
    assert caught.value.name == "total" and caught.value.part == "html"


# Server-side template injection: each payload must render as harmless text or be refused
# with a TemplateProblem; none may reach Python internals.
SSTI_PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('touch {sentinel}').read() }}",
    "{{ joiner.__init__.__globals__.os.system('touch {sentinel}') }}",
    "{{ namespace.__init__.__globals__ }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('touch {sentinel}') }}",
    "{{ request.application.__globals__.__builtins__.__import__('os') }}",
    "{{ '{0.__class__}'.format(name) }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{.__init__.__globals__}'.format(name) }}",
    "{{ ''.format_map({}) ~ '{x.__class__}'.format_map({'x': 1}) }}",
    "{{ '%s'|format(name.__class__) }}",
    "{{ name|attr('__class__') }}",
    "{{ (name|attr('__class__')).__base__ }}",
    "{{ name['__class__'] }}",
    "{{ dict.mro() }}",
    "{{ range.__self__ }}",
    "{{ self.__dict__ }}",
    "{% set x = [].append(1) %}{{ x }}",
    "{{ {}.update(a=1) }}",
    "{{ ''.translate({97: 'b'}) }}",
    "{{ cycler('a').next.__self__ }}",
    "{{ (1).__class__.__subclasses__() }}",
    "{% include '/etc/passwd' %}",
    "{{ name.__len__() }}",
    "{{ name.encode.__self__ }}",
]


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_template_injection_is_text_or_refused(payload: str, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    source = payload.replace("{sentinel}", str(sentinel))
    try:
        out = render_parts(source, source, source, {"name": "Ann"})
    except TemplateProblem as problem:
        assert isinstance(problem, TemplateSyntax | UnsafeTemplate | MissingVariable | RenderFailed)
    else:
        for text in (out.subject, out.html, out.text):
            assert "class" not in (text or "") and "function" not in (text or "")
            assert "module" not in (text or "") and "built-in" not in (text or "")
    assert not sentinel.exists()


def test_sandbox_refusal_is_reported_as_unsafe() -> None:
    with pytest.raises(UnsafeTemplate, match="__class__"):
        render("{{ ''.__class__ }}", {})


# ── limits ──────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "source",
    [
        "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
        "{% for a in range(10000) %}{% for b in range(10000) %}{{ '' }}{% endfor %}{% endfor %}",
        "{% for a in items %}{% for b in items %}{% for c in items %}{% endfor %}{% endfor %}{% endfor %}",
    ],
)
def test_the_time_limit_stops_runaway_templates(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(RenderLimit) as caught:
        render(source, {"items": list(range(2000))}, limits=FAST)
    assert caught.value.kind == "time"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 10**9 }}",
        "{{ ['a'] * 10**8 }}",
        "{{ 9 ** (9 ** 9) }}",
        "{{ 'a'|center(10**9) }}",
        "{{ 'a'.ljust(10**9) }}",
        "{{ 'a\tb'.expandtabs(10**8) }}",
        "{{ 'x'|indent(10**8) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ '%999999999d'|format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ ('a' * 1000000).replace('a', 'aaaaa') }}",
        "{{ ('a' * 1000000)|replace('a', 'aaaaa') }}",
        "{{ (['x' * 1000000] * 3)|join }}",
        "{{ 'ab'.join(['x' * 1500000, 'y' * 600000]) }}",
        "{% set s = 'x' * 1000000 %}{% set s = s ~ s %}{% set s = s ~ s %}{{ s }}",
        "{% set s = 'x' * 1000000 %}{{ s + s + s }}",
        "{% macro m() %}{% for i in range(10000) %}{{ big }}{% endfor %}{% endmacro %}{{ m() }}",
        "{% set b %}{% for i in range(10000) %}{{ big }}{% endfor %}{% endset %}{{ b|length }}",
        "{% for i in range(3000) %}{{ big[:1000] }}{% endfor %}",
    ],
)
def test_the_size_limit_is_checked_before_text_is_built(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(RenderLimit) as caught:
        render(source, {"big": "y" * 1_000_000})
    assert caught.value.kind == "size"
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "source",
    [
        "{{ range(10**9)|list }}",
        "{{ [1, 2]|batch(10**6, 'x')|list }}",
        "{{ [1]|slice(10**6, 'x')|list }}",
    ],
)
def test_ranges_and_counts_are_bounded(source: str) -> None:
    with pytest.raises(RenderLimit) as caught:
        render(source, {})
    assert caught.value.kind == "range"


def test_the_parts_share_one_budget() -> None:
    big = "{% for i in range(1500) %}" + "x" * 1000 + "{% endfor %}"
    assert len(render_parts("s", big, None, {}).html or "") == 1_500_000
    with pytest.raises(RenderLimit) as caught:
        render_parts("s", big, big, {})
    assert caught.value.part == "text"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "too deeply"),
        ("{{ 'a' + 1 }}", "TypeError"),
        ("{{ '{:,}'.format(10 ** 5000) }}", "ValueError"),
    ],
)
def test_ordinary_errors_are_reported_not_raised(source: str, reason: str) -> None:
    with pytest.raises(RenderFailed, match=reason):
        render(source, {})


def test_deep_nesting_is_a_syntax_error() -> None:
    with pytest.raises(TemplateSyntax, match="nested too deeply"):
        templating.parse("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")


def test_rendering_many_emails_stays_cheap() -> None:
    source = "<p>Hi {{ name }}</p>{% for i in items %}<li>{{ i.sku }}: {{ i.qty }}</li>{% endfor %}"
    data = {"name": "Ann", "items": [{"sku": f"S{n}", "qty": n} for n in range(20)]}
    render(source, data, html=True)
    started = time.perf_counter()
    for _ in range(500):
        render(source, data, html=True)
    assert (time.perf_counter() - started) / 500 < 0.005
