"""What the dialects need beyond the native API, kept here so that they stay translators.

* :meth:`DialectSupport.default_sender` — the From address for a request that names none:
  the account's default sender, else its oldest active sender.
* :meth:`DialectSupport.submit` — the intake, with one refusal told apart: a From domain that
  is not verified *and* no default relay means the account has no way at all to send it
  (``no_sending_provider``), which APIs built around an "SMTP provider" report on their own.
* :meth:`DialectSupport.email_by_message_id` — an email looked up by its RFC 5322 Message-ID.
"""

from __future__ import annotations

from posthorn.errors import InvalidRequest, NotFound, PermissionDenied
from posthorn.services.admission import Accepted
from posthorn.services.emails import EmailDetail, Emails
from posthorn.services.intake import Intake, SendRequest
from posthorn.store import dialect_lookups as lookups
from posthorn.store import relays
from posthorn.store.database import Database

MAX_MESSAGE_ID_CHARS = 255  # the emails.message_id column


def bare_message_id(text: str) -> str:
    """``<id@host>`` or ``id@host`` → ``id@host`` (RFC 5322 §3.6.4 msg-id, brackets off)."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


class DialectSupport:
    def __init__(self, db: Database, *, intake: Intake, emails: Emails) -> None:
        self._db = db
        self._intake = intake
        self._emails = emails

    async def default_sender(self, account_id: str) -> str:
        """The account's default sender, else the address of its oldest active sender.

        Raises :class:`PermissionDenied` (``no_default_sender``) when there is neither.
        """
        async with self._db.read() as conn:
            found = await lookups.account_default_sender(conn, account_id)
            if found is None:
                found = await lookups.oldest_sender(conn, account_id)
        if found is None:
            raise PermissionDenied("no_default_sender", field="from")
        return found

    async def submit(self, request: SendRequest) -> Accepted:
        """:meth:`Intake.submit`, except for a From domain that is not a verified domain of
        the account: :class:`PermissionDenied` ``no_sending_provider`` when the account has
        no default relay either, :class:`InvalidRequest` ``domain_not_verified`` when it has
        one (Posthorn sends only from verified domains, through a relay too)."""
        try:
            return await self._intake.submit(request)
        except PermissionDenied as exc:
            if exc.code != "domain_not_verified":
                raise
            domain = str(exc.params.get("domain", ""))
            async with self._db.read() as conn:
                relay = await relays.default_relay(conn, request.account_id)
            if relay is None:
                raise PermissionDenied("no_sending_provider", field="from", domain=domain) from exc
            raise InvalidRequest("domain_not_verified", field="from", domain=domain) from exc

    async def email_by_message_id(self, account_id: str, message_id: str) -> EmailDetail:
        """The account's email with that Message-ID, with or without angle brackets."""
        bare = bare_message_id(message_id)
        if not bare or len(bare) > MAX_MESSAGE_ID_CHARS:
            raise NotFound(resource="message")
        async with self._db.read() as conn:
            email_id = await lookups.email_id_by_message_id(conn, account_id, bare)
        if email_id is None:
            raise NotFound(resource="message")
        return await self._emails.get(account_id, email_id)
