"""Stored templates: Jinja2 in an immutable sandbox, with limits on time and size.

Templates are written by API customers and rendered inside the server, so a template is
untrusted code. Three layers keep it contained:

* **The sandbox** (``ImmutableSandboxedEnvironment``): no attribute starting with ``_``, no
  internal attributes of functions, frames or generators, no mutation of lists and dicts,
  ``str.format`` through a sandboxed formatter. ``{{ ''.__class__ }}`` and friends raise
  ``SecurityError``, which we report as :class:`UnsafeTemplate`. There is no loader, so
  ``include``, ``import`` and ``extends`` are refused when the template is parsed, and
  ``lipsum`` is gone from the globals (it builds text of any size).
* **A time limit** (1 s per render, all parts together, counted once they are parsed:
  parsing has limits of its own, below). The clock is checked between
  output chunks, on every loop iteration (each ``for`` iterable is wrapped when the template
  is compiled), on every call (functions, methods, macros), attribute or item lookup, filter
  and intercepted operator; a single call that runs in Python past the deadline (``wordwrap``
  or ``urlize`` of a megabyte) is stopped by the watchdog of ``overtime.py``. ``range`` stops
  at 10,000 items.
* **A size limit** (2,000,000 characters of output in all, and of template data). Besides
  counting the output, every operation that can multiply text is checked *before* it runs:
  ``*``, ``**``, ``+``, ``%``, ``~``, format widths and arguments, ``center``/``ljust``/
  ``rjust``/``zfill``/``expandtabs``, ``replace``, ``join``, the ``indent``/``batch``/
  ``slice`` filters, and the buffers of macros and ``{% set %}`` blocks. A value turned into
  text (printed, concatenated, formatted, or given to a filter that works on text such as
  ``string``, ``pprint`` or ``escape``) is measured first: ``[x] * 200`` is 200 references,
  but its text would be 200 copies of ``x``. ``tojson`` writes its JSON piece by piece and
  stops at the limit. All the values one render makes (results of operators, calls,
  filters, slices, joins and buffers) are also charged, in bytes, to one allowance of eight
  times the output cap: each may be under the cap, but many of them kept alive are not.

What the limits cannot stop: one single built-in C operation that is slow on input the size
checks allow (e.g. sorting a 2 MB list).

Parsing is bounded too (:func:`compile_source`: 30,000 lexer tokens, a deadline), but
Python's ``compile()`` holds the GIL from start to end, so a serving process hands its
sources to the child processes of ``services/template_compiler.py`` (:func:`use_compiler`)
and only loads the compiled code they send back. Rendering runs in a worker thread (see
``services/templates.py``) and yields the GIL as any Python code does.
"""

from __future__ import annotations

import functools
import inspect
import json
import marshal
import re
import string
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.lexer import TokenStream
from jinja2.nodes import EvalContext
from jinja2.parser import Parser
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_eval_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, soft_str

from posthorn.mime.overtime import WATCHDOG, Overtime

MAX_RENDER_SECONDS = 1.0
MAX_OUTPUT_CHARS = 2_000_000
MAX_DATA_CHARS = 2_000_000  # the template data, measured as text
MAX_RANGE = 10_000
# Each value is checked against the output cap, but a render can keep many of them alive at
# once (``{% set l = [x * 2, x * 2, …] %}``): all the values one render makes may take at
# most this many times the output cap, in bytes. A character takes 1, 2 or 4 bytes in
# CPython, so this is two values of the largest size in the widest kind, or eight in ASCII.
MEMORY_FACTOR = 8
# wordwrap splits each line with one regular-expression call that nothing can interrupt:
# ~0.8 s for a 1 MB line here, 80 ms at this length.
MAX_WRAP_LINE = 100_000
# A 100,000-bit integer has ~30,000 digits: beyond Python's int→str limit already, and
# fast to compute; without a bound ``9 ** (9 ** 9)`` runs for minutes.
MAX_INT_BITS = 100_000
COMPILED_CACHE_SIZE = 64
# Parsing and compiling cost ~30 µs per lexer token (~15 s for 0.5 MB of ``{{a}}``). A
# template of 30,000 tokens (some 5,000 tags with the text between them) compiles in about
# a second; the deadline is the backstop for a slower machine.
MAX_TEMPLATE_TOKENS = 30_000
MAX_PARSE_SECONDS = 10.0

