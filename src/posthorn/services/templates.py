"""Email templates: stored Jinja2 sources for subject, HTML and text, rendered with data.

Sources are checked when they are saved, so a syntax error is reported once, with its line
and column, and never at send time. A source is at most ``max_template_bytes``
(``POSTHORN_MAX_TEMPLATE_BYTES``); parsing happens in a child process
(``template_compiler.py``), rendering (``mime/templating.py``) in a worker thread: both are
CPU work bounded by a time limit, and must not hold up the event loop.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from typing import Any

from posthorn.domain.permissions import Permission
from posthorn.errors import InvalidRequest, NotFound
from posthorn.mime import templating
from posthorn.mime.templating import (
    Limits,
    MissingVariable,
    ParseLimit,
    RenderedTemplate,
    RenderLimit,
    TemplateProblem,
    TemplateSyntax,
    UnsafeTemplate,
)
from posthorn.services import template_compiler
from posthorn.services.accounts import Principal
from posthorn.store import templates as repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow
from posthorn.store.templates import TemplateRow

__all__ = ["RenderedTemplate", "Templates"]

MAX_NAME_CHARS = 200
MAX_SUBJECT_SOURCE_CHARS = 10_000
MAX_BODY_SOURCE_CHARS = 4 * 1024 * 1024  # the request schema's bound; the setting is lower
DEFAULT_MAX_SOURCE_BYTES = 512 * 1024
EDITABLE = ("name", "subject", "html", "text")


class Templates:
    def __init__(
        self,
        db: Database,
        *,
        limits: Limits | None = None,
        max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
    ) -> None:
        self._db = db
        self._limits = limits or Limits()
        self.max_source_bytes = max_source_bytes

    async def create(
        self,
        caller: Principal,
        *,
        name: str,
        subject: str,
        html: str | None = None,
        text: str | None = None,
    ) -> TemplateRow:
        caller.require(Permission.FULL_ACCESS)
        found = await self._checked(name=name, subject=subject, html=html, text=text)
        now = utcnow()
        row = TemplateRow(
            id="tpl_" + secrets.token_hex(12),
            account_id=caller.account_id,
            name=name,
            subject=subject,
            html=html,
            text=text,
            variables=found,
            created_at=now,
            updated_at=now,
        )
        async with self._db.write() as conn:
            await repo.insert_template(conn, row)
        return row

    async def get(self, account_id: str, template_id: str) -> TemplateRow:
        async with self._db.read() as conn:
            row = await repo.get_template(conn, account_id, template_id)
        if row is None:
            raise NotFound(resource="template")
        return row

    async def page(
        self, account_id: str, *, page: int, per_page: int
    ) -> tuple[list[TemplateRow], int]:
        async with self._db.read() as conn:
            return await repo.list_templates(
                conn, account_id, offset=(page - 1) * per_page, limit=per_page
            )

    async def update(
        self, caller: Principal, template_id: str, changes: Mapping[str, Any]
    ) -> TemplateRow:
        """Change any of ``name``, ``subject``, ``html``, ``text``; ``html`` or ``text`` set
        to None removes that part (one of them must remain)."""
        caller.require(Permission.FULL_ACCESS)
        current = await self.get(caller.account_id, template_id)
        merged = {key: getattr(current, key) for key in EDITABLE}
        merged.update({key: value for key, value in changes.items() if key in EDITABLE})
        found = await self._checked(**merged)
        values = {**merged, "variables": found, "updated_at": utcnow()}
        async with self._db.write() as conn:
            if not await repo.update_template(conn, caller.account_id, template_id, values):
                raise NotFound(resource="template")
        return TemplateRow(
            id=current.id,
            account_id=current.account_id,
            created_at=current.created_at,
            **values,
        )

    async def delete(self, caller: Principal, template_id: str) -> None:
        caller.require(Permission.FULL_ACCESS)
        async with self._db.write() as conn:
            if not await repo.delete_template(conn, caller.account_id, template_id):
                raise NotFound(resource="template")

    async def render(
        self, account_id: str, template_id: str, data: dict[str, Any]
    ) -> RenderedTemplate:
        """The template rendered with ``data``: what an email made from it would contain.

        Raises :class:`NotFound` for another account's template and :class:`InvalidRequest`
        for a missing variable, a refused operation or a limit reached while rendering.
        """
        row = await self.get(account_id, template_id)
        try:
            await template_compiler.parse(row.subject, row.html, row.text)
            return await asyncio.to_thread(
                templating.render_parts,
                row.subject,
                row.html,
                row.text,
                data,
                limits=self._limits,
            )
        except TemplateProblem as problem:
            raise invalid(problem, seconds=self._limits.seconds) from None

    def check_sizes(self, **sources: str | None) -> None:
        """:class:`InvalidRequest` naming the first source over ``max_source_bytes``."""
        limit = self.max_source_bytes
        for field, source in sources.items():
            if source is not None and _over(source, limit):
                raise InvalidRequest("template_too_large", field=field, limit=limit)

    async def variables(self, subject: str, html: str | None, text: str | None) -> list[str]:
        """Check the sizes and parse the sources (off the event loop): the variables they
        read, or :class:`InvalidRequest` naming the part."""
        self.check_sizes(subject=subject, html=html, text=text)
        try:
            return await template_compiler.variables(subject, html, text)
        except TemplateProblem as problem:
            raise invalid(problem) from None

    async def _checked(self, *, name: Any, subject: Any, html: Any, text: Any) -> list[str]:
        """Validate the fields and parse the sources; the variables the template uses."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest("field_required", field="name")
        if not isinstance(subject, str) or not subject.strip():
            raise InvalidRequest("field_required", field="subject")
        if html is None and text is None:
            raise InvalidRequest("body_required")
        for field, value, limit in (
            ("name", name, MAX_NAME_CHARS),
            ("subject", subject, MAX_SUBJECT_SOURCE_CHARS),
        ):
            if len(value) > limit:
                raise InvalidRequest("template_too_long", field=field, limit=limit)
        return await self.variables(subject, html, text)


