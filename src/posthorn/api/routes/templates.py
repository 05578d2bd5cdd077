"""``/v1/templates``: create, list, get, update, delete, and render a preview."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep, requires
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute, message_body
from posthorn.api.paging import Page, PerPage
from posthorn.domain.permissions import Permission
from posthorn.services.accounts import Principal
from posthorn.services.templates import (
    MAX_BODY_SOURCE_CHARS,
    MAX_NAME_CHARS,
    MAX_SUBJECT_SOURCE_CHARS,
)
from posthorn.store.templates import TemplateRow

router = APIRouter(prefix="/v1/templates", route_class=GuardedRoute, tags=["templates"])

FullAccess = Annotated[Principal, requires(Permission.FULL_ACCESS)]

SYNTAX = "Jinja2 syntax, e.g. {{ name }}; autoescaped in html"


class CreateTemplateIn(StrictModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT_SOURCE_CHARS, description=SYNTAX)
    html: str | None = Field(None, max_length=MAX_BODY_SOURCE_CHARS, description=SYNTAX)
    text: str | None = Field(None, max_length=MAX_BODY_SOURCE_CHARS, description=SYNTAX)


class UpdateTemplateIn(StrictModel):
    name: str | None = Field(None, min_length=1, max_length=MAX_NAME_CHARS)
    subject: str | None = Field(None, min_length=1, max_length=MAX_SUBJECT_SOURCE_CHARS)
    html: str | None = Field(None, max_length=MAX_BODY_SOURCE_CHARS, description="null removes")
    text: str | None = Field(None, max_length=MAX_BODY_SOURCE_CHARS, description="null removes")


class RenderIn(StrictModel):
    data: dict[str, Any] = Field(default_factory=dict, description="The template's variables")


class TemplateOut(BaseModel):
    id: str
    name: str
    subject: str
    html: str | None
    text: str | None
    variables: list[str] = Field(description="Variables the template reads, detected on save")
    created_at: str
    updated_at: str


class TemplateSummaryOut(BaseModel):
    id: str
    name: str
    subject: str
    variables: list[str]
    created_at: str
    updated_at: str


class TemplateListOut(BaseModel):
    data: list[TemplateSummaryOut]
    total: int
    page: int
    per_page: int


class RenderedOut(BaseModel):
    subject: str
    html: str | None
    text: str | None


class DeletedOut(BaseModel):
    id: str
    deleted: bool


def _summary(row: TemplateRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "subject": row.subject,
        "variables": row.variables,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
    }


def _out(row: TemplateRow) -> dict[str, Any]:
    return {**_summary(row), "html": row.html, "text": row.text}


@router.post("", response_model=TemplateOut)
@message_body
async def create_template(
    body: CreateTemplateIn, svc: ServicesDep, caller: FullAccess
) -> dict[str, Any]:
    """Save a template; a syntax error is a 422 naming the field, line and column."""
    row = await svc.templates.create(
        caller, name=body.name, subject=body.subject, html=body.html, text=body.text
    )
    return _out(row)


@router.get("", response_model=TemplateListOut)
async def list_templates(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    """Templates newest first, without their bodies (GET one for those)."""
    rows, total = await svc.templates.page(caller.account_id, page=page, per_page=per_page)
    return {
        "data": [_summary(row) for row in rows],
        "total": total,
        "page": page,
        "per_page": per_page,
    }


@router.get("/{template_id}", response_model=TemplateOut)
async def get_template(template_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    return _out(await svc.templates.get(caller.account_id, template_id))


@router.patch("/{template_id}", response_model=TemplateOut)
@message_body
async def update_template(
    template_id: str, body: UpdateTemplateIn, svc: ServicesDep, caller: FullAccess
) -> dict[str, Any]:
    """Change some fields; the sources are checked again and the variables re-detected."""
    changes = body.model_dump(exclude_unset=True)
    return _out(await svc.templates.update(caller, template_id, changes))


@router.delete("/{template_id}", response_model=DeletedOut)
async def delete_template(template_id: str, svc: ServicesDep, caller: FullAccess) -> dict[str, Any]:
    await svc.templates.delete(caller, template_id)
    return {"id": template_id, "deleted": True}


@router.post("/{template_id}/render", response_model=RenderedOut)
@message_body
async def render_template(
    template_id: str, body: RenderIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Preview: the subject, HTML and text an email made with this data would have."""
    rendered = await svc.templates.render(caller.account_id, template_id, body.data)
    return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}