# Names the compiled code uses for our guards. They contain "-", which the template syntax
# cannot spell, so no template can call them or shadow them.
_LOOP = "posthorn-loop"
_CONCAT = "posthorn-concat"
_SLICE = "posthorn-slice"
_GLOBALS = ("dict", "namespace", "cycler", "joiner")
_SIZED_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_REFUSED_METHODS = frozenset({"translate"})  # a table can map each character to 2 MB
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")
_T = TypeVar("_T")


# ── errors ──────────────────────────────────────────────────────────────────────────────


class TemplateProblem(Exception):
    """The template cannot be parsed or rendered; ``part`` is subject, html or text."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.part: str | None = None
        super().__init__(reason)


class TemplateSyntax(TemplateProblem):
    """A syntax error at ``line`` (1-based) and ``column`` (1-based, None when unknown)."""

    def __init__(self, reason: str, *, line: int | None, column: int | None) -> None:
        self.line = line
        self.column = column
        super().__init__(reason)


class MissingVariable(TemplateProblem):
    """The data lacks a variable (or an attribute of one) that the template uses."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(reason)


class UnsafeTemplate(TemplateProblem):
    """The template tried something the sandbox forbids."""


class RenderLimit(TemplateProblem):
    """Rendering went over a limit: ``kind`` is ``time``, ``size``, ``memory`` or ``range``."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        super().__init__(reason)


class ParseLimit(TemplateProblem):
    """The source is too large or took too long to parse and compile."""


class RenderFailed(TemplateProblem):
    """The template raised an ordinary error (division by zero, a bad filter argument…)."""


# ── limits and the budget of one render ─────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Limits:
    seconds: float = MAX_RENDER_SECONDS
    output_chars: int = MAX_OUTPUT_CHARS

    @property
    def memory_bytes(self) -> int:
        return MEMORY_FACTOR * self.output_chars


@dataclass(slots=True)
class _Budget:
    deadline: float
    output_left: int
    memory_left: int
    limits: Limits

    @classmethod
    def start(cls, limits: Limits) -> _Budget:
        return cls(
            time.monotonic() + limits.seconds, limits.output_chars, limits.memory_bytes, limits
        )

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _overtime(self.limits)

    def spend(self, chars: int) -> None:
        self.output_left -= chars
        if self.output_left < 0:
            raise _too_large(self.limits.output_chars)
        self.tick()

    def keep(self, size: int) -> None:
        # Counted as made, not as freed: what a template can keep alive is what it made.
        self.memory_left -= size
        if self.memory_left < 0:
            raise RenderLimit(
                "memory",
                f"the values made while rendering would take more than "
                f"{self.limits.memory_bytes:,} bytes of memory",
            )


# Rendering is synchronous and single-threaded per call, so a context variable carries the
# budget to the hooks the compiled template calls; outside a render the hooks only apply the
# default size caps.
_budget: ContextVar[_Budget | None] = ContextVar("posthorn_template_budget", default=None)


def _tick() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick()


def _cap() -> int:
    budget = _budget.get()
    return budget.limits.output_chars if budget is not None else MAX_OUTPUT_CHARS


def _overtime(limits: Limits) -> RenderLimit:
    return RenderLimit("time", f"rendering took longer than {limits.seconds:g} s and was stopped")


def _too_large(cap: int) -> RenderLimit:
    return RenderLimit("size", f"the output would be larger than {cap:,} characters")


def _check_size(chars: int) -> None:
    cap = _cap()
    if chars > cap:
        raise _too_large(cap)


def _check_result(value: _T) -> _T:
    if isinstance(value, str | bytes | list | tuple | dict):
        _check_size(len(value))
        _keep(value)
    return value


def _keep(value: Any) -> None:
    """Charge a value the render made to its memory allowance. ``sys.getsizeof`` is O(1):
    a string's length times the width of its characters (1, 2 or 4 bytes) plus a small
    header; a container's references (its items are charged where they are made)."""
    budget = _budget.get()
    if budget is not None:
        budget.keep(sys.getsizeof(value))


