"""Reading the v2 API's requests: form fields (or a JSON object), uploaded files, and arrays
written the way PHP and jQuery write them.

An array such as ``delivery_list`` may arrive as

* indexed fields: ``delivery_list[0]=a@x.com``, ``delivery_list[1]=b@x.com``;
* indexed objects: ``delivery_list[0][email]=…``, ``delivery_list[0][subject]=…``;
* appended fields: ``delivery_list[]=…`` (each ``[]`` starts a new element, as in PHP);
* one JSON string: ``delivery_list=["a@x.com", "b@x.com"]``;
* the field repeated: ``delivery_list=a@x.com&delivery_list=b@x.com``.

Elements come out in index order (numbers numerically, then other keys as they came).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from pathlib import PurePosixPath
from tempfile import SpooledTemporaryFile
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request

from posthorn.domain.addresses import Address, AddressError, format_address, parse_address
from posthorn.errors import InvalidRequest, MalformedRequest
from posthorn.mime.compose import Attachment

FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
MAX_FILES = 20
MAX_NUMBER = 2**63 - 1  # PostgreSQL BIGINT
MAX_DEPTH = 2  # name[i][field]
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

Value = str | UploadFile
# Checks a token found in the body (None: none there), raising if it is not a usable key.
Unlock = Callable[[str | None], Awaitable[object]]

# Before the caller is known, a JSON or urlencoded body is kept on disk past SPOOL_BYTES and
# scanned for its token as it streams in; it is parsed only once that token is a key, or when
# it is no larger than UNKEYED_PARSE_BYTES (parsing that much costs next to nothing).
UNKEYED_PARSE_BYTES = 64 * 1024
SPOOL_BYTES = 1024 * 1024
# A token member or field, complete (closing quote, or the "&" after it). In valid JSON an
# unescaped quote only delimits a string, so '"token":' after "{" or "," is always a key.
_JSON_TOKEN = re.compile(rb'[{,]\s{0,64}"token"\s{0,64}:\s{0,64}("(?:[^"\\]|\\.){0,300}")')
_FORM_TOKEN = re.compile(rb"&token=([^&]{0,600})&")
_TOKEN_SPAN = 1024  # longer than any match above: the scan overlaps chunks by this much
# What each match contains, found much faster than the match is tried at every "{" and ",".
_MARKS = {_JSON_TOKEN: b'"token"', _FORM_TOKEN: b"&token="}


def split_key(key: str) -> tuple[str, list[str]] | None:
    """``delivery_list[0][email]`` → ``("delivery_list", ["0", "email"])``; None when the
    key is not in that form."""
    match = _KEY.match(key)
    if match is None:
        return None
    return match.group(1), _PART.findall(match.group(2))


def form_array(pairs: Iterable[tuple[str, Any]], name: str, *, max_items: int) -> list[Any] | None:
    """The array ``name`` from (key, value) pairs, or None when the form has no such field."""
    plain: list[Any] = []
    elements: dict[str, Any] = {}
    appended = 0
    for key, value in pairs:
        parsed = split_key(key)
        if parsed is None or parsed[0] != name:
            continue
        path = parsed[1]
        if not path:
            plain.append(value)
            continue
        if len(path) > MAX_DEPTH:
            raise InvalidRequest("form_array_invalid", field=key[:100], reason="nested too deep")
        index = path[0]
        if index == "":
            index = f"[]{appended}"
            appended += 1
        if len(path) == 1:
            elements[index] = value
        else:
            element = elements.setdefault(index, {})
            if not isinstance(element, dict):
                raise InvalidRequest("form_array_invalid", field=key[:100], reason="mixed shapes")
            element[path[1]] = value
        if len(elements) > max_items:
            raise InvalidRequest(
                "batch_too_large", field=name, limit=max_items, count=len(elements)
            )
    if not elements and not plain:
        return None
    items = _from_plain(plain, name) if plain else []
    items += [elements[k] for k in sorted(elements, key=_order(list(elements)))]
    if len(items) > max_items:
        raise InvalidRequest("batch_too_large", field=name, limit=max_items, count=len(items))
    return items


def _from_plain(values: list[Any], name: str) -> list[Any]:
    if len(values) == 1 and isinstance(values[0], str) and values[0].lstrip()[:1] in "[{":
        try:
            decoded = json.loads(values[0])
        except ValueError as exc:
            raise InvalidRequest("form_array_invalid", field=name, reason="bad JSON") from exc
        return decoded if isinstance(decoded, list) else [decoded]
    return [v for v in values if not (isinstance(v, str) and not v.strip())]


def _order(keys: list[str]) -> Any:
    first_seen = {key: position for position, key in enumerate(keys)}

    def key(index: str) -> tuple[int, int, int]:
        if index.isdigit():
            return (0, int(index), 0)
        return (1, 0, first_seen[index])

    return key


class Fields:
    """A request's fields, whether they came as a form, a query string or a JSON object."""

    def __init__(self, pairs: list[tuple[str, Value]]) -> None:
        self.pairs = pairs

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fields:
        """Top-level members as fields; arrays and objects as JSON text (see ``array``)."""
        pairs: list[tuple[str, Value]] = []
        for key, value in data.items():
            if isinstance(value, list | dict):
                pairs.append((str(key), json.dumps(value)))
            elif value is not None:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                pairs.append((str(key), text))
        return cls(pairs)

    def text(self, name: str) -> str | None:
        """The first value of a plain field (a file there is refused)."""
        for key, value in self.pairs:
            if key == name:
                if not isinstance(value, str):
                    raise InvalidRequest("field_type", field=name, reason="must be text")
                return value
        return None

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None or not value.strip():
            raise InvalidRequest("field_required", field=name)
        return value

    def flag(self, name: str, *, default: bool) -> bool:
        value = self.text(name)
        if value is None or not value.strip():
            return default
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise InvalidRequest("flag_invalid", field=name)

    def array(self, name: str, *, max_items: int) -> list[Any] | None:
        return form_array(self.pairs, name, max_items=max_items)

    def files(self, *names: str) -> list[tuple[str, UploadFile]]:
        """Uploaded files under any of ``names`` (also ``name[]`` and ``name[0]``)."""
        found: list[tuple[str, UploadFile]] = []
        for key, value in self.pairs:
            parsed = split_key(key)
            if parsed is None or parsed[0] not in names:
                continue
            if not isinstance(value, UploadFile):
                if isinstance(value, str) and not value:
                    continue  # an empty file input
                raise InvalidRequest("file_required", field=key[:100])
            found.append((key, value))
        return found


