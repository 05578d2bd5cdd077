"""A request without a key costs the web process nothing like its body: the key is checked
before the body is read, and each /v1 route refuses a body larger than it needs (413).

`posthorn web` runs as a subprocess; its resident memory is read from /proc while eight
clients each push a 24 MB JSON array of empty objects (which, parsed, is hundreds of MB of
Python objects) at /v1/emails without a key.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.memory import peak_rss_during
from tests.support.web_process import WebProcess

CLIENTS = 8
BODY_BYTES = 24 * 1024 * 1024
ALLOWED_GROWTH = 100 * 1024 * 1024


@pytest.fixture
def web(tmp_path: Path) -> Iterator[WebProcess]:
    with WebProcess(tmp_path / "data") as process:
        yield process


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", **headers}
        )
        return conn.getresponse().status
    finally:
        conn.close()


def test_unauthenticated_bodies_are_not_parsed(
    web: WebProcess,
) -> None:
    pid, port = web.pid, web.port
    body = b"[" + b",".join([b"{}"] * ((BODY_BYTES - 2) // 3)) + b"]"
    # Warm the route up (imports, caches) so that idle is idle.
    for _ in range(3):
        assert _post(port, "/v1/emails", b"[{}]", {}) == 401
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses, memory = peak_rss_during(
            pid,
            lambda: list(pool.map(lambda _: _post(port, "/v1/emails", body, {}), range(CLIENTS))),
        )
    print(memory)
    assert all(status in (401, 413) for status in statuses), statuses
    assert memory.growth < ALLOWED_GROWTH, f"peak RSS grew by {memory.growth / 2**20:.0f} MB"
    # The server is still there and answers.
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
