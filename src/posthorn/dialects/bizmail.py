"""The BizMail dialect (seed 000): JWT login and ``POST /api/1.0/mail/store`` as a form.

A thin translator: it reads BizMail's wire shapes, calls the same services as the native API
(:class:`~posthorn.services.tokens.Tokens` for the tokens, :class:`~posthorn.services.intake.
Intake` for the mail) and lets ``api/errors.py`` render errors as ``{"detail": ...}`` with the
native status codes, since BizMail's error shape is the same. The one addition is the
``WWW-Authenticate`` header that RFC 6750 §3 requires on a refused bearer token. Failed logins
are throttled per client network by the token service; the client is the address the
trusted-proxy rule gives (``api/deps.py``), so a client cannot pick its own with
``X-Forwarded-For``.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from posthorn.api.deps import ServicesDep, client_ip
from posthorn.api.errors import error_response, language_of
from posthorn.domain.addresses import Address, AddressError, format_address, parse_address
from posthorn.errors import AuthenticationFailed, InvalidRequest, MalformedRequest
from posthorn.mime.compose import Attachment
from posthorn.services.intake import SendRequest, Tag

SOURCE = "bizmail"
FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
MAX_FILES = 100
MAX_FIELDS = 1000
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

router = APIRouter(prefix="/api/1.0", tags=["BizMail dialect"])
bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    scheme_name="BizMailBearer",
    description="An access token from POST /api/1.0/auth/token.",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class TokenIn(BaseModel):
    username: str = Field(max_length=200, description="A Posthorn user (the portal login).")
    password: str = Field(max_length=1024)


class RefreshIn(BaseModel):
    refresh_token: str = Field(max_length=4096)


class TokenOut(BaseModel):
    access_token: str = Field(description="A JWT (HS256) for Authorization: Bearer.")
    refresh_token: str = Field(description="Opaque; single use: each refresh rotates it.")
    token_type: str = Field(description='Always "Bearer".')
    expires_in: int = Field(description="Seconds until the access token expires.")


class StoredOut(BaseModel):
    id: str = Field(description="The email id, as in /v1/emails/{id} and in webhooks.")
    status: str = Field(description='"queued" (or "rejected" if every recipient is suppressed).')


def _no_store(response: Response) -> None:
    # RFC 6749 §5.1: responses carrying tokens must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


@router.post("/auth/token", response_model=TokenOut)
async def get_token(
    body: TokenIn, request: Request, svc: ServicesDep, response: Response
) -> dict[str, Any]:
    """Exchange a user's username and password for an access token and a refresh token.

    After too many failed logins from one client network: 429 with ``Retry-After``."""
    pair = await svc.tokens.login(
        body.username, body.password, client_ip=client_ip(request, svc.settings)
    )
    _no_store(response)
    return pair.as_json()


@router.post("/auth/refresh", response_model=TokenOut)
async def refresh_token(body: RefreshIn, svc: ServicesDep, response: Response) -> dict[str, Any]:
    """Spend a refresh token for a new pair. A refresh token works once: presenting a spent
    one again revokes every token issued since that login."""
    pair = await svc.tokens.refresh(body.refresh_token)
    _no_store(response)
    return pair.as_json()


_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["from", "to", "subject"],
    "properties": {
        "from": {"type": "string", "description": 'address or "Name <address>"'},
        "from_name": {"type": "string", "description": "display name for a bare from"},
        "to": {"type": "array", "items": {"type": "string"}, "description": "repeat or commas"},
        "cc": {"type": "array", "items": {"type": "string"}},
        "bcc": {"type": "array", "items": {"type": "string"}},
        "reply_to": {"type": "string"},
        "subject": {"type": "string"},
        "html": {"type": "string", "description": "at least one of html and text"},
        "text": {"type": "string"},
        "attachments": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "repeat or commas"},
        "track_opens": {"type": "string", "enum": ["1", "0", "true", "false"]},
        "track_clicks": {"type": "string", "enum": ["1", "0", "true", "false"]},
    },
}


@router.post(
    "/mail/store",
    response_model=StoredOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}},
        }
    },
)
async def store_mail(request: Request, svc: ServicesDep, credentials: BearerDep) -> Any:
    """Queue a transactional email described by a multipart form, with optional files."""
    try:
        claims = await svc.tokens.verify_access(credentials.credentials if credentials else None)
    except AuthenticationFailed as exc:
        return _unauthorized(request, exc)
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in FORM_TYPES:
        raise MalformedRequest("form_required")
    try:
        async with request.form(
            max_files=MAX_FILES,
            max_fields=MAX_FIELDS,
            max_part_size=svc.settings.max_message_bytes,
        ) as form:
            send = await _send_request(form, account_id=claims.account_id)
    except StarletteHTTPException as exc:  # python-multipart could not read the body
        raise MalformedRequest("form_invalid", reason=str(exc.detail)[:200]) from exc
    except ClientDisconnect as exc:  # also what the body size limit looks like from here
        raise MalformedRequest("form_invalid", reason="the body ended early") from exc
    accepted = await svc.intake.submit(send)
    return {"id": accepted.id, "status": str(accepted.status)}


def _unauthorized(request: Request, exc: AuthenticationFailed) -> JSONResponse:
    # RFC 6750 §3: a refused bearer request carries WWW-Authenticate; §3.1: without an error
    # code when the request had no token at all.
    challenge = 'Bearer realm="posthorn"'
    if exc.code != "token_missing":
        challenge += ', error="invalid_token"'
    return error_response(
        request, 401, exc.message(language_of(request)), **{"WWW-Authenticate": challenge}
    )


async def _send_request(form: FormData, *, account_id: str) -> SendRequest:
    sender = await _text(form, "from")
    if not sender or not sender.strip():
        raise InvalidRequest("field_required", field="from")
    subject = await _text(form, "subject")
    if subject is None:
        raise InvalidRequest("field_required", field="subject")
    return SendRequest(
        account_id=account_id,
        source=SOURCE,
        from_=_with_name(sender, await _text(form, "from_name")),
        to=_list(form, "to"),
        cc=_list(form, "cc"),
        bcc=_list(form, "bcc"),
        reply_to=(await _text(form, "reply_to") or "").strip() or None,
        subject=subject,
        html=await _text(form, "html") or None,
        text=await _text(form, "text") or None,
        attachments=await _attachments(form),
        tags=[Tag(name=name, value="") for name in _list(form, "tags")],
        track_opens=_flag(form, "track_opens"),
        track_clicks=_flag(form, "track_clicks"),
    )


def _values(form: FormData, name: str) -> list[str | UploadFile]:
    """Every value of a field, also under the PHP-style name ``name[]``."""
    return [*form.getlist(name), *form.getlist(f"{name}[]")]


async def _text(form: FormData, name: str) -> str | None:
    """A text field; a file sent in its place (``curl -F html=@page.html``) is read as UTF-8."""
    values = _values(form, name)
    if not values:
        return None
    value = values[0]
    if isinstance(value, str):
        return value
    try:
        return (await value.read()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("text_invalid", field=name) from exc


def _list(form: FormData, name: str) -> list[str]:
    """A repeatable field whose values may also be comma-separated."""
    items: list[str] = []
    for index, value in enumerate(_values(form, name)):
        if not isinstance(value, str):
            raise InvalidRequest(field=f"{name}[{index}]")
        items.extend(split_commas(value))
    return items


def split_commas(value: str) -> list[str]:
    """Split on commas outside quotes and angle brackets: ``"Doe, J" <j@x.vn>, k@x.vn``."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(depth - 1, 0)
        elif char == "," and not quoted and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _with_name(sender: str, name: str | None) -> str:
    """``from`` with ``from_name`` as its display name when it has none of its own."""
    if not name or not name.strip():
        return sender
    try:
        parsed = parse_address(sender)
    except AddressError:
        return sender  # intake reports the bad address, naming the field "from"
    if parsed.name:
        return sender
    return format_address(Address(email=parsed.email, name=name.strip()))


def _flag(form: FormData, name: str) -> bool | None:
    """``None`` when the field is absent: the From domain's setting decides."""
    values = _values(form, name)
    if not values:
        return None
    value = values[0]
    if not isinstance(value, str):
        raise InvalidRequest("flag_invalid", field=name)
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidRequest("flag_invalid", field=name)


async def _attachments(form: FormData) -> list[Attachment]:
    files: list[Attachment] = []
    for index, value in enumerate(_values(form, "attachments")):
        field = f"attachments[{index}]"
        if not isinstance(value, UploadFile):
            raise InvalidRequest("file_required", field=field)
        content = await value.read()
        if not value.filename and not content:
            continue  # an HTML form's file input left empty
        # Old browsers send the whole client path; only its last part is the file's name.
        filename = PurePosixPath((value.filename or "").replace("\\", "/")).name
        content_type = value.content_type or "application/octet-stream"
        try:
            files.append(
                Attachment(
                    filename=filename or f"attachment-{index + 1}",
                    content=content,
                    content_type=content_type,
                )
            )
        except ValueError as exc:
            raise InvalidRequest(
                "content_type_invalid", field=field, value=content_type[:100]
            ) from exc
    return files
