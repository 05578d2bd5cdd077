"""The v2 form API carries its token in the body, yet a request without a valid token costs
the web process nothing like its body: the body is scanned for the token as it streams in and
kept on disk, and it is parsed only for a caller whose token is a key.

`posthorn web` runs as a subprocess; its resident memory is read from /proc while eight
clients each push a 24 MB body without a token at /api/v2/sendEmailByList: a JSON object
holding an array of empty objects (hundreds of MB once parsed), a bare JSON array, and a
urlencoded form. A keyed request with a large message still goes through.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.memory import peak_rss_during
from tests.support.web_process import WebProcess

CLIENTS = 8
BODY_BYTES = 24 * 1024 * 1024
ALLOWED_GROWTH = 100 * 1024 * 1024
PATH = "/api/v2/sendEmailByList"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    with WebProcess(tmp_path_factory.mktemp("v2") / "data") as process:
        yield process


def _post(port: int, body: bytes, content_type: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", PATH, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _empty_objects(size: int) -> bytes:
    return b",".join([b"{}"] * (size // 3))


BODIES = {
    # A JSON object: read and scanned, never parsed; no token in it, so 401.
    "json-object": (JSON, 401, b'{"list_id": "1", "x": [' + _empty_objects(BODY_BYTES) + b"]}"),
    # Not an object, so no token can be in it: refused at its first byte.
    "json-array": (JSON, 400, b"[" + _empty_objects(BODY_BYTES) + b"]"),
    "urlencoded": (FORM, 401, b"list_id=1&message=" + b"%3Cp%3E" * (BODY_BYTES // 7)),
}


@pytest.mark.parametrize("kind", list(BODIES))
def test_unauthenticated_v2_bodies_are_not_parsed(web: WebProcess, kind: str) -> None:
    content_type, expected, body = BODIES[kind]
    pid, port = web.pid, web.port
    # Warm the route up (imports, caches) so that idle is idle.
    for _ in range(3):
        assert _post(port, b'{"list_id": "1"}', JSON)[0] == 401
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers, memory = peak_rss_during(
            pid, lambda: list(pool.map(lambda _: _post(port, body, content_type), range(CLIENTS)))
        )
    elapsed = time.monotonic() - started
    print(f"{kind}: {memory}, {elapsed:.1f} s for {CLIENTS} requests")
    assert all(status == expected for status, _ in answers), [s for s, _ in answers]
    assert all(answer["status"] == "ERROR" for _, answer in answers), answers[0]
    if expected == 401:
        assert all(answer["error"] == "Missing API key" for _, answer in answers), answers[0]
    assert memory.growth < ALLOWED_GROWTH, f"peak RSS grew by {memory.growth / 2**20:.0f} MB"
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


def test_a_keyed_v2_request_with_a_large_message_still_goes_through(web: WebProcess) -> None:
    """The token after a 6 MB message (so found only at the end of the body), as JSON and as
    a urlencoded form: the list is looked up, so the request got past the token."""
    account = web.cli("admin", "create-account", "acme")
    key = str(web.cli("admin", "create-key", "--account", account["id"], "--name", "v2")["key"])
    message = "<p>" + "x" * (6 * 1024 * 1024) + "</p>"
    fields = {"list_id": "999999", "sender_email": "a@acme.test", "subject": "s"}
    for content_type, body in (
        (JSON, json.dumps({**fields, "message": message, "token": key}).encode()),
        (FORM, urlencode({**fields, "message": message, "token": key}).encode()),
    ):
        status, answer = _post(web.port, body, content_type)
        assert status == 404 and answer["status"] == "ERROR", (content_type, status, answer)
        wrong = body.replace(key.encode(), b"phk_wrong")
        status, answer = _post(web.port, wrong, content_type)
        assert status == 401 and answer["status"] == "ERROR", (content_type, status, answer)
