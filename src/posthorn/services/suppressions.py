"""The account's suppression list: addresses that must not receive mail, and why.

Hard bounces and complaints add to it automatically (worker, inbound listener), unsubscribes
through the tracking pages, and people through the API (reason ``manual``). Intake and the
worker both consult it: a suppressed recipient is ``rejected``, never sent to.
"""

from __future__ import annotations

from typing import Any

from posthorn.domain.addresses import AddressError, parse_address
from posthorn.domain.permissions import Permission
from posthorn.errors import Conflict, InvalidRequest, NotFound
from posthorn.services.accounts import Principal
from posthorn.store import suppressions as repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

REASONS = ("bounce", "complaint", "unsubscribe", "manual")
COMPLAINT = "complaint"


class Suppressions:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(
        self,
        account_id: str,
        *,
        page: int,
        per_page: int,
        reason: str | None = None,
        search: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        if reason is not None and reason not in REASONS:
            raise InvalidRequest("invalid_filter", field="reason", value=reason[:40])
        async with self._db.read() as conn:
            return await repo.page(
                conn,
                account_id,
                reason=reason,
                search=search,
                offset=(page - 1) * per_page,
                limit=per_page,
            )

    async def add(
        self, caller: Principal, address: str, *, reason: str = "manual", scope: str = ""
    ) -> bool:
        """Suppress an address; ``False`` when it already was."""
        caller.require(Permission.SENDING_ACCESS)
        try:
            email = parse_address(address).email
        except AddressError as exc:
            raise InvalidRequest("invalid_address", field="address", value=address[:100]) from exc
        if reason not in REASONS:
            raise InvalidRequest("invalid_filter", field="reason", value=reason[:40])
        async with self._db.write() as conn:
            return await repo.add(
                conn,
                account_id=caller.account_id,
                address=email,
                reason=reason,
                scope=scope,
                now=utcnow(),
            )

    async def remove(self, caller: Principal, address: str, *, force: bool = False) -> None:
        """Allow sending to the address again, in every scope.

        Only a ``full_access`` key may: a key that sends mail must not be able to undo what
        recipients and their servers said about it. A complaint (the recipient reported the
        mail as spam, RFC 5965) is lifted only with ``force``: mailing a complainer again
        harms the sender's reputation with every mailbox provider, so it takes a deliberate
        second step (:class:`Conflict` without it).
        """
        caller.require(Permission.FULL_ACCESS)
        email = address.strip()
        async with self._db.write() as conn:
            found = await repo.reasons(conn, caller.account_id, email)
            if not found:
                raise NotFound(resource="suppression")
            if COMPLAINT in found and not force:
                raise Conflict("suppression_complaint", address=email.lower()[:320])
            await repo.remove(conn, caller.account_id, email, utcnow())