# ── reading a request ───────────────────────────────────────────────────────────────────


@asynccontextmanager
async def read_fields(
    request: Request, *, max_fields: int, max_part_size: int, unlock: Unlock | None = None
) -> AsyncIterator[Fields]:
    """The request's fields: the form (or JSON object) and the query string, in that order.
    Uploaded files stay readable until the block exits.

    ``unlock``: the caller is not known yet; a JSON or urlencoded body larger than
    ``UNKEYED_PARSE_BYTES`` is parsed only after ``unlock`` accepts the token found in it."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    query: list[tuple[str, Value]] = list(request.query_params.multi_items())
    if request.method == "GET" or (not media_type and await _is_empty(request)):
        yield Fields(query)
    elif media_type == "multipart/form-data":
        try:
            async with request.form(
                max_files=MAX_FILES, max_fields=max_fields, max_part_size=max_part_size
            ) as form:
                yield Fields([*form.multi_items(), *query])
        except StarletteHTTPException as exc:  # python-multipart could not read the body
            raise MalformedRequest("form_invalid", reason=str(exc.detail)[:200]) from exc
        except ClientDisconnect as exc:  # also what the body size limit looks like from here
            raise MalformedRequest("form_invalid", reason="the body ended early") from exc
    elif media_type == "application/x-www-form-urlencoded":
        body = await _read_body(request, _FORM_TOKEN, unlock)
        # Decoded off the event loop: a large form takes a while in pure Python.
        pairs = await asyncio.to_thread(_form_pairs, body, max_fields)
        yield Fields([*pairs, *query])
    elif media_type == "application/json":
        body = await _read_body(request, _JSON_TOKEN, unlock)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise MalformedRequest() from exc
        if not isinstance(data, dict):
            raise MalformedRequest()
        yield Fields([*Fields.from_json(data).pairs, *query])
    else:
        raise MalformedRequest("form_required")


async def _is_empty(request: Request) -> bool:
    """Whether the body is empty, reading no more of it than its first bytes."""
    try:
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                if chunk:
                    return False
    except ClientDisconnect:
        pass
    return True


async def _read_body(request: Request, token: re.Pattern[bytes], unlock: Unlock | None) -> bytes:
    """The body; with ``unlock``, only if it is small or ``unlock`` accepts its token.

    A JSON body that is not an object is refused at its first byte: it has no token, and
    (from a caller with a key) it would be refused anyway."""
    if unlock is None:
        try:
            return await request.body()
        except ClientDisconnect as exc:
            raise MalformedRequest("form_invalid", reason="the body ended early") from exc
    is_json = token is _JSON_TOKEN
    found: bytes | None = None
    window = b"" if is_json else b"&"  # a form's first field follows no "&"
    size = 0
    started = not is_json
    with SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        try:
            async with aclosing(request.stream()) as stream:
                async for chunk in stream:
                    if not started:
                        head = chunk.lstrip(b" \t\r\n")[:1]
                        started = bool(head)
                        _check_json_start(head)
                    spool.write(chunk)
                    size += len(chunk)
                    if found is None:
                        window = window[-_TOKEN_SPAN:] + chunk
                        match = token.search(window) if _MARKS[token] in window else None
                        found = match.group(1) if match else None
        except ClientDisconnect as exc:
            raise MalformedRequest("form_invalid", reason="the body ended early") from exc
        if found is None and not is_json:
            match = token.search(window[-_TOKEN_SPAN:] + b"&")  # the last field
            found = match.group(1) if match else None
        if size > UNKEYED_PARSE_BYTES:
            await unlock(_token_text(found, is_json=is_json))
        spool.seek(0)
        return spool.read()


def _check_json_start(head: bytes) -> None:
    """Refuse a JSON body whose first byte past white space cannot start an object. Bytes of
    an encoding other than ASCII (a byte-order mark, UTF-16) are left to the parser."""
    if head and head != b"{" and head[0] < 0x80 and head != b"\x00":
        raise MalformedRequest()


def _token_text(found: bytes | None, *, is_json: bool) -> str | None:
    if found is None:
        return None
    try:
        text = json.loads(found) if is_json else unquote_plus(found.decode("latin-1"))
    except ValueError as exc:
        raise MalformedRequest() from exc
    return (text.strip() or None) if isinstance(text, str) else None


def _form_pairs(body: bytes, max_fields: int) -> list[tuple[str, Value]]:
    """Fields of a urlencoded body, decoded as Starlette decodes them (percent escapes as
    UTF-8, other bytes as Latin-1)."""
    try:
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=max_fields)
    except ValueError as exc:
        raise MalformedRequest("form_invalid", reason=f"more than {max_fields} fields") from exc
    return list(pairs)


def sender(fields: Fields) -> str:
    """``sender_email`` with ``sender_name`` as its display name."""
    email = fields.required("sender_email").strip()
    name = (fields.text("sender_name") or "").strip()
    if not name:
        return email
    try:
        return format_address(Address(email=parse_address(email).email, name=name))
    except AddressError:
        return email  # the service says what is wrong with it


def parse_number(text: str, field: str) -> int:
    """A numeric id: a whole number that fits PostgreSQL's BIGINT."""
    text = text.strip()
    if not text.isdigit() or not 0 < int(text) <= MAX_NUMBER:
        raise InvalidRequest("number_invalid", field=field)
    return int(text)


