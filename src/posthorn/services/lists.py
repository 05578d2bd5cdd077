"""Mailing lists and contacts: CRUD, CSV imports, per-list subscription state.

Subscription is per list. Unsubscribing an address from a list marks its contact row *and*
suppresses the address in the list's scope (reason ``unsubscribe``), the same record an
unsubscribe link in a list email leaves; subscribing again lifts both. Bulk jobs skip a
contact when either says so.

Permissions: reading needs any key; creating and renaming lists, changing contacts and
importing need ``sending_access``; deleting a list needs ``full_access``.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import json
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posthorn.domain.addresses import AddressError, parse_address
from posthorn.domain.permissions import Permission
from posthorn.errors import Conflict, InvalidRequest, NotFound
from posthorn.services.accounts import Principal
from posthorn.store import lists as repo
from posthorn.store import numeric_ids, suppressions
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

if TYPE_CHECKING:
    from posthorn.services.container import Services

MAX_NAME_CHARS = 200
MAX_VARIABLES = 50
MAX_VARIABLES_BYTES = 8192
MAX_CONTACTS_PER_REQUEST = 1000
MAX_LISTS = 10_000  # lists one unsubscribe "from all lists" touches
MAX_RECORD_CHARS = 100_000  # one CSV record; the csv module's own field limit is 131,072
IMPORT_BATCH = 200  # contacts per INSERT (7 columns: well inside SQLite's 32,766 parameters)
READ_CHUNK = 64 * 1024
EMAIL_COLUMNS = ("email", "e-mail", "email_address", "email address")

Progress = Callable[[int, int], None]  # (bytes read, total bytes; 0 when unknown)


@dataclass(slots=True)
class ImportReport:
    imported: int = 0
    invalid: int = 0
    duplicate: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # the first few, for the caller

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def normalise_email(text: str) -> str:
    """The form contacts are stored in: the bare address, lower case."""
    return parse_address(text).email.lower()


def check_variables(variables: Any, field_name: str = "variables") -> dict[str, Any]:
    if variables is None:
        return {}
    if not isinstance(variables, dict) or len(variables) > MAX_VARIABLES:
        raise InvalidRequest("variables_invalid", field=field_name, limit=MAX_VARIABLES)
    if len(json.dumps(variables, default=str)) > MAX_VARIABLES_BYTES:
        raise InvalidRequest("variables_invalid", field=field_name, limit=MAX_VARIABLES)
    return {str(k): v for k, v in variables.items()}


class CsvRecords:
    """Complete CSV records (RFC 4180) from bytes that arrive in pieces.

    Only the current record is held: a record ends at a newline outside quotes, which an
    even number of ``"`` so far tells (an escaped quote is two of them).
    """

    def __init__(self, *, max_record_chars: int = MAX_RECORD_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._pending = ""
        self._scanned = 0
        self._quotes = 0
        self._max = max_record_chars
        self.delimiter: str | None = None
        self.records = 0

    def feed(self, data: bytes, *, final: bool = False) -> list[tuple[int, list[str]]]:
        """The records completed by ``data``, numbered from 1, without empty ones."""
        try:
            text = self._decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            raise InvalidRequest("csv_invalid", line=self.records + 1, reason="not UTF-8") from exc
        text = self._pending + text
        found: list[str] = []
        start, pos, quotes = 0, self._scanned, self._quotes
        while (end := text.find("\n", pos)) >= 0:
            quotes += text.count('"', pos, end + 1)
            pos = end + 1
            if quotes % 2 == 0:
                found.append(text[start:pos])
                start, quotes = pos, 0
        self._pending, self._scanned, self._quotes = text[start:], pos - start, quotes
        if len(self._pending) > self._max:
            raise InvalidRequest("csv_record_too_long", line=self.records + 1, limit=self._max)
        if final and self._pending.strip():
            found.append(self._pending)
            self._pending = ""
        parsed = [
            (self.records + n, self._parse(r, self.records + n)) for n, r in enumerate(found, 1)
        ]
        self.records += len(found)
        return [(number, row) for number, row in parsed if row]

    def _parse(self, record: str, number: int) -> list[str]:
        if self.delimiter is None:
            counts = {d: record.count(d) for d in (",", ";", "\t")}
            self.delimiter = max(counts, key=lambda d: (counts[d], d == ","))
        try:
            row = next(csv.reader([record], delimiter=self.delimiter, strict=True), [])
        except csv.Error as exc:
            raise InvalidRequest("csv_invalid", line=number, reason=str(exc)) from exc
        return row if any(cell.strip() for cell in row) else []


class Lists:
    def __init__(self, db: Database) -> None:
        self._db = db

    # ── lists ───────────────────────────────────────────────────────────────────────────

    async def create(self, caller: Principal, name: str) -> dict[str, Any]:
        caller.require(Permission.SENDING_ACCESS)
        now = utcnow()
        list_id = "lst_" + secrets.token_hex(12)
        row: dict[str, Any] = {
            "id": list_id,
            "account_id": caller.account_id,
            "name": _name(name),
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.write() as conn:
            await repo.insert_list(conn, row)
            await numeric_ids.ensure(conn, "list", list_id)
        return await self.get(caller.account_id, list_id)

    async def get(self, account_id: str, list_id: str) -> dict[str, Any]:
        async with self._db.read() as conn:
            row = await repo.get_list(conn, account_id, list_id)
            if row is None:
                raise NotFound(resource="list")
            return (await self._decorate(conn, [row]))[0]

    async def page(
        self, account_id: str, *, page: int, per_page: int
    ) -> tuple[list[dict[str, Any]], int]:
        async with self._db.read() as conn:
            rows, total = await repo.page_lists(
                conn, account_id, offset=(page - 1) * per_page, limit=per_page
            )
            return await self._decorate(conn, rows), total

    async def _decorate(self, conn: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [r["id"] for r in rows]
        counts = await repo.contact_counts(conn, ids)
        numbers = await numeric_ids.numbers(conn, "list", ids)
        for row in rows:
            total, off = counts.get(row["id"], (0, 0))
            row["numeric_id"] = numbers.get(row["id"])
            row["contacts"] = {"total": total, "subscribed": total - off, "unsubscribed": off}
        return rows

    async def rename(self, caller: Principal, list_id: str, name: str) -> dict[str, Any]:
        caller.require(Permission.SENDING_ACCESS)
        async with self._db.write() as conn:
            values = {"name": _name(name), "updated_at": utcnow()}
            if not await repo.update_list(conn, caller.account_id, list_id, values):
                raise NotFound(resource="list")
        return await self.get(caller.account_id, list_id)

    async def delete(self, caller: Principal, list_id: str) -> None:
        caller.require(Permission.FULL_ACCESS)
        async with self._db.write() as conn:
            if not await repo.delete_list(conn, caller.account_id, list_id):
                raise NotFound(resource="list")

    async def resolve(self, account_id: str, number: int) -> str:
        """The list behind a v2 numeric id (404 for another account's or no list)."""
        async with self._db.read() as conn:
            found = await numeric_ids.resolve(conn, number)
            if found is None or found[0] != "list":
                raise NotFound(resource="list")
            if await repo.get_list(conn, account_id, found[1]) is None:
                raise NotFound(resource="list")
        return found[1]

    # ── contacts ────────────────────────────────────────────────────────────────────────

    async def add_contact(
        self, caller: Principal, list_id: str, email: str, variables: Any = None
    ) -> dict[str, Any]:
        caller.require(Permission.SENDING_ACCESS)
        address = _email(email, "email")
        row = self._contact_row(caller.account_id, list_id, address, check_variables(variables))
        async with self._db.write() as conn:
            await self._require_list(conn, caller.account_id, list_id)
            if not await repo.insert_contacts(conn, [row]):
                raise Conflict("contact_exists", email=address)
            return await self._contact(conn, list_id, address)

    async def add_contacts(
        self, caller: Principal, list_id: str, items: Sequence[dict[str, Any]]
    ) -> ImportReport:
        """Add many contacts; bad ones are counted and described, the rest go in."""
        caller.require(Permission.SENDING_ACCESS)
        if len(items) > MAX_CONTACTS_PER_REQUEST:
            raise InvalidRequest("too_many_items", field="contacts", limit=MAX_CONTACTS_PER_REQUEST)
        report = ImportReport()
        rows: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                address = _email(str(item.get("email") or ""), f"contacts[{index}].email")
                variables = check_variables(item.get("variables"), f"contacts[{index}].variables")
            except InvalidRequest as exc:
                report.invalid += 1
                report.errors.append({"index": index, "error": str(exc)})
                continue
            rows.append(self._contact_row(caller.account_id, list_id, address, variables))
        async with self._db.read() as conn:
            await self._require_list(conn, caller.account_id, list_id)
        await self._flush(list_id, caller.account_id, rows, report)
        return report

    async def contacts(
        self,
        account_id: str,
        list_id: str,
        *,
        page: int,
        per_page: int,
        search: str | None = None,
        status: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        if status is not None and status not in repo.CONTACT_STATUSES:
            raise InvalidRequest("invalid_filter", field="status", value=status[:40])
        async with self._db.read() as conn:
            await self._require_list(conn, account_id, list_id)
            return await repo.page_contacts(
                conn,
                list_id,
                search=search,
                status=status,
                offset=(page - 1) * per_page,
                limit=per_page,
            )

    async def update_contact(
        self,
        caller: Principal,
        list_id: str,
        email: str,
        *,
        status: str | None = None,
        variables: Any = None,
    ) -> dict[str, Any]:
        caller.require(Permission.SENDING_ACCESS)
        address = _email(email, "email")
        if status is not None and status not in repo.CONTACT_STATUSES:
            raise InvalidRequest("invalid_filter", field="status", value=status[:40])
        async with self._db.write() as conn:
            await self._require_list(conn, caller.account_id, list_id)
            await self._contact(conn, list_id, address)
            if variables is not None:
                values = {"variables": check_variables(variables), "updated_at": utcnow()}
                await repo.update_contact(conn, list_id, address, values)
            if status is not None:
                await _subscribe(conn, caller.account_id, [list_id], address, status, None)
            return await self._contact(conn, list_id, address)

    async def remove_contact(self, caller: Principal, list_id: str, email: str) -> None:
        caller.require(Permission.SENDING_ACCESS)
        address = _email(email, "email")
        async with self._db.write() as conn:
            await self._require_list(conn, caller.account_id, list_id)
            if not await repo.delete_contact(conn, list_id, address):
                raise NotFound(resource="contact")

    async def set_subscription(
        self,
        caller: Principal,
        email: str,
        *,
        list_ids: Sequence[str] | None,
        subscribed: bool,
        reason: str | None = None,
    ) -> list[str]:
        """(Un)subscribe an address on some lists, or on every list when ``list_ids`` is
        None; the lists touched. An unknown list id is a 404 and changes nothing."""
        caller.require(Permission.SENDING_ACCESS)
        address = _email(email, "email")
        status = repo.SUBSCRIBED if subscribed else repo.UNSUBSCRIBED
        async with self._db.write() as conn:
            if list_ids is None:
                ids = await repo.list_ids(conn, caller.account_id, limit=MAX_LISTS)
            else:
                ids = list(dict.fromkeys(list_ids))[:MAX_LISTS]
                for list_id in ids:
                    await self._require_list(conn, caller.account_id, list_id)
            await _subscribe(conn, caller.account_id, ids, address, status, reason)
        return ids

    # ── CSV import ──────────────────────────────────────────────────────────────────────

    async def import_csv(
        self,
        caller: Principal,
        list_id: str,
        chunks: AsyncIterator[bytes],
        *,
        total_bytes: int = 0,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import a CSV with a header row: an ``email`` column, every other column a variable.

        Parsed as it streams in, committed every few hundred rows: memory stays bounded
        whatever the file's size, and an import stopped halfway keeps what it committed
        (run again, those rows count as duplicates).
        """
        caller.require(Permission.SENDING_ACCESS)
        async with self._db.read() as conn:
            await self._require_list(conn, caller.account_id, list_id)
        parser = CsvRecords()
        report = ImportReport()
        columns: list[str] | None = None
        batch: list[dict[str, Any]] = []
        read = 0
        final = False
        while not final:
            chunk = await anext(chunks, None)
            final = chunk is None
            read += len(chunk or b"")
            for number, cells in parser.feed(chunk or b"", final=final):
                if columns is None:
                    columns = _header(cells)
                    continue
                row = self._csv_row(caller.account_id, list_id, columns, cells, number, report)
                if row is not None:
                    batch.append(row)
            if len(batch) >= IMPORT_BATCH or final:
                await self._flush(list_id, caller.account_id, batch, report)
                batch = []
            if progress is not None:
                progress(read, total_bytes)
        if columns is None:
            raise InvalidRequest("csv_header_missing")
        return report

    def _csv_row(
        self,
        account_id: str,
        list_id: str,
        columns: list[str],
        cells: list[str],
        number: int,
        report: ImportReport,
    ) -> dict[str, Any] | None:
        values = dict(zip(columns, (c.strip() for c in cells), strict=False))
        try:
            address = _email(values.pop("email", ""), "email")
        except InvalidRequest as exc:
            report.invalid += 1
            if len(report.errors) < 20:
                report.errors.append({"line": number, "error": str(exc)})
            return None
        variables = {k: v for k, v in values.items() if k and v}
        return self._contact_row(account_id, list_id, address, variables)

    async def _flush(
        self, list_id: str, account_id: str, rows: list[dict[str, Any]], report: ImportReport
    ) -> None:
        first: dict[str, dict[str, Any]] = {}
        for row in rows:
            first.setdefault(row["email"], row)
        unique = list(first.values())
        report.duplicate += len(rows) - len(unique)
        for start in range(0, len(unique), IMPORT_BATCH):
            part = unique[start : start + IMPORT_BATCH]
            async with self._db.write() as conn:
                added = await repo.insert_contacts(conn, part)
            report.imported += len(added)
            report.duplicate += len(part) - len(added)

    # ── helpers ─────────────────────────────────────────────────────────────────────────

    @staticmethod
    def _contact_row(
        account_id: str, list_id: str, email: str, variables: dict[str, Any]
    ) -> dict[str, Any]:
        now = utcnow()
        return {
            "list_id": list_id,
            "account_id": account_id,
            "email": email,
            "variables": variables,
            "status": repo.SUBSCRIBED,
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    async def _require_list(conn: Any, account_id: str, list_id: str) -> None:
        if await repo.get_list(conn, account_id, list_id) is None:
            raise NotFound(resource="list")

    @staticmethod
    async def _contact(conn: Any, list_id: str, email: str) -> dict[str, Any]:
        found = await repo.get_contact(conn, list_id, email)
        if found is None:
            raise NotFound(resource="contact")
        return found


async def _subscribe(
    conn: Any, account_id: str, list_ids: Sequence[str], email: str, status: str, reason: str | None
) -> None:
    now = utcnow()
    await repo.set_status(conn, account_id, list_ids, email, {"status": status, "updated_at": now})
    for list_id in list_ids:  # at most MAX_LISTS
        if status == repo.SUBSCRIBED:
            await suppressions.remove(conn, account_id, email, now, scope=list_id)
        else:
            await suppressions.add(
                conn,
                account_id=account_id,
                address=email,
                reason="unsubscribe",
                now=now,
                scope=list_id,
                detail=reason[:500] if reason else None,
            )


def _name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise InvalidRequest(field="name")
    return name


def _email(text: str, field_name: str) -> str:
    try:
        return normalise_email(text)
    except AddressError as exc:
        raise InvalidRequest("invalid_address", field=field_name, value=text[:100]) from exc


def _header(cells: list[str]) -> list[str]:
    names = [cell.strip().lower() for cell in cells]
    for alias in EMAIL_COLUMNS:
        if alias in names:
            names[names.index(alias)] = "email"
            return names
    raise InvalidRequest("csv_email_column")


async def import_csv(
    services: Services,
    *,
    account_id: str,
    list_id: str,
    path: Path,
    progress: Callable[[int, int], None],
) -> ImportReport:
    """Import a CSV file into a list, as the account owner (``posthorn lists import``).

    ``progress(bytes_read, bytes_total)`` is called after each chunk of the file.
    """
    owner = Principal(account_id=account_id, key_id="cli", permission=Permission.FULL_ACCESS)
    total = (await asyncio.to_thread(path.stat)).st_size

    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as handle:
            while data := await asyncio.to_thread(handle.read, READ_CHUNK):
                yield data

    return await services.lists.import_csv(
        owner, list_id, chunks(), total_bytes=total, progress=progress
    )
