"""Every error the HTTP API returns, mapped in one place to ``{"detail": "..."}``.

The seed API's codes: 400 unreadable request, 401 bad key, 403 permission, 404 not found,
409 conflict, 413 too large, 422 invalid field, 429 limit, 500 server error. Messages follow
the request's ``Content-Language`` (``vi`` or ``en``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from posthorn import errors
from posthorn.messages import pick_language, render

log = logging.getLogger(__name__)

STATUS_CODES: tuple[tuple[type[errors.PosthornError], int], ...] = (
    (errors.MalformedRequest, 400),
    (errors.InvalidRequest, 422),
    (errors.AuthenticationFailed, 401),
    (errors.PermissionDenied, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.TooLarge, 413),
    (errors.LimitExceeded, 429),
)


def status_for(error: errors.PosthornError) -> int:
    for cls, code in STATUS_CODES:
        if isinstance(error, cls):
            return code
    return 500


def language_of(request: Request) -> str:
    return pick_language(request.headers.get("content-language"))


def error_response(request: Request, status: int, detail: str, **headers: str) -> JSONResponse:
    headers["Content-Language"] = language_of(request)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def field_path(loc: Sequence[Any]) -> str:
    """``("body", "to", 0)`` → ``"to[0]"``."""
    path = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.PosthornError)
    async def _posthorn_error(request: Request, exc: errors.PosthornError) -> JSONResponse:
        headers = {}
        if isinstance(exc, errors.LimitExceeded):
            headers["Retry-After"] = str(exc.retry_after)
        return error_response(
            request, status_for(exc), exc.message(language_of(request)), **headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        first = problems[0] if problems else {}
        language = language_of(request)
        kind = str(first.get("type", ""))
        if kind == "json_invalid":
            return error_response(request, 400, render("malformed_json", language))
        field = field_path(first.get("loc", ()))
        if kind == "missing":
            return error_response(request, 422, render("field_required", language, field=field))
        reason = str(first.get("msg", "invalid value"))
        return error_response(
            request, 422, render("field_type", language, field=field, reason=reason)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, render("internal", language_of(request)))
