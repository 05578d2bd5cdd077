"""One exception tree for everything a caller can do wrong.

Services raise these; each edge (``api/errors.py``, every dialect, the SMTP server) maps them
to its own wire format in one place. Remote failures during delivery are *results*, not
exceptions (see ``domain/results.py``).

    PosthornError
     ├── InvalidRequest        the request is understood but a field is wrong    (HTTP 422)
     │    └── MalformedRequest the request cannot be parsed at all               (HTTP 400)
     ├── AuthenticationFailed  no credential, or a wrong/expired/revoked one     (HTTP 401)
     ├── PermissionDenied      the credential may not do this                    (HTTP 403)
     ├── NotFound              no such object *in this account*                  (HTTP 404)
     ├── Conflict              the object exists / is in the wrong state         (HTTP 409)
     ├── TooLarge              the body or message is over the size limit        (HTTP 413)
     └── LimitExceeded         a quota or rate limit; ``retry_after`` seconds    (HTTP 429)

Every error carries a message ``code`` from :mod:`posthorn.messages` and its parameters, so
the edge can render it in the caller's language; ``str(error)`` is the English text.
"""

from __future__ import annotations

from typing import Any

from posthorn.messages import render


class PosthornError(Exception):
    """Something went wrong."""

    default_code = "error"

    def __init__(self, code: str | None = None, *, field: str | None = None, **params: Any):
        self.code = code or self.default_code
        self.field = field
        self.params = params
        super().__init__(self.message("en"))

    def message(self, language: str = "en") -> str:
        return render(self.code, language, field=self.field, **self.params)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (between SMTP processes) by what it was made from, not by its text.
        return (_rebuild, (type(self), self.code, self.field, self.params))


class InvalidRequest(PosthornError):
    """A field of the request is invalid."""

    default_code = "invalid"


class MalformedRequest(InvalidRequest):
    """The request body cannot be parsed."""

    default_code = "malformed_json"


class AuthenticationFailed(PosthornError):
    """Missing or invalid credentials."""

    default_code = "auth_missing"


class PermissionDenied(PosthornError):
    """The credential lacks the permission for this action."""

    default_code = "permission_denied"


class NotFound(PosthornError):
    """No such object in this account."""

    default_code = "not_found"


class Conflict(PosthornError):
    """The object already exists or is in a state that forbids this."""

    default_code = "conflict"


class TooLarge(PosthornError):
    """The request is larger than allowed."""

    default_code = "too_large"


class LimitExceeded(PosthornError):
    """A quota or rate limit was reached."""

    default_code = "limit_exceeded"

    def __init__(
        self,
        code: str | None = None,
        *,
        retry_after: int = 60,
        field: str | None = None,
        **params: Any,
    ):
        self.retry_after = retry_after
        super().__init__(code, field=field, retry_after=retry_after, **params)


def _rebuild(
    cls: type[PosthornError], code: str, field: str | None, params: dict[str, Any]
) -> PosthornError:
    return cls(code, field=field, **params)
