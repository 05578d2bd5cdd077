"""A request without a key costs the web process nothing like its body: the key is checked
before the body is read, and each /v1 route refuses a body larger than it needs (413).

`posthorn web` runs as a subprocess; its resident memory is read from /proc while eight
clients each push a 24 MB JSON array of empty objects (which, parsed, is hundreds of MB of
Python objects) at /v1/emails without a key.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.web_process import WebProcess

CLIENTS = 8
BODY_BYTES = 24 * 1024 * 1024
ALLOWED_GROWTH = 100 * 1024 * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


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
    idle = _status_kb(pid, "VmRSS") * 1024
    # Reset the peak resident size (proc(5), clear_refs "5"), then sample as a fallback.
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    peak = idle
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _status_kb(pid, "VmRSS") * 1024)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = list(pool.map(lambda _: _post(port, "/v1/emails", body, {}), range(CLIENTS)))
    finally:
        done.set()
        sampler.join()
    peak = max(peak, _status_kb(pid, "VmHWM") * 1024)
    growth = peak - idle
    print(f"idle RSS {idle / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB, +{growth / 2**20:.1f} MB")
    assert all(status in (401, 413) for status in statuses), statuses
    assert growth < ALLOWED_GROWTH, f"peak RSS grew by {growth / 2**20:.0f} MB"
    # The server is still there and answers.
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