def _text_size(value: Any, limit: int) -> int:
    """At least ``len(str(value))``, computed without building the text; the count stops
    once it passes ``limit``. Nested values count as their ``repr``."""
    total = 0
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack and total <= limit:
        item, nested = stack.pop()
        if isinstance(item, str):
            total += len(item) if not nested else _repr_size(item)
        elif isinstance(item, bytes):
            total += 4 * len(item) + 3
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend((part, True) for pair in item.items() for part in pair)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend((part, True) for part in item)
        elif isinstance(item, Namespace):
            total += 13
            stack.append((object.__getattribute__(item, "_Namespace__attrs"), True))
        else:
            # Template-made objects (loops, macros, cyclers…) print as a short repr.
            total += 100
        if len(stack) > 10_000:
            _tick()
    return total


def _repr_size(text: str) -> int:
    if text.isprintable():
        return len(text) + 2 + text.count("\\") + text.count("'")
    # Escapes make it up to ten times longer (\U0001f600): measured in slices, so the
    # repr made to count it stays small.
    step = 65_536
    return 2 + sum(len(repr(text[i : i + step])) - 2 for i in range(0, len(text), step))


def _check_text(value: Any) -> None:
    """Refuse a value whose text would be over the size limit, before it is made."""
    if not isinstance(value, str):
        cap = _cap()
        if _text_size(value, cap) > cap:
            raise _too_large(cap)


def _finalize(value: Any) -> Any:
    _check_text(value)
    return value


# ── pre-checks for operations that multiply text ───────────────────────────────────────


