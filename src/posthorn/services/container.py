"""The services of one process, wired together: what every role (web, SMTP, CLI) uses."""

from __future__ import annotations

from dataclasses import dataclass

from posthorn.delivery.dns_query import DnsQuery
from posthorn.services.accounts import Accounts
from posthorn.services.domains import Domains
from posthorn.services.emails import Emails
from posthorn.services.intake import Intake
from posthorn.services.logs import Logs
from posthorn.services.relays import Relays
from posthorn.services.senders import Senders
from posthorn.services.suppressions import Suppressions
from posthorn.settings import Settings
from posthorn.store.database import Database


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    db: Database
    accounts: Accounts
    domains: Domains
    intake: Intake
    emails: Emails
    senders: Senders
    logs: Logs
    suppressions: Suppressions
    relays: Relays

    async def close(self) -> None:
        await self.intake.close()


def build_services(settings: Settings, db: Database | None = None) -> Services:
    db = db or Database(settings.effective_database_url)
    domains = Domains(db, settings, DnsQuery(settings))
    return Services(
        settings=settings,
        db=db,
        accounts=Accounts(db),
        domains=domains,
        intake=Intake(db, settings, domains),
        emails=Emails(db),
        senders=Senders(db, settings),
        logs=Logs(db),
        suppressions=Suppressions(db),
        relays=Relays(db, settings),
    )
