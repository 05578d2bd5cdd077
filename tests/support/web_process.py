"""`posthorn web` as a subprocess on a free loopback port, with its own data directory.

with WebProcess(data_dir, extra_env) as web:
    web.url, web.pid, web.cli("admin", "create-account", "acme", "--json")
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.conftest import free_port

START_SECONDS = 60


class WebProcess:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("POSTHORN_")},
            "POSTHORN_DATA_DIR": str(data_dir),
            "POSTHORN_HTTP_PORT": str(self.port),
            "POSTHORN_WEB_WORKERS": "1",
            **(env or {}),
        }
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def cli(self, *args: str) -> dict[str, Any]:
        """Run ``posthorn ARGS --json`` against the same data and return its JSON answer."""
        done = subprocess.run(
            [sys.executable, "-m", "posthorn", *args, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def __enter__(self) -> WebProcess:
        migrated = subprocess.run(
            [sys.executable, "-m", "posthorn", "migrate"],
            env=self.env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        self._proc = subprocess.Popen([sys.executable, "-m", "posthorn", "web"], env=self.env)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self._proc.poll() is None, "posthorn web exited early"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self._stop()
        raise AssertionError(f"posthorn web did not answer /healthz within {START_SECONDS} s")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
