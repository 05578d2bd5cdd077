"""Many-row ``INSERT`` for the hot paths: intake's emails, deliveries and events.

On SQLite a Core ``insert()`` with a few rows per message spends most of its time in
SQLAlchemy's per-execution work (the statement's cache key, a parameter dictionary per row
built through each column's type) rather than in SQLite. :class:`FastInsert` does that work
once: the SQL text and each column's bind processor are prepared per set of columns, and each
row becomes a tuple the driver takes as it is. The rows go in as multi-row ``VALUES``
statements, one per power-of-two slice (13 rows are 8 + 4 + 1): the driver steps each
statement once, where ``executemany()`` steps once per row (and gives the GIL away and wins
it back each time), and a table has only a handful of SQL texts to cache. Other databases
take the Core statement, whose per-row cost is small next to the network round trip.

Within one call, a value a column's type has already converted is not converted again: the
rows of one email share one timestamp object, and most of its JSON lists are empty.

Rows are dictionaries keyed by column name, as for ``insert()``. A column a row leaves out
gets its scalar ``default`` if it has one; otherwise it is left out of the statement (an
autoincrement key, a nullable column), so every row of one call must name the same columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.schema import ScalarElementColumnDefault

Processor = Callable[[Any], Any] | None

MAX_ROWS = 16  # per statement: 16 rows of the widest table stay far below 999 parameters


class FastInsert:
    def __init__(self, table: Table) -> None:
        self._table = table
        self._statement = table.insert()
        self._defaults = {
            column.key: column.default.arg
            for column in table.columns
            if isinstance(column.default, ScalarElementColumnDefault)
        }
        self._prepared: dict[tuple[Dialect, frozenset[str]], _Prepared] = {}

    async def run(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        dialect = conn.dialect
        if dialect.name != "sqlite":
            await conn.execute(self._statement, list(rows))
            return
        names = frozenset(rows[0]).union(self._defaults)
        prepared = self._prepared.get((dialect, names))
        if prepared is None:
            prepared = self._prepared[(dialect, names)] = self._prepare(dialect, names)
        values = prepared.tuples(rows, self._defaults)
        start = 0
        while start < len(values):
            size = _slice(len(values) - start)
            chunk = chain.from_iterable(values[start : start + size])
            await conn.exec_driver_sql(prepared.sql_for(size), tuple(chunk))
            start += size

    def _prepare(self, dialect: Dialect, names: frozenset[str]) -> _Prepared:
        columns = [c for c in self._table.columns if c.key in names]
        unknown = names - {c.key for c in columns}
        if unknown:
            raise KeyError(f"{self._table.name} has no column {sorted(unknown)}")
        preparer = dialect.identifier_preparer
        # Names from the table's metadata, quoted by the dialect; every value is a parameter.
        sql = "INSERT INTO {} ({}) VALUES ".format(  # noqa: S608
            preparer.format_table(self._table),
            ", ".join(preparer.format_column(c) for c in columns),
        )
        # Columns of the same type convert a value alike: they share a memo in tuples().
        families: dict[str, int] = {}
        return _Prepared(
            sql,
            [
                (
                    c.key,
                    _processor(c, dialect),
                    families.setdefault(repr(c.type.dialect_impl(dialect)), len(families)),
                )
                for c in columns
            ],
        )


class _Prepared:
    __slots__ = ("_columns", "_head", "_row", "_sql")

    def __init__(self, head: str, columns: list[tuple[str, Processor, int]]) -> None:
        self._head = head
        self._row = "(" + ", ".join("?" for _ in columns) + ")"
        self._columns = columns
        self._sql: dict[int, str] = {}

    def sql_for(self, rows: int) -> str:
        sql = self._sql.get(rows)
        if sql is None:
            sql = self._sql[rows] = self._head + ", ".join([self._row] * rows)
        return sql

    def tuples(
        self, rows: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        # (type family, identity of the value) → (the value, kept alive; what it became).
        # An empty list or dict is one entry per family, whichever object it is.
        memo: dict[tuple[int, int], tuple[Any, Any]] = {}
        out = []
        for row in rows:
            values = []
            for key, process, family in self._columns:
                value = row[key] if key in row else defaults[key]
                if process is not None:
                    kind = type(value)
                    if (kind is list or kind is dict) and not value:
                        ident = -1 if kind is list else -2
                    else:
                        ident = id(value)
                    seen = memo.get((family, ident))
                    if seen is None:
                        seen = memo[(family, ident)] = (value, process(value))
                    value = seen[1]
                values.append(value)
            out.append(tuple(values))
        return out


def _slice(remaining: int) -> int:
    """The largest power of two that fits, at most MAX_ROWS."""
    return min(1 << (remaining.bit_length() - 1), MAX_ROWS)


def _processor(column: Column[Any], dialect: Dialect) -> Processor:
    return column.type.dialect_impl(dialect).bind_processor(dialect)
