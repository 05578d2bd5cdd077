"""The resident memory of another process while something happens: what the tests that send
hostile bodies measure (peak RSS above idle, proc(5))."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def status_kb(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in kB, such as VmRSS or VmHWM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@dataclass(frozen=True)
class Peak:
    idle: int  # bytes resident before
    peak: int  # the most resident during

    @property
    def growth(self) -> int:
        return self.peak - self.idle

    def __str__(self) -> str:
        mb = 2**20
        return (
            f"idle RSS {self.idle / mb:.1f} MB, peak {self.peak / mb:.1f} MB, "
            f"+{self.growth / mb:.1f} MB"
        )


def peak_rss_during(pid: int, action: Callable[[], T]) -> tuple[T, Peak]:
    """Run ``action`` and return its result with the process's peak resident size meanwhile:
    the kernel's high-water mark, reset first (clear_refs "5"), and samples as a fallback."""
    idle = status_kb(pid, "VmRSS") * 1024
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    peak = idle
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, status_kb(pid, "VmRSS") * 1024)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return result, Peak(idle, max(peak, status_kb(pid, "VmHWM") * 1024))
