"""pytest fixtures for the SMTP submission server tests (integration and acceptance).

A test module loads them with ``pytest_plugins = ["tests.support.submission_fixtures"]`` and
overrides ``dns`` with ``tests.support.submission.dns_with_mx`` so that the worker delivers into ``mx_sink``.
``smtp_tenant`` is an account with the verified domain acme.test, an API key of each
permission and the sender hello@acme.test. ``start_smtp(**overrides)`` runs the server with
changed settings; ``smtp_server`` is one with the defaults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from posthorn.domain.permissions import Permission
from posthorn.services.container import Services, build_services
from posthorn.settings import Settings
from posthorn.store.database import Database
from tests.support.dns import DnsServer
from tests.support.domains import owner, verified_domain
from tests.support.sink import SmtpSink
from tests.support.submission import (
    PASSWORD,
    SENDER,
    Start,
    SubmissionServer,
    Tenant,
    smtp_settings,
)


@pytest.fixture
def mx_sink() -> Iterator[SmtpSink]:
    """The sink the worker delivers to (the MX port of the settings ``start_smtp`` makes)."""
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
async def smtp_tenant(services: Services, dns: DnsServer) -> Tenant:
    account = await services.accounts.create_account("acme")
    await verified_domain(services, dns, account.id)
    keys = {}
    for permission in Permission:
        created = await services.accounts.create_key(
            account.id, name=permission.value, permission=permission
        )
        keys[permission.value] = created.key
    sender = await services.senders.create(
        owner(account.id), address=SENDER, domain="acme.test", password=PASSWORD
    )
    return Tenant(account_id=account.id, sender_id=int(sender["id"]), keys=keys)


@pytest.fixture
async def start_smtp(
    settings: Settings, db: Database, tmp_path: Path, mx_sink: SmtpSink
) -> AsyncIterator[Start]:
    """Start a server with settings overrides; it and its services are stopped afterwards."""
    async with AsyncExitStack() as stack:

        async def starter(**overrides: Any) -> SubmissionServer:
            config = smtp_settings(settings, tmp_path, mx_port=mx_sink.port, **overrides)
            services = build_services(config, db)
            stack.push_async_callback(services.close)
            server = SubmissionServer(config, services)
            await server.start()
            stack.push_async_callback(server.stop)
            return server

        yield starter


@pytest.fixture
async def smtp_server(start_smtp: Start, smtp_tenant: Tenant) -> SubmissionServer:
    return await start_smtp()