def _over(source: str, limit: int) -> bool:
    """Whether the source is over ``limit`` bytes of UTF-8; encoded only when its length
    leaves it in doubt (a character is 1 to 4 bytes)."""
    if len(source) > limit:
        return True
    return len(source) * 4 > limit and len(source.encode("utf-8", "surrogatepass")) > limit


def invalid(
    problem: TemplateProblem, *, seconds: float = templating.MAX_RENDER_SECONDS
) -> InvalidRequest:
    """The 422 for a template problem, naming the part (subject, html or text)."""
    field = problem.part or "template"
    if isinstance(problem, TemplateSyntax):
        if problem.line is None:
            return InvalidRequest("template_syntax_general", field=field, reason=problem.reason)
        if problem.column is None:
            return InvalidRequest(
                "template_syntax_line", field=field, line=problem.line, reason=problem.reason
            )
        return InvalidRequest(
            "template_syntax",
            field=field,
            line=problem.line,
            column=problem.column,
            reason=problem.reason,
        )
    if isinstance(problem, MissingVariable):
        return InvalidRequest(
            "template_variable_missing",
            field="data",
            name=problem.name,
            part=field,
            reason=problem.reason,
        )
    if isinstance(problem, ParseLimit):
        return InvalidRequest("template_parse_limit", field=field, reason=problem.reason)
    if isinstance(problem, UnsafeTemplate):
        return InvalidRequest("template_unsafe", field=field, reason=problem.reason)
    if isinstance(problem, RenderLimit):
        if problem.kind == "time":
            return InvalidRequest("template_time_limit", field=field, seconds=f"{seconds:g}")
        return InvalidRequest("template_size_limit", field=field, reason=problem.reason)
    return InvalidRequest("template_render_failed", field=field, reason=problem.reason)
