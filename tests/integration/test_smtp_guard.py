"""Connection rules of the SMTP listeners, over real loopback sockets: the per-client cap,
commands before the greeting, and the time a submission session has to authenticate.

Each runs once, on SQLite: what is tested is the listener, not SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from base64 import b64encode
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from posthorn.inbound.server import run_inbound
from posthorn.settings import Settings
from posthorn.smtp.server import client_share
from posthorn.store.database import Database
from tests.support.dns import DnsServer
from tests.support.submission import RawClient, Start, Tenant, dns_with_mx, free_port

pytest_plugins = ["tests.support.submission_fixtures"]

READ_TIMEOUT = 15.0


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with dns_with_mx() as server:
        yield server


async def first_reply(
    port: int, *, source: str = "127.0.0.1", send: bytes = b""
) -> tuple[bytes, bool]:
    """Connect from ``source`` (sending ``send`` at once, without waiting for the greeting),
    and return what the server wrote before closing, and whether it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        if send:
            writer.write(send)
            await writer.drain()
        data = await asyncio.wait_for(reader.read(4096), READ_TIMEOUT)
        try:
            rest = await asyncio.wait_for(reader.read(), 3.0)
        except TimeoutError:
            return data, False
        return data + rest, True
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def auth_plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + b64encode(f"\0{user}\0{password}".encode()).decode()


# ── per-client cap ─────────────────────────────────────────────────────────────────────────


async def test_a_client_over_its_cap_is_told_421_while_its_connections_are_open(
    start_smtp: Start, smtp_tenant: Tenant
) -> None:
    server = await start_smtp(smtp_max_connections_per_client=5)
    open_clients = [await RawClient.connect(server.port) for _ in range(5)]
    data, closed = await first_reply(server.port)
    assert data.startswith(b"421 4.7.0") and closed, data
    # Another client network is not affected, and the open sessions still work.
    data, closed = await first_reply(server.port, source="127.0.0.2")
    assert data.startswith(b"220 ") and not closed, data
    for client in open_clients:
        assert (await client.command("NOOP"))[0] == 250
    # A closed connection frees its slot.
    await open_clients.pop().close()
    for _ in range(50):  # bounded: the server sees the close within a few loop turns
        data, _ = await first_reply(server.port)
        if data.startswith(b"220 "):
            break
        await asyncio.sleep(0.05)
    assert data.startswith(b"220 "), data
    for client in open_clients:
        await client.close()


async def test_trusted_networks_are_not_capped(start_smtp: Start, smtp_tenant: Tenant) -> None:
    server = await start_smtp(
        smtp_max_connections_per_client=2,
        smtp_trusted_networks=["127.0.0.3/32"],
        smtp_trusted_account=smtp_tenant.account_id,
    )
    relay = [await RawClient.connect(server.port, source="127.0.0.3") for _ in range(4)]
    others = [await RawClient.connect(server.port) for _ in range(2)]
    data, closed = await first_reply(server.port)
    assert data.startswith(b"421 4.7.0") and closed, data
    for client in relay + others:
        await client.close()


def test_each_session_process_allows_its_share_of_the_cap() -> None:
    assert client_share(100, 1) == 100
    assert client_share(100, 3) == 34  # together 102: the cap rounded up to the processes
    assert client_share(2, 4) == 1


# ── commands before the greeting (RFC 5321 §3.1) ───────────────────────────────────────────


async def test_a_client_that_talks_before_the_greeting_gets_554(
    start_smtp: Start, smtp_tenant: Tenant
) -> None:
    server = await start_smtp(smtp_greeting_delay=0.5)
    data, closed = await first_reply(server.port, send=b"EHLO early.test\r\n")
    assert data.startswith(b"554 ") and closed, data
    assert b"250" not in data  # the command was never answered
    # A client that waits is greeted and served.
    client = await RawClient.connect(server.port)
    assert (await client.command("EHLO patient.test"))[0] == 250
    await client.close()


# ── time to authenticate ───────────────────────────────────────────────────────────────────


async def test_a_session_that_does_not_authenticate_in_time_is_closed(
    start_smtp: Start, smtp_tenant: Tenant
) -> None:
    server = await start_smtp(smtp_auth_timeout=1.0)
    idle = await RawClient.connect(server.port)
    started = time.monotonic()
    await idle.command("EHLO idle.test")
    authenticated = await RawClient.connect(server.port)
    await authenticated.command("EHLO client.test")
    await authenticated.starttls()
    await authenticated.command("EHLO client.test")
    code, _ = await authenticated.command(auth_plain("apikey", smtp_tenant.keys["sending_access"]))
    assert code == 235

    code, lines = await asyncio.wait_for(idle.reply(), 10)
    waited = time.monotonic() - started
    assert code == 421 and lines[0].startswith("4.7.0"), lines
    assert 0.9 <= waited < 8, waited
    assert await idle.closed()
    # The authenticated session outlives the deadline.
    assert (await authenticated.command("NOOP"))[0] == 250
    await authenticated.close()
    await idle.close()


# ── the inbound bounce listener ────────────────────────────────────────────────────────────


@pytest.fixture
async def inbound_port(settings: Settings, db: Database) -> AsyncIterator[Any]:
    async def start(**overrides: Any) -> int:
        config = settings.model_copy(update={"inbound_port": free_port(), **overrides})
        stop = asyncio.Event()
        task = asyncio.create_task(run_inbound(config, db, stop=stop))
        stack.append((stop, task))
        for _ in range(200):  # bounded: the listener opens within a few turns
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", config.inbound_port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            await reader.readline()
            writer.close()
            return config.inbound_port
        raise RuntimeError("the inbound listener did not start")

    stack: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    yield start
    for stop, task in stack:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_the_inbound_listener_caps_each_client_too(inbound_port: Any) -> None:
    port = await inbound_port(inbound_max_connections_per_client=3, inbound_greeting_delay=0.0)
    await asyncio.sleep(0.1)  # the start-up probe's connection is gone
    open_clients = [await RawClient.connect(port) for _ in range(3)]
    data, closed = await first_reply(port)
    assert data.startswith(b"421 4.7.0") and closed, data
    data, closed = await first_reply(port, source="127.0.0.2")
    assert data.startswith(b"220 ") and not closed, data
    for client in open_clients:
        assert (await client.command("NOOP"))[0] == 250
        await client.close()


async def test_the_inbound_listener_refuses_early_talkers(inbound_port: Any) -> None:
    port = await inbound_port(inbound_greeting_delay=0.5)
    data, closed = await first_reply(port, send=b"EHLO spam.test\r\nMAIL FROM:<>\r\n")
    assert data.startswith(b"554 ") and closed, data
    client = await RawClient.connect(port)
    assert (await client.command("EHLO mta.test"))[0] == 250
    await client.close()
