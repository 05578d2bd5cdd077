"""Sending domains: registration, DNS records, verification, DKIM keys and rotation, quotas.

A domain starts ``pending`` with the records to publish (SPF, MX for bounces, DKIM, and a
suggested DMARC). Verification looks them up in the DNS; when SPF, every MX and the active
DKIM key are there, the domain is ``verified`` and may send. Rotation adds a *pending* DKIM key
with a new selector: the old key keeps signing until the new record verifies, then the new key
takes over and the old one is retired.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError

from posthorn.crypto import seal
from posthorn.domain import dns_records
from posthorn.domain.dns_records import Observed
from posthorn.domain.domain_names import normalise_domain
from posthorn.domain.permissions import Permission
from posthorn.domain.quotas import Limit, key, remaining
from posthorn.errors import Conflict, InvalidRequest, NotFound
from posthorn.mime.dkim import dns_record_value, generate_ed25519_key, generate_rsa_key
from posthorn.services.accounts import Principal
from posthorn.services.lookup_cache import LookupCache
from posthorn.settings import Settings
from posthorn.store import domains as repo
from posthorn.store import usage
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

DKIM_PURPOSE = "dkim"
SENDING_CACHE_SECONDS = 2.0
SEND_DEFAULTS = ("track_opens", "track_clicks", "force_unsubscribe")  # domain/send_defaults.py
PERIODS: tuple[tuple[str, Any], ...] = (("daily", "day"), ("hourly", "hour"), ("monthly", "month"))


class DnsObserver(Protocol):
    """Looks the records up (``delivery/dns_query.py``)."""

    async def observe(self, domain: str, txt_names: list[str]) -> Observed: ...


@dataclass(frozen=True, slots=True)
class DomainView:
    row: dict[str, Any]
    records: list[dict[str, Any]]


class Domains:
    def __init__(self, db: Database, settings: Settings, dns: DnsObserver) -> None:
        self._db = db
        self._settings = settings
        self._dns = dns
        self._sending: LookupCache[tuple[str, str], dict[str, Any] | None] = LookupCache(
            SENDING_CACHE_SECONDS
        )

    # ── registration ────────────────────────────────────────────────────────────────────

    async def create(self, caller: Principal, name: str) -> DomainView:
        caller.require(Permission.FULL_ACCESS)
        try:
            domain = normalise_domain(name)
        except ValueError as exc:
            raise InvalidRequest("domain_invalid", field="domain", reason=str(exc)) from exc
        # A claim proves nothing, so any number of accounts may hold one for a name (one
        # each). A verified name is owned, and the 409 does not say by whom; unless the
        # owner's records have left the DNS, when the name may have changed hands.
        owner = await self._other_owner(caller.account_id, domain)
        if owner is not None and await self._still_holds(owner):
            raise Conflict("domain_taken", domain=domain)
        now = utcnow()
        domain_id = "dom_" + secrets.token_hex(8)
        selector = self._selector(now, 1)
        rsa_private, rsa_public = generate_rsa_key(2048)
        plan, _ = self._settings.plan(None)
        keys = [self._key_row(domain_id, selector, "rsa-sha256", rsa_private, rsa_public, now)]
        ed_private, ed_public = generate_ed25519_key()
        keys.append(
            self._key_row(domain_id, selector + "e", "ed25519-sha256", ed_private, ed_public, now)
        )
        records = self._records(domain, keys)
        row = {
            "id": domain_id,
            "account_id": caller.account_id,
            "name": domain,
            "status": "pending",
            "records": records,
            "plan": plan,
            "ed25519": 0,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._db.write() as conn:
                if await repo.find_domain(conn, caller.account_id, domain) is not None:
                    raise Conflict("domain_taken", domain=domain)
                await repo.insert_domain(conn, row)
                for key_row in keys:
                    await repo.insert_key(conn, key_row)
        except IntegrityError as exc:  # the same account, twice at once
            raise Conflict("domain_taken", domain=domain) from exc
        return DomainView(row=await self._get(caller.account_id, domain_id), records=records)

    async def _other_owner(self, account_id: str, name: str) -> dict[str, Any] | None:
        """Another account's verified claim of the name, or ``None``."""
        async with self._db.read() as conn:
            owner_id = await repo.verified_owner(conn, name)
            if owner_id is None or owner_id == account_id:
                return None
            return await repo.find_domain(conn, owner_id, name)

    async def _still_holds(self, owner: dict[str, Any]) -> bool:
        """Whether the owner's records are still in the DNS (looked up now)."""
        return dns_records.all_required_verified(await self._check(owner))

    def _selector(self, now: datetime, n: int) -> str:
        return f"{self._settings.dkim_selector_prefix}{now:%Y%m%d}{n}"

    def _key_row(
        self,
        domain_id: str,
        selector: str,
        algorithm: str,
        private: bytes,
        public: str,
        now: datetime,
    ) -> dict[str, Any]:
        return {
            "domain_id": domain_id,
            "selector": selector,
            "algorithm": algorithm,
            "private_key": seal(self._settings.secret_key, private, purpose=DKIM_PURPOSE),
            "public_key": public,
            "state": "active",
            "created_at": now,
        }

    def _records(self, domain: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records to publish; the ed25519 key is listed only when the domain uses it."""
        records = dns_records.build_records(
            domain,
            spf_include=self._settings.effective_spf_include,
            mx_hosts=self._settings.effective_return_path_mx,
            dkim=[],
        )
        dkim = []
        for k in keys:
            if k["state"] == "retired":
                continue
            record = dns_records.dkim_record(
                k["selector"], dns_record_value(k["algorithm"], k["public_key"])
            )
            if k["algorithm"] != "rsa-sha256":
                record["optional"] = True
            if k["state"] == "pending":
                record["pending"] = True
            dkim.append(record)
        # DKIM after the MX records, DMARC last, as the records are usually shown.
        return records[:-1] + dkim + records[-1:]

    # ── reading ─────────────────────────────────────────────────────────────────────────

    async def _get(self, account_id: str, domain_id: str) -> dict[str, Any]:
        async with self._db.read() as conn:
            row = await repo.get_domain(conn, account_id, domain_id)
        if row is None:
            raise NotFound(resource="domain")
        return row

    async def page(
        self, account_id: str, *, page: int, per_page: int, search: str | None
    ) -> tuple[list[dict[str, Any]], int, int]:
        async with self._db.read() as conn:
            return await repo.list_domains(
                conn, account_id, search=search, offset=(page - 1) * per_page, limit=per_page
            )

    async def get(self, account_id: str, domain_id: str) -> DomainView:
        """The domain with the live state of each record (looked up now)."""
        row = await self._get(account_id, domain_id)
        return DomainView(row=row, records=await self._check(row))

    async def _check(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = row["records"]
        txt_names = sorted(
            {
                dns_records.fqdn(r["name"], row["name"])
                for r in records
                if r["type"] == "TXT" and r["name"] != "@"
            }
        )
        observed = await self._dns.observe(row["name"], txt_names)
        return dns_records.evaluate(records, observed, row["name"])

    # ── verification and rotation ───────────────────────────────────────────────────────

    async def verify(self, caller: Principal, domain_id: str) -> DomainView:
        """Look the records up and record the outcome.

        Several accounts may claim a name; the first whose records are all in the DNS owns
        it (its DKIM key is the proof: SPF and MX are the same for everyone). While it does,
        the other claims answer 409 here, unless the owner's records have left the DNS while
        this claim's are there: the name has changed hands, and the owner's claim returns
        to pending without its senders. Two verifications at once cannot both win: the
        partial unique index on verified names refuses the second, which is a 409 too.
        """
        caller.require(Permission.FULL_ACCESS)
        row = await self._get(caller.account_id, domain_id)
        checked = await self._check(row)
        displaced = await self._displaced_owner(row, checked)
        try:
            return await self._record_verification(row, checked, displaced)
        except IntegrityError as exc:  # another account's verification won the race
            raise Conflict("domain_verified_elsewhere", domain=row["name"]) from exc

    async def _displaced_owner(
        self, row: dict[str, Any], checked: list[dict[str, Any]]
    ) -> str | None:
        """The id of another account's verified claim of the name whose records have left
        the DNS while this claim's are there; ``None`` when no one else owns the name. A 409
        when another account owns it and keeps it."""
        owner = await self._other_owner(row["account_id"], row["name"])
        if owner is None:
            return None
        if not dns_records.all_required_verified(checked) or await self._still_holds(owner):
            raise Conflict("domain_verified_elsewhere", domain=row["name"])
        return str(owner["id"])

    async def _record_verification(
        self, row: dict[str, Any], checked: list[dict[str, Any]], displaced: str | None
    ) -> DomainView:
        domain_id = row["id"]
        now = utcnow()
        async with self._db.write() as conn:
            keys = await repo.keys_for(conn, domain_id)
            promoted = _promote_verified_keys(keys, checked)
            if promoted:
                await repo.set_key_states(conn, promoted)
                keys = await repo.keys_for(conn, domain_id)
                records = self._records(row["name"], keys)
                checked = dns_records.evaluate(
                    records, await self._observe_again(row, records), row["name"]
                )
            verified = dns_records.all_required_verified(checked)
            values: dict[str, Any] = {
                "records": [_stored(r) for r in checked],
                "status": "verified" if verified else "pending",
                "checked_at": now,
                "updated_at": now,
            }
            if verified and row["verified_at"] is None:
                values["verified_at"] = now
            if not verified:
                values["verified_at"] = None
            if verified and displaced is not None:
                await repo.release(conn, displaced, now)
            # Verifying writes the status whatever it was: this is where a second account
            # verifying at the same moment meets the unique index (IntegrityError).
            await repo.update_domain(conn, domain_id, values)
        self._sending.clear()
        row.update(values)
        row["verified_elsewhere"] = False
        return DomainView(row=row, records=checked)

    async def _observe_again(self, row: dict[str, Any], records: list[dict[str, Any]]) -> Observed:
        txt_names = sorted(
            {dns_records.fqdn(r["name"], row["name"]) for r in records if r["type"] == "TXT"}
        )
        return await self._dns.observe(row["name"], txt_names)

    async def rotate_dkim(self, caller: Principal, domain_id: str) -> DomainView:
        """Publish a new RSA key under a new selector; it signs once its record verifies."""
        caller.require(Permission.FULL_ACCESS)
        row = await self._get(caller.account_id, domain_id)
        now = utcnow()
        async with self._db.write() as conn:
            keys = await repo.keys_for(conn, domain_id)
            if any(k["state"] == "pending" for k in keys):
                raise Conflict("rotation_pending")
            selector = self._selector(now, len(keys) + 1)
            private, public = generate_rsa_key(2048)
            new = self._key_row(domain_id, selector, "rsa-sha256", private, public, now)
            new["state"] = "pending"
            await repo.insert_key(conn, new)
            records = self._records(row["name"], [*keys, new])
            await repo.update_domain(conn, domain_id, {"records": records, "updated_at": now})
        row["records"] = records
        return DomainView(row=row, records=records)

    async def update(
        self, caller: Principal, domain_id: str, changes: dict[str, Any]
    ) -> DomainView:
        """Quota overrides (``daily_limit``, ``hourly_limit``, ``monthly_limit``; null resets
        to the plan's), ``plan``, ``ed25519`` (also sign with Ed25519), and the send defaults
        ``track_opens``, ``track_clicks`` and ``force_unsubscribe`` (true or false)."""
        caller.require(Permission.FULL_ACCESS)
        row = await self._get(caller.account_id, domain_id)
        if "plan" in changes and changes["plan"] not in self._settings.plans:
            raise InvalidRequest("plan_unknown", field="plan", value=str(changes["plan"])[:40])
        for name in SEND_DEFAULTS:
            if name in changes and not isinstance(changes[name], bool):
                raise InvalidRequest(field=name)
        values = {k: v for k, v in changes.items()}
        values["updated_at"] = utcnow()
        async with self._db.write() as conn:
            for name in ("ed25519", *SEND_DEFAULTS):
                if name in values:
                    values[name] = 1 if values[name] else 0
            await repo.update_domain(conn, domain_id, values)
        # This process's next send sees the change at once; other processes (more web
        # workers, the SMTP server) within SENDING_CACHE_SECONDS.
        self._sending.clear()
        row.update(values)
        return DomainView(row=row, records=row["records"])

    async def delete(self, caller: Principal, domain_id: str) -> None:
        caller.require(Permission.FULL_ACCESS)
        await self._get(caller.account_id, domain_id)
        async with self._db.write() as conn:
            await repo.delete_domain(conn, domain_id)
        self._sending.clear()

    async def sending_domain(self, account_id: str, name: str) -> dict[str, Any] | None:
        """The account's verified domain of that name, or ``None``.

        Every email asks this, so answers are kept for a few seconds: a domain that is
        deleted, unverified or has its quota or send defaults changed is seen within
        ``SENDING_CACHE_SECONDS`` (at once in the process that made the change).
        """
        name = name.lower()

        async def load() -> dict[str, Any] | None:
            async with self._db.read() as conn:
                row = await repo.find_domain(conn, account_id, name)
            return row if row is not None and row["status"] == "verified" else None

        return await self._sending.get((account_id, name), load)

    # ── quotas ──────────────────────────────────────────────────────────────────────────

    def limits(self, row: dict[str, Any]) -> list[Limit]:
        _, plan = self._settings.plan(row.get("plan"))
        limits = []
        for name, period in PERIODS:
            value = row.get(f"{name}_limit")
            limits.append(
                Limit(
                    scope=f"dom:{row['id']}",
                    period=period,
                    limit=int(value if value is not None else plan[f"{name}_limit"]),
                    label=f"{name} limit of domain {row['name']}",
                )
            )
        return limits

    async def quota(self, account_id: str, domain_id: str) -> dict[str, Any]:
        row = await self._get(account_id, domain_id)
        code, plan = self._settings.plan(row.get("plan"))
        now = utcnow()
        limits = self.limits(row)
        async with self._db.read() as conn:
            used = await usage.read_counts(conn, [key(limit, now) for limit in limits])
        answer: dict[str, Any] = {"domain": row["name"]}
        for (name, _), limit in zip(PERIODS, limits, strict=True):
            count = used.get(key(limit, now), 0)
            answer[f"{name}_limit"] = limit.limit
            answer[f"{name}_used"] = count
            answer[f"{name}_remaining"] = remaining(limit.limit, count)
        answer["pack_code"] = code
        answer["pack_name"] = plan.get("name", code)
        return answer


def _stored(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "found"}


def _promote_verified_keys(
    keys: list[dict[str, Any]], checked: list[dict[str, Any]]
) -> list[tuple[int, str]]:
    """After a rotation: once the pending key's record is live, it becomes active and the
    active RSA key retires."""
    live = {
        r["name"].removesuffix("._domainkey")
        for r in checked
        if r["purpose"] == "dkim" and r["verified"]
    }
    changes: list[tuple[int, str]] = []
    for pending in (k for k in keys if k["state"] == "pending" and k["selector"] in live):
        changes.append((pending["id"], "active"))
        changes.extend(
            (k["id"], "retired")
            for k in keys
            if k["state"] == "active" and k["algorithm"] == pending["algorithm"]
        )
    return changes
