"""Email addresses: parsing "Name <local@domain>" and formatting them back, with no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox. ``email`` is ``local@domain`` with the domain lower-cased."""

    email: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    @property
    def local_part(self) -> str:
        return self.email.rpartition("@")[0]


class AddressError(ValueError):
    """The text is not one valid mailbox."""