async def attachments(fields: Fields) -> list[Attachment]:
    """Files sent as ``attachment`` (or ``attachment[]``, ``attachments``…)."""
    files: list[Attachment] = []
    for index, (key, upload) in enumerate(fields.files("attachment", "attachments")):
        content = await upload.read()
        if not upload.filename and not content:
            continue  # a file input left empty
        # Old browsers send the whole client path; only its last part is the file's name.
        filename = PurePosixPath((upload.filename or "").replace("\\", "/")).name
        content_type = upload.content_type or "application/octet-stream"
        try:
            files.append(Attachment(filename or f"attachment-{index + 1}", content, content_type))
        except ValueError as exc:
            raise InvalidRequest(
                "content_type_invalid", field=key[:100], value=content_type[:100]
            ) from exc
    return files


def form_schema(names: tuple[str, ...]) -> dict[str, Any]:
    """The OpenAPI request body of a method taking ``token`` and ``names`` ("*": required)."""
    fields = ("token*", *names)
    properties = {
        name.rstrip("*"): {"type": "string", "format": "binary"}
        if name == "attachment"
        else {"type": "string"}
        for name in fields
    }
    schema = {
        "type": "object",
        "properties": properties,
        "required": [name.rstrip("*") for name in fields if name.endswith("*")],
    }
    return {
        "requestBody": {
            "content": {media: {"schema": schema} for media in sorted(FORM_TYPES)},
        }
    }
