"""Shared fixtures: settings, a migrated database on each backend, a real HTTP server.

Every test that asks for ``db`` runs twice: on a fresh SQLite file and on a fresh PostgreSQL
database in the throwaway cluster that ``make test`` starts (``POSTHORN_TEST_POSTGRES_URL``).
Without that variable (``make test-fast``) the PostgreSQL half is skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import uvloop
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from posthorn.api.app import create_app
from posthorn.cli import uvicorn_options
from posthorn.domain.permissions import Permission
from posthorn.services.container import Services, build_services
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.migrate import migrate
from tests.support.dns import DnsServer
from tests.support.domains import verified_domain

PG_URL = os.environ.get("POSTHORN_TEST_POSTGRES_URL", "")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The tests run on uvloop, the event loop every Posthorn process runs on."""
    return {"uvloop": uvloop.new_event_loop}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and not PG_URL:
        pytest.skip("POSTHORN_TEST_POSTGRES_URL is not set (run `make test`)")
    return str(request.param)


async def _fresh_pg_database() -> str:
    name = "t_" + uuid.uuid4().hex[:16]
    admin = create_async_engine(
        PG_URL.replace("postgresql://", "postgresql+asyncpg://"), isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'posthorn.db'}"
    return await _fresh_pg_database()


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": database_url,
        "secret_key": "test-secret-" + uuid.uuid4().hex,
        "hostname": "posthorn.test",
        "mx_allow_private": True,
        "worker_poll_seconds": 0.05,
        "smtp_timeout_scale": 0.02,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    """An authoritative DNS server on loopback; settings point the resolver at it."""
    with DnsServer() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dns: DnsServer) -> Settings:
    return make_settings(tmp_path, database_url, dns_nameservers=[dns.nameserver])


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.effective_database_url)
    await migrate(database)
    yield database
    await database.dispose()


@pytest.fixture
async def services(settings: Settings, db: Database) -> AsyncIterator[Services]:
    svc = build_services(settings, db)
    yield svc
    await svc.close()


class LiveServer:
    """The real application served by uvicorn on a loopback port, in this event loop."""

    def __init__(self, settings: Settings, services: Services) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.services = dataclasses.replace(services, settings=settings)
        app = create_app(settings, services=self.services)
        options = {**uvicorn_options(settings), "port": self.port, "host": "127.0.0.1"}
        config = uvicorn.Config(app, lifespan="on", **options)
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve())
        for _ in range(200):
            if self.server.started:
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("uvicorn did not start")

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


@pytest.fixture
async def live(settings: Settings, services: Services) -> AsyncIterator[LiveServer]:
    server = LiveServer(settings, services)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        yield client


@pytest.fixture
async def account(services: Services, dns: DnsServer) -> dict[str, str]:
    """An account with one key of each permission and the verified domain acme.test."""
    row = await services.accounts.create_account("acme")
    keys = {"account_id": row.id}
    for permission in Permission:
        created = await services.accounts.create_key(
            row.id, name=permission.value, permission=permission
        )
        keys[permission.value] = created.key
    keys["domain_id"] = (await verified_domain(services, dns, row.id))["id"]
    return keys


@pytest.fixture
def tmp_cwd(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(old)
