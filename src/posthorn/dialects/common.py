"""What the dialect routers share: reading a JSON body themselves (each dialect answers shape
errors in its own envelope, not with FastAPI's ``{"detail": …}``)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from posthorn.api.errors import field_path
from posthorn.errors import InvalidRequest, MalformedRequest

Model = TypeVar("Model", bound=BaseModel)


async def read_json(request: Request) -> Any:
    """The body as JSON; :class:`MalformedRequest` when it is not JSON."""
    body = await request.body()
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise MalformedRequest() from exc


def parse(model: type[Model], data: Any, *, prefix: str = "") -> Model:
    """``data`` validated as ``model``; the first problem as :class:`InvalidRequest`."""
    if not isinstance(data, dict):
        raise InvalidRequest("field_type", field=prefix or "body", reason="must be an object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_path(first.get("loc", ()))
        if prefix:
            field = f"{prefix}.{field}"
        if first.get("type") == "missing":
            raise InvalidRequest("field_required", field=field) from None
        raise InvalidRequest("field_type", field=field, reason=str(first.get("msg"))) from None
