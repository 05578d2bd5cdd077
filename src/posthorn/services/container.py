"""The services of one process, wired together: what every role (web, SMTP, CLI) uses."""

from __future__ import annotations

from dataclasses import dataclass

from posthorn.delivery.dns_query import DnsQuery
from posthorn.services import template_compiler
from posthorn.services.accounts import Accounts
from posthorn.services.bulk import Bulk
from posthorn.services.dialect_support import DialectSupport
from posthorn.services.domains import Domains
from posthorn.services.emails import Emails
from posthorn.services.intake import Intake
from posthorn.services.lists import Lists
from posthorn.services.logs import Logs
from posthorn.services.relays import Relays
from posthorn.services.send_configs import SendConfigs
from posthorn.services.senders import Senders
from posthorn.services.stats import Stats
from posthorn.services.suppressions import Suppressions
from posthorn.services.templates import Templates
from posthorn.services.tokens import Tokens
from posthorn.services.tracking import Tracking
from posthorn.services.users import Users
from posthorn.services.webhooks import Webhooks
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.webhooks.resolver import DnsHostResolver


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
    templates: Templates
    stats: Stats
    tracking: Tracking
    webhooks: Webhooks
    users: Users
    tokens: Tokens
    dialect_support: DialectSupport
    send_configs: SendConfigs
    lists: Lists
    bulk: Bulk

    async def close(self) -> None:
        await self.intake.close()


def build_services(settings: Settings, db: Database | None = None) -> Services:
    db = db or Database(settings.effective_database_url)
    domains = Domains(db, settings, DnsQuery(settings))
    users = Users(db)
    template_compiler.install()
    templates = Templates(db, max_source_bytes=settings.max_template_bytes)
    intake = Intake(db, settings, domains, templates)
    stats = Stats(db)
    dialect_support = DialectSupport(db, intake=intake, emails=Emails(db))
    return Services(
        settings=settings,
        db=db,
        accounts=Accounts(db),
        domains=domains,
        intake=intake,
        emails=Emails(db),
        senders=Senders(db, settings),
        logs=Logs(db),
        suppressions=Suppressions(db),
        relays=Relays(db, settings, DnsHostResolver(settings)),
        templates=templates,
        stats=stats,
        tracking=Tracking(db, settings),
        webhooks=Webhooks(db, settings, DnsHostResolver(settings)),
        users=users,
        tokens=Tokens(db, settings, users),
        dialect_support=dialect_support,
        send_configs=SendConfigs(db, templates=templates, stats=stats, support=dialect_support),
        lists=Lists(db),
        bulk=Bulk(db, settings, domains, templates),
    )
