"""The settings reference (a Markdown table) generated from the Settings class.

    .venv/bin/python scripts/settings_reference.py           # print it
    .venv/bin/python scripts/settings_reference.py --write   # put it into README.md (make docs)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from posthorn.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        if name == "hostname":
            return "the machine's FQDN"
        value = field.default_factory()  # type: ignore[call-arg]
        return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if field.default in (None, ""):
        return ""
    return str(field.default)


def table() -> str:
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _default(name)
        default_cell = f"`{default}`" if default else ""
        lines.append(f"| `POSTHORN_{name.upper()}` | {default_cell} | {field.description} |")
    return "\n".join(lines)


def block() -> str:
    return f"{START}\n{table()}\n{END}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        text = README.read_text()
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        README.write_text(pattern.sub(lambda _: block(), text))
    else:
        print(block())