def _sized(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        if _sized(left) and isinstance(right, int):
            _check_size(len(left) * max(right, 0))
        elif _sized(right) and isinstance(left, int):
            _check_size(len(right) * max(left, 0))
        elif isinstance(left, int) and isinstance(right, int):
            _check_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            _check_bits(left.bit_length() * right)
    elif operator == "+":
        if _sized(left) and _sized(right):
            _check_size(len(left) + len(right))
    elif operator == "%" and isinstance(left, str | bytes):
        _check_percent_format(left if isinstance(left, str) else left.decode("latin-1"))
        _check_text(right)


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimit("size", f"the number would be larger than {MAX_INT_BITS:,} bits")


def _check_percent_format(fmt: str) -> None:
    """``'%999999999d' % 1`` allocates the width before anything can count it."""
    for match in _PERCENT_SPEC.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise UnsafeTemplate("'*' widths are not available in % formatting")
            if number is not None:
                _check_size(int(number))


def _check_brace_format(fmt: str) -> None:
    """The same for ``str.format``; a width taken from an argument ({:{}}) is refused."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise RenderFailed(f"invalid format string: {exc}") from exc
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:
            raise UnsafeTemplate("nested replacement fields are not available in str.format")
        for digits in _DIGITS.findall(spec):
            _check_size(int(digits))


def _check_replace(text: Any, old: Any, new: Any, count: Any) -> None:
    if isinstance(text, bytes) and isinstance(old, bytes) and isinstance(new, bytes):
        text, old, new = (b.decode("latin-1") for b in (text, old, new))
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    if len(new) <= len(old):
        return
    hits = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _check_size(len(text) + hits * (len(new) - len(old)))


def _joinable(separator: Any, items: Iterable[Any]) -> list[Any]:
    """Materialise what ``join`` will join and check the total size first."""
    listed = list(items)
    total = len(separator) * max(len(listed) - 1, 0)
    cap = _cap()
    for item in listed:
        total += len(item) if isinstance(item, str | bytes) else len(soft_str(item))
        if total > cap:
            raise _too_large(cap)
    return listed


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Pre-checks for the ``str``/``bytes`` methods that grow text; returns the arguments
    to call with (``join`` gets its iterable as a list, already measured)."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str | bytes):
        return args
    name = getattr(obj, "__name__", "")
    if name in _REFUSED_METHODS:
        raise UnsafeTemplate(f"str.{name} is not available in templates")
    if name in _SIZED_METHODS:
        width = args[0] if args else kwargs.get("width")
        if isinstance(width, int):
            _check_size(width)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        if isinstance(size, int):
            _check_size(len(owner) + tabs * size)
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count"))
    elif name == "join" and args:
        return (_joinable(owner, args[0]), *args[1:])
    return args


# ── filters: every filter ticks the clock; the ones that grow text are checked first ────


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    precheck = _FILTER_CHECKS.get(name)
    # The signature is the plain function's; Jinja's async-capable wrappers take an extra
    # leading argument (the eval context) that the plain function does not.
    signature = inspect.signature(func)
    lead = int(_pass_arg(func) and not _pass_arg(inspect.unwrap(func)))

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if precheck is not None:
            bound = signature.bind(*args[lead:], **kwargs)
            bound.apply_defaults()
            precheck(bound.arguments)
            args, kwargs = (*args[:lead], *bound.args), bound.kwargs
        return _check_result(func(*args, **kwargs))

    return guarded


def _pass_arg(func: Callable[..., Any]) -> bool:
    return getattr(func, "jinja_pass_arg", None) is not None


def _filter_center(a: dict[str, Any]) -> None:
    _check_text(a["value"])
    if isinstance(a["width"], int):
        _check_size(a["width"])


_PASSED_ARGS = frozenset({"eval_ctx", "env", "environment", "context"})


def _filter_text(a: dict[str, Any]) -> None:
    """For filters that turn their value (the first argument) into text first."""
    _check_text(next(value for key, value in a.items() if key not in _PASSED_ARGS))


def _filter_indent(a: dict[str, Any]) -> None:
    _check_text(a["s"])
    width = a["width"]
    pad = width if isinstance(width, int) else len(soft_str(width))
    text = soft_str(a["s"])
    _check_size(len(text) + (text.count("\n") + 1) * max(pad, 0))


def _filter_format(a: dict[str, Any]) -> None:
    _check_text(a["value"])
    _check_percent_format(soft_str(a["value"]))
    _check_text([a["args"], a["kwargs"]])


def _filter_replace(a: dict[str, Any]) -> None:
    _check_text([a["s"], a["old"], a["new"]])
    _check_replace(soft_str(a["s"]), soft_str(a["old"]), soft_str(a["new"]), a["count"])


def _filter_join(a: dict[str, Any]) -> None:
    items: Iterable[Any] = a["value"]
    if a["attribute"] is not None:
        items = map(make_attrgetter(a["eval_ctx"].environment, a["attribute"]), items)
        a["attribute"] = None
    a["value"] = _joinable(soft_str(a["d"]), items)


def _filter_wordwrap(a: dict[str, Any]) -> None:
    _check_text(a["s"])
    if max(map(len, soft_str(a["s"]).splitlines()), default=0) > MAX_WRAP_LINE:
        raise RenderLimit("size", f"wordwrap takes lines of at most {MAX_WRAP_LINE:,} characters")


def _filter_count(key: str) -> Callable[[dict[str, Any]], None]:
    def check(a: dict[str, Any]) -> None:
        if isinstance(a[key], int) and a[key] > MAX_RANGE:
            raise RenderLimit("range", f"{key} is limited to {MAX_RANGE:,}")

    return check


_FILTER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "format": _filter_format,
    "replace": _filter_replace,
    "wordwrap": _filter_wordwrap,
    "join": _filter_join,
    "batch": _filter_count("linecount"),
    "slice": _filter_count("slices"),
    **dict.fromkeys(
        (
            *("string", "pprint", "urlencode", "xmlattr", "wordcount", "truncate", "title"),
            *("e", "escape", "forceescape", "safe", "upper", "lower", "capitalize"),
            *("striptags", "urlize", "trim"),
        ),
        _filter_text,
    ),
}


def _loop_guard(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _tick()
        yield item


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Markup:
    """Jinja's ``tojson``, written piece by piece so that it stops at the size limit
    instead of after building the whole text (and four escaped copies of it)."""
    kwargs = dict(eval_ctx.environment.policies["json.dumps_kwargs"])
    encoder = json.JSONEncoder(**kwargs, indent=indent)
    cap = _cap()
    parts: list[str] = []
    total = 0
    for chunk in encoder.iterencode(value):
        safe = (
            chunk.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("'", "\\u0027")
        )
        total += len(safe)
        if total > cap:
            raise _too_large(cap)
        parts.append(safe)
        _tick()
    # Safe as Jinja's own: every character that could end a script or attribute is escaped.
    return _check_result(Markup("".join(parts)))  # noqa: S704


@pass_eval_context
def _concat_guard(eval_ctx: EvalContext, items: list[Any]) -> str:
    """``a ~ b``: measured before joining, then joined as Jinja would (escaping in HTML)."""
    _check_text(items[0] if len(items) == 1 else list(items))
    parts = [soft_str(item) for item in items]
    _check_size(sum(len(part) for part in parts))
    _tick()
    joined: str = markup_join(parts) if eval_ctx.autoescape else str_join(parts)
    return _check_result(joined)


def _slice_guard(value: Any, start: Any, stop: Any, step: Any) -> Any:
    """``x[a:b]``: a copy, charged like any value the render makes."""
    _tick()
    return _check_result(value[start:stop:step])


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise RenderLimit("range", f"range() is limited to {MAX_RANGE:,} items")
    return numbers


class _Guards(NodeTransformer):
    """Rewrites the parsed template so loops tick the clock and ``~`` and slices are
    measured."""

    # Jinja's visitor dispatches on the node class name, hence the capitals.
    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:  # noqa: N802
        # Jinja compiles a slice to plain ``x[a:b]``, past the environment's getitem.
        self.generic_visit(node)
        if not isinstance(node.arg, nodes.Slice):
            return node
        bounds = [
            nodes.Const(None) if bound is None else bound
            for bound in (node.arg.start, node.arg.stop, node.arg.step)
        ]
        return nodes.Filter(node.node, _SLICE, bounds, [], None, None, lineno=node.lineno)

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        listed = nodes.List(node.nodes, lineno=node.lineno)
        return nodes.Filter(listed, _CONCAT, [], [], None, None, lineno=node.lineno)


# ── the environment ─────────────────────────────────────────────────────────────────────


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, *, html: bool) -> None:
        # optimized=False: the optimiser evaluates constant expressions while compiling,
        # before any of our hooks could see them.
        super().__init__(
            autoescape=html,
            undefined=StrictUndefined,
            finalize=_finalize,
            optimized=False,
            auto_reload=False,
            cache_size=0,
        )
        self.globals = {name: self.globals[name] for name in _GLOBALS}
        self.globals["range"] = _range
        self.filters["tojson"] = _tojson
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters[_LOOP] = _loop_guard
        self.filters[_CONCAT] = _concat_guard
        self.filters[_SLICE] = _slice_guard

    def concat(self, parts: Iterable[str]) -> str:
        """The buffers of macros, call blocks and ``{% set %}`` blocks are joined here."""
        listed = list(parts)
        _check_size(sum(len(part) for part in listed))
        _tick()
        return _check_result("".join(listed))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        return _check_result(super().call_binop(context, operator, left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_brace_format(str(value.__self__))
        formatter = wrapped

        @functools.wraps(formatter)
        def measured(*args: Any, **kwargs: Any) -> str:
            _check_text([*args, *kwargs.values()])
            return formatter(*args, **kwargs)

        return measured

    def call(
        __self,  # noqa: N805 (Jinja's own signature: keyword arguments may be named "self")
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        _tick()
        args = _check_call(__obj, args, kwargs)
        return _check_result(super().call(__context, __obj, *args, **kwargs))


_ENVIRONMENTS = {True: _Sandbox(html=True), False: _Sandbox(html=False)}


# ── parsing ─────────────────────────────────────────────────────────────────────────────

_REFUSED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Extends,
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A parsed and compiled source: the code of its module (``marshal``) and the variables
    it reads. Plain bytes, so a child process can make it (see ``services/template_compiler``)."""

    code: bytes
    variables: frozenset[str]


Compiler = Callable[[str, bool], Compiled]


def use_compiler(compiler: Compiler) -> None:
    """Set how sources are compiled in this process (the composition root's choice; the
    default compiles in the calling thread). Compiled templates are cached either way."""
    global _compiler
    _compiler = compiler
    _CACHE.clear()


def parse(source: str, *, html: bool = False) -> Any:
    """Compile ``source`` (cached); :class:`TemplateSyntax` with the line and column of the
    first error, :class:`ParseLimit` for a source too large to parse. ``html`` turns
    autoescaping on."""
    return _load(source, html)[0]


_Loaded = tuple[Any, frozenset[str]]


class _Cache:
    """The most recently used compiled templates. Unlike ``functools.lru_cache`` it can be
    asked whether a source is there without compiling it (see :func:`cached_variables`)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, bool], _Loaded] = OrderedDict()

    def get(self, key: tuple[str, bool]) -> _Loaded | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[str, bool], loaded: _Loaded) -> None:
        with self._lock:
            self._entries[key] = loaded
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHE = _Cache(COMPILED_CACHE_SIZE)


def _load(source: str, html: bool) -> _Loaded:
    found = _CACHE.get((source, html))
    if found is not None:
        return found
    compiled = _compiler(source, html)
    env = _ENVIRONMENTS[html]
    code = marshal.loads(compiled.code)  # noqa: S302 - made by compile_source, never by a user
    template = env.template_class.from_code(env, code, env.make_globals(None))
    loaded = (template, compiled.variables)
    _CACHE.put((source, html), loaded)
    return loaded


def compile_source(source: str, html: bool, *, seconds: float = MAX_PARSE_SECONDS) -> Compiled:
    """Parse, check and compile one source (pure CPU work: run it where it cannot hold up
    an event loop). At most :data:`MAX_TEMPLATE_TOKENS` lexer tokens and ``seconds``."""
    env = _ENVIRONMENTS[html]
    deadline = time.monotonic() + seconds
    try:
        parser = Parser(env, source)
        tokens = _counted(env.lexer.tokeniter(source, None), deadline, seconds)
        parser.stream = TokenStream(env.lexer.wrap(tokens), None, None)
        tree = parser.parse()
        for refused in tree.find_all(_REFUSED_NODES):
            raise TemplateSyntax(
                f"'{type(refused).__name__.lower()}' is not available: templates are "
                "self-contained",
                line=refused.lineno,
                column=None,
            )
        found: set[str] = meta.find_undeclared_variables(tree)
        _Guards().visit(tree)
        code = env.compile(tree)
    except TemplateSyntaxError as exc:
        line = exc.lineno or None
        raise TemplateSyntax(
            exc.message or "syntax error", line=line, column=_column(env, source, line)
        ) from None
    except (RecursionError, SyntaxError):
        # SyntaxError: Python's own compiler refuses what Jinja made of deep nesting.
        raise TemplateSyntax("the template is nested too deeply", line=None, column=None) from None
    return Compiled(marshal.dumps(code), frozenset(found))


def _counted(
    tokens: Iterator[tuple[int, str, str]], deadline: float, seconds: float
) -> Iterator[tuple[int, str, str]]:
    for count, token in enumerate(tokens, 1):
        if count > MAX_TEMPLATE_TOKENS:
            raise ParseLimit(
                f"the template has more than {MAX_TEMPLATE_TOKENS:,} tags, names and "
                "other pieces; split it or move repeated parts into a loop"
            )
        if count % 256 == 0 and time.monotonic() > deadline:
            raise ParseLimit(f"parsing took longer than {seconds:g} s")
        yield token


_compiler: Compiler = compile_source


def _column(env: _Sandbox, source: str, line: int | None) -> int | None:
    """Jinja reports only the line: parse again over a token stream that remembers where
    each raw token starts, and take the token the parser stopped at. None when unsure."""
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    starts: list[int] = []
    cursor = 0
    lexer_failed = False

    def positioned() -> Iterator[tuple[int, str, str]]:
        nonlocal cursor, lexer_failed
        tokens = env.lexer.tokeniter(text, None)
        while True:
            try:
                lineno, kind, value = next(tokens)
            except StopIteration:
                return
            except TemplateSyntaxError:
                lexer_failed = True
                raise
            found = text.find(value, cursor) if value else cursor
            cursor = found if found >= 0 else cursor
            starts.append(cursor)
            yield lineno, kind, value
            cursor += len(value)

    try:
        parser = Parser(env, "")
        parser.stream = TokenStream(env.lexer.wrap(positioned()), None, None)
        parser.parse()
    except TemplateSyntaxError as exc:
        # A lexer error stops after the last good token; a parser error at the current one.
        offset = cursor if lexer_failed else (starts or [0])[-1]
        if exc.lineno != line:
            return None
        return offset - (text.rfind("\n", 0, offset) + 1) + 1
    except Exception:
        return None
    return None


def variables(subject: str, html: str | None, text: str | None) -> list[str]:
    """The variables the template reads from its data, sorted (syntax errors raise)."""
    names: set[str] = set()
    for part, source, escaped in _parts(subject, html, text):
        names |= _parsed(part, source, escaped)[1]
    return sorted(names - set(_ENVIRONMENTS[False].globals))


def cached_variables(subject: str, html: str | None, text: str | None) -> list[str] | None:
    """:func:`variables` if every part is already compiled in this process, else None:
    never compiles, so it may run on an event loop."""
    names: set[str] = set()
    for _part, source, escaped in _parts(subject, html, text):
        found = _CACHE.get((source, escaped))
        if found is None:
            return None
        names |= found[1]
    return sorted(names - set(_ENVIRONMENTS[False].globals))


def _parts(subject: str, html: str | None, text: str | None) -> list[tuple[str, str, bool]]:
    """(part, source, autoescaped) for each part that is there."""
    parts = (("subject", subject, False), ("html", html, True), ("text", text, False))
    return [(part, source, escaped) for part, source, escaped in parts if source is not None]


def _parsed(part: str, source: str, html: bool) -> _Loaded:
    try:
        return _load(source, html)
    except TemplateProblem as exc:
        exc.part = part
        raise


# ── rendering ───────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class RenderedTemplate:
    subject: str
    html: str | None
    text: str | None


def render(
    source: str, data: Mapping[str, Any], *, html: bool = False, limits: Limits = Limits()
) -> str:
    """Render one source with its own time and size budget."""
    template = parse(source, html=html)
    # The budget starts after parsing, which has its own limits (a cold parse of a large
    # template that was accepted when saved can take longer than a whole render may).
    budget = _Budget.start(limits)
    _check_data(data)
    return _render(template, data, budget=budget)


def render_parts(
    subject: str,
    html: str | None,
    text: str | None,
    data: Mapping[str, Any],
    *,
    limits: Limits = Limits(),
) -> RenderedTemplate:
    """Render the three parts of a template; they share one time and size budget, which
    starts once all three are parsed."""
    templates = [
        (part, _parsed(part, source, escaped)[0])
        for part, source, escaped in _parts(subject, html, text)
    ]
    budget = _Budget.start(limits)
    _check_data(data)
    results: dict[str, str | None] = {"subject": None, "html": None, "text": None}
    for part, template in templates:
        results[part] = _part(part, template, data, budget)
    return RenderedTemplate(
        subject=results["subject"] or "", html=results["html"], text=results["text"]
    )


def _check_data(data: Mapping[str, Any]) -> None:
    """Data larger than any output it could make is refused before the render starts."""
    if _text_size(data, MAX_DATA_CHARS) > MAX_DATA_CHARS:
        problem = RenderLimit(
            "size", f"the template data is larger than {MAX_DATA_CHARS:,} characters"
        )
        problem.part = "data"
        raise problem


def _part(part: str, template: Any, data: Mapping[str, Any], budget: _Budget) -> str:
    try:
        return _render(template, data, budget=budget)
    except TemplateProblem as exc:
        exc.part = part
        raise


def _render(template: Any, data: Mapping[str, Any], *, budget: _Budget) -> str:
    token = _budget.set(budget)
    chunks: list[str] = []
    try:
        with WATCHDOG.deadline(budget.deadline):
            for chunk in template.generate(dict(data)):
                budget.spend(len(chunk))
                chunks.append(chunk)
    except Overtime:
        raise _overtime(budget.limits) from None
    except TemplateProblem:
        raise
    except SecurityError as exc:
        raise UnsafeTemplate(_short(exc)) from None
    except UndefinedError as exc:
        raise _missing(exc) from None
    except RecursionError:
        raise RenderFailed("macros call each other too deeply") from None
    except MemoryError:
        raise _too_large(budget.limits.output_chars) from None
    except Exception as exc:
        # Whatever else a template raises (ZeroDivisionError, a filter's TypeError…) is the
        # template's own error: reported, never a server error.
        raise RenderFailed(f"{type(exc).__name__}: {_short(exc)}") from None
    finally:
        _budget.reset(token)
    return "".join(chunks)


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_UNDEFINED_ATTRIBUTE = re.compile(r"has no (?:attribute|element) '?([^']+?)'?$")


def _missing(exc: UndefinedError) -> MissingVariable:
    message = _short(exc)
    match = _UNDEFINED_NAME.match(message) or _UNDEFINED_ATTRIBUTE.search(message)
    return MissingVariable(match.group(1) if match else message, message)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
