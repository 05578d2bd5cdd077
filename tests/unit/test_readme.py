"""The README's settings reference is the one generated from the Settings class."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_settings_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("ref", ROOT / "scripts" / "settings_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    assert module.block() in readme, "run `make docs` to update README.md"
