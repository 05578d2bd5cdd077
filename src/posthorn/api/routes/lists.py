"""``/v1/lists``: mailing lists, their contacts, and CSV imports.

Reading needs any key; creating, renaming, changing contacts and importing need
``sending_access``; deleting a list needs ``full_access``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute, body_limit
from posthorn.api.limits import CONTACTS_BODY_BYTES
from posthorn.api.paging import Page, PerPage
from posthorn.domain.permissions import Permission
from posthorn.errors import InvalidRequest, MalformedRequest

router = APIRouter(prefix="/v1/lists", route_class=GuardedRoute, tags=["lists"])

READ_CHUNK = 64 * 1024
CSV_TYPES = frozenset({"text/csv", "application/csv", "text/plain", "application/octet-stream"})


class ListIn(StrictModel):
    name: str = Field(min_length=1, max_length=200)


class CountsOut(BaseModel):
    total: int
    subscribed: int
    unsubscribed: int


class ListOut(BaseModel):
    id: str
    numeric_id: int | None = Field(description="The list's id in the v2 form API.")
    name: str
    contacts: CountsOut
    created_at: str
    updated_at: str


class ListPageOut(BaseModel):
    data: list[ListOut]
    total: int
    page: int
    per_page: int


class ContactIn(StrictModel):
    email: str | None = None
    variables: dict[str, Any] | None = None
    contacts: list[dict[str, Any]] | None = Field(
        None, description="Many contacts at once ({email, variables} each, at most 1000)."
    )


class ContactPatch(StrictModel):
    status: Literal["subscribed", "unsubscribed"] | None = None
    variables: dict[str, Any] | None = None


class ContactOut(BaseModel):
    email: str
    variables: dict[str, Any]
    status: str
    created_at: str
    updated_at: str


class ContactPageOut(BaseModel):
    data: list[ContactOut]
    total: int
    page: int
    per_page: int


class ImportOut(BaseModel):
    imported: int
    invalid: int
    duplicate: int
    errors: list[dict[str, Any]]


class DeletedOut(BaseModel):
    id: str
    deleted: bool


def _list(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "numeric_id": row["numeric_id"],
        "name": row["name"],
        "contacts": row["contacts"],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }


def _contact(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "email": row["email"],
        "variables": row["variables"] or {},
        "status": row["state"],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }


@router.get("", response_model=ListPageOut)
async def list_lists(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    rows, total = await svc.lists.page(caller.account_id, page=page, per_page=per_page)
    return {"data": [_list(r) for r in rows], "total": total, "page": page, "per_page": per_page}


@router.post("", response_model=ListOut)
async def create_list(body: ListIn, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    return _list(await svc.lists.create(caller, body.name))


@router.get("/{list_id}", response_model=ListOut)
async def get_list(list_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    return _list(await svc.lists.get(caller.account_id, list_id))


@router.patch("/{list_id}", response_model=ListOut)
async def rename_list(
    list_id: str, body: ListIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    return _list(await svc.lists.rename(caller, list_id, body.name))


@router.delete("/{list_id}", response_model=DeletedOut)
async def delete_list(list_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """Delete a list and its contacts (``full_access``)."""
    await svc.lists.delete(caller, list_id)
    return {"id": list_id, "deleted": True}


@router.get("/{list_id}/contacts", response_model=ContactPageOut)
async def list_contacts(
    list_id: str,
    svc: ServicesDep,
    caller: PrincipalDep,
    search: Annotated[str | None, Query(max_length=320)] = None,
    status: Literal["subscribed", "unsubscribed"] | None = None,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    rows, total = await svc.lists.contacts(
        caller.account_id, list_id, page=page, per_page=per_page, search=search, status=status
    )
    return {"data": [_contact(r) for r in rows], "total": total, "page": page, "per_page": per_page}


@router.post("/{list_id}/contacts", response_model=ContactOut | ImportOut)
@body_limit(CONTACTS_BODY_BYTES)
async def add_contacts(
    list_id: str, body: ContactIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """One contact (``{email, variables}``: the contact, 409 when already on the list) or many
    (``{contacts: [...]}``: counts of imported, invalid and duplicate ones)."""
    if body.contacts is not None:
        return (await svc.lists.add_contacts(caller, list_id, body.contacts)).as_json()
    if body.email is None:
        raise InvalidRequest("field_required", field="email")
    return _contact(await svc.lists.add_contact(caller, list_id, body.email, body.variables))


@router.patch("/{list_id}/contacts/{email}", response_model=ContactOut)
async def update_contact(
    list_id: str, email: str, body: ContactPatch, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Change a contact's variables, or (un)subscribe it from this list."""
    row = await svc.lists.update_contact(
        caller, list_id, email, status=body.status, variables=body.variables
    )
    return _contact(row)


@router.delete("/{list_id}/contacts/{email}")
async def delete_contact(
    list_id: str, email: str, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    await svc.lists.remove_contact(caller, list_id, email)
    return {"email": email.strip().lower(), "deleted": True}


@router.post(
    "/{list_id}/import",
    response_model=ImportOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_contacts(
    list_id: str, request: Request, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Import a CSV (a multipart ``file``, or the body itself as ``text/csv``). The header row
    names an ``email`` column; every other column becomes a variable of the contact."""
    # The service checks this too; checked here first so that a read-only key's upload is not
    # read at all.
    caller.require(Permission.SENDING_ACCESS)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if media_type == "multipart/form-data":
            async with request.form(max_files=1, max_fields=10) as form:
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    raise InvalidRequest("file_required", field="file")
                report = await svc.lists.import_csv(caller, list_id, _file_chunks(upload))
        elif media_type in CSV_TYPES:
            report = await svc.lists.import_csv(caller, list_id, _body_chunks(request))
        else:
            raise MalformedRequest("csv_required")
    except StarletteHTTPException as exc:  # python-multipart could not read the body
        raise MalformedRequest("form_invalid", reason=str(exc.detail)[:200]) from exc
    except ClientDisconnect as exc:  # also what the body size limit looks like from here
        raise MalformedRequest("form_invalid", reason="the body ended early") from exc
    return report.as_json()


async def _file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while data := await upload.read(READ_CHUNK):
        yield data


async def _body_chunks(request: Request) -> AsyncIterator[bytes]:
    async for data in request.stream():
        if data:
            yield data
