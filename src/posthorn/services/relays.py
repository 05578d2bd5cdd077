"""Upstream relays: an account's own SMTP provider (SES, SendGrid, Mailgun, its own server).

With a default relay, all of the account's mail goes through it instead of straight to the
recipients' MX hosts. The password is sealed at rest and never shown again.

The account chooses the host, so it is held to the webhook rule (``domain/ssrf.py``): every
address it resolves to must be public, unless the operator sets ``RELAY_ALLOW_PRIVATE``, and
never a cloud metadata address. Checked here when the relay is saved, and again by the
transport on the address it connects to (``delivery/transport.py``), since the DNS may answer
differently by then.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol
from urllib.parse import quote

from posthorn.crypto import seal, unseal
from posthorn.domain.permissions import Permission
from posthorn.domain.ssrf import first_refused
from posthorn.errors import InvalidRequest, NotFound
from posthorn.services.accounts import Principal
from posthorn.settings import Settings
from posthorn.store import relays as repo
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

PURPOSE = "relay"
TLS_MODES = ("starttls", "implicit", "none")
FIELDS = ("name", "host", "port", "tls", "username", "password", "is_default")
# A PATCH may clear these with null; the others always have a value.
NULLABLE = ("username", "password")


class HostResolver(Protocol):
    """Resolves a host to its addresses, [] when it has none (``delivery/hosts.py``)."""

    async def addresses(self, host: str) -> list[str]: ...


class Relays:
    def __init__(self, db: Database, settings: Settings, resolver: HostResolver) -> None:
        self._db = db
        self._secret = settings.secret_key
        self._allow_private = settings.relay_allow_private
        self._resolver = resolver

    async def _check(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with the host normalised; 422 naming the field that is wrong."""
        checked = dict(values)
        for name, value in values.items():
            if value is None and name in FIELDS and name not in NULLABLE:
                raise InvalidRequest("field_null", field=name)
        host = values.get("host")
        if host is not None:
            checked["host"] = await self._check_host(host)
        port = values.get("port")
        if port is not None and not 1 <= int(port) <= 65535:
            raise InvalidRequest(field="port")
        if values.get("tls") is not None and values["tls"] not in TLS_MODES:
            raise InvalidRequest(field="tls")
        return checked

    async def _check_host(self, text: str) -> str:
        """The host in lower case, IDNA; 422 unless every address it resolves to may be
        relayed to."""
        host = text.strip().rstrip(".").lower()
        if not host or any(c in host for c in "/@:[] \t\r\n"):
            raise InvalidRequest(field="host")
        if not host.isascii():
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise InvalidRequest(field="host") from exc
        addresses = await self._resolver.addresses(host)
        if not addresses:
            raise InvalidRequest("relay_host_unresolvable", field="host", host=host)
        refused = first_refused(addresses, allow_private=self._allow_private)
        if refused is not None:
            raise InvalidRequest(
                "relay_host_refused",
                field="host",
                host=host,
                address=refused[0],
                problem=refused[1],
            )
        return host

    async def create(self, caller: Principal, values: dict[str, Any]) -> dict[str, Any]:
        caller.require(Permission.FULL_ACCESS)
        values = await self._check(values)
        now = utcnow()
        row = {
            "id": "rel_" + secrets.token_hex(8),
            "account_id": caller.account_id,
            "name": values["name"],
            "host": values["host"],
            "port": int(values.get("port") or 587),
            "tls": values.get("tls") or "starttls",
            "username": values.get("username"),
            "password": self._seal(values.get("password")),
            "is_default": 1 if values.get("is_default") else 0,
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.write() as conn:
            if row["is_default"]:
                await repo.clear_default(conn, caller.account_id)
            await repo.insert_relay(conn, row)
        return row

    def _seal(self, password: str | None) -> str | None:
        return seal(self._secret, password.encode(), purpose=PURPOSE) if password else None

    async def get(self, account_id: str, relay_id: str) -> dict[str, Any]:
        async with self._db.read() as conn:
            row = await repo.get_relay(conn, account_id, relay_id)
        if row is None:
            raise NotFound(resource="relay")
        return row

    async def page(
        self, account_id: str, *, page: int, per_page: int
    ) -> tuple[list[dict[str, Any]], int]:
        async with self._db.read() as conn:
            return await repo.list_relays(
                conn, account_id, offset=(page - 1) * per_page, limit=per_page
            )

    async def update(
        self, caller: Principal, relay_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        caller.require(Permission.FULL_ACCESS)
        await self.get(caller.account_id, relay_id)
        values = {k: v for k, v in (await self._check(changes)).items() if k in FIELDS}
        if "password" in values:
            values["password"] = self._seal(values["password"])
        if "is_default" in values:
            values["is_default"] = 1 if values["is_default"] else 0
        values["updated_at"] = utcnow()
        async with self._db.write() as conn:
            if values.get("is_default"):
                await repo.clear_default(conn, caller.account_id)
            await repo.update_relay(conn, relay_id, values)
        return await self.get(caller.account_id, relay_id)

    async def delete(self, caller: Principal, relay_id: str) -> None:
        caller.require(Permission.FULL_ACCESS)
        await self.get(caller.account_id, relay_id)
        async with self._db.write() as conn:
            await repo.delete_relay(conn, relay_id)

    async def default_url(self, account_id: str) -> tuple[str, str] | None:
        """(relay id, smtp[s]:// URL with credentials) of the account's default relay."""
        async with self._db.read() as conn:
            row = await repo.default_relay(conn, account_id)
        if row is None:
            return None
        scheme = "smtps" if row["tls"] == "implicit" else "smtp"
        auth = ""
        if row["username"]:
            password = (
                unseal(self._secret, row["password"], purpose=PURPOSE).decode()
                if row["password"]
                else ""
            )
            auth = f"{quote(row['username'], safe='')}:{quote(password, safe='')}@"
        return row["id"], f"{scheme}://{auth}{row['host']}:{row['port']}"
