"""How the v2 dialect finds the token of a large body before parsing it: a scan across the
chunks the body arrives in, wherever the chunk borders fall."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.requests import Request
from starlette.types import Message

from posthorn.dialects.v2_forms import UNKEYED_PARSE_BYTES, read_fields
from posthorn.errors import AuthenticationFailed, MalformedRequest

MESSAGE = "<p>" + "é x " * (UNKEYED_PARSE_BYTES // 3) + "</p>"
TOKEN = 'phk_"odd"\\token+&='


class Body:
    """An ASGI request whose body comes in chunks of ``size`` bytes; counts what was read."""

    def __init__(self, body: bytes, content_type: str, size: int) -> None:
        self.chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
        self.read = 0
        headers = [(b"content-type", content_type.encode())]
        scope = {"type": "http", "method": "POST", "headers": headers, "query_string": b""}
        self.request = Request(scope, self.receive)

    async def receive(self) -> Message:
        chunk = self.chunks[self.read]
        self.read += 1
        return {"type": "http.request", "body": chunk, "more_body": self.read < len(self.chunks)}


class Lock:
    def __init__(self) -> None:
        self.tried: list[str | None] = []

    async def __call__(self, token: str | None) -> None:
        self.tried.append(token)
        if token != TOKEN:
            raise AuthenticationFailed("auth_invalid" if token else "auth_missing")


async def fields_of(body: Body, lock: Lock) -> dict[str, Any]:
    async with read_fields(body.request, max_fields=100, max_part_size=2**25, unlock=lock) as f:
        return {key: value for key, value in f.pairs}


def bodies(token_first: bool, key: str = "token", token: str = TOKEN) -> list[tuple[str, bytes]]:
    items = [("subject", "s"), ("message", MESSAGE)]
    items = [(key, token), *items] if token_first else [*items, (key, token)]
    as_json = json.dumps(dict(items), ensure_ascii=False).encode()
    as_form = urlencode(items).encode()
    return [("application/json", as_json), ("application/x-www-form-urlencoded", as_form)]


@pytest.mark.parametrize("size", [1, 7, 64 * 1024])
@pytest.mark.parametrize("token_first", [True, False])
async def test_the_token_is_found_across_chunk_borders(size: int, token_first: bool) -> None:
    for content_type, data in bodies(token_first):
        lock = Lock()
        fields = await fields_of(Body(data, content_type, size), lock)
        assert lock.tried == [TOKEN], content_type
        assert fields["message"] == MESSAGE and fields["token"] == TOKEN


@pytest.mark.parametrize(("key", "token"), [("token", "phk_wrong"), ("tokens", TOKEN)])
async def test_a_large_body_without_a_usable_token_is_not_parsed(key: str, token: str) -> None:
    for content_type, data in bodies(False, key, token):
        lock = Lock()
        with pytest.raises(AuthenticationFailed):
            await fields_of(Body(data, content_type, 4096), lock)
        assert lock.tried == ([token] if key == "token" else [None]), content_type


async def test_a_json_body_that_is_not_an_object_is_refused_at_its_first_byte() -> None:
    body = Body(b"  \n" + b"[" + b"{}," * 100_000 + b"{}]", "application/json", 3)
    with pytest.raises(MalformedRequest):
        await fields_of(body, Lock())
    assert body.read == 2  # white space, then "[{}"


async def test_a_small_body_is_parsed_as_before() -> None:
    """Small bodies are read before the token is checked (the caller checks it after)."""
    lock = Lock()
    fields = await fields_of(Body(b'{"subject": "s"}', "application/json", 5), lock)
    assert fields == {"subject": "s"} and lock.tried == []
    with pytest.raises(MalformedRequest):
        await fields_of(Body(b"{not json", "application/json", 5), Lock())
