"""Wire formats shared by the native routes."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp(value: datetime | None) -> str | None:
    """The seed's timestamp form: ``2024-01-15T10:30:00.000000Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: str) -> datetime:
    """ISO-8601; a time without an offset is UTC."""
    parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
