"""Print the settings reference (a Markdown table) from the Settings class.

    .venv/bin/python scripts/settings_reference.py   # paste between the README markers
"""

from __future__ import annotations

from posthorn.settings import Settings

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


if __name__ == "__main__":
    print(START)
    print(table())
    print(END)
