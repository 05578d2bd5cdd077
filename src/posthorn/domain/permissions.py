"""API-key permissions, from the "Email Transactional REST API": each level includes the next."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    FULL_ACCESS = "full_access"  # everything: create, send, delete
    SENDING_ACCESS = "sending_access"  # send email, and read
    READ_ONLY = "read_only"  # read only


_RANK = {Permission.READ_ONLY: 0, Permission.SENDING_ACCESS: 1, Permission.FULL_ACCESS: 2}


def allows(held: Permission | str, needed: Permission | str) -> bool:
    """Whether a key with ``held`` may do what needs ``needed``."""
    return _RANK[Permission(held)] >= _RANK[Permission(needed)]
