"""A crash does not stall the mail in flight: `posthorn serve` is killed with SIGKILL (the whole
process group) while its worker holds deliveries in open SMTP sessions, and the restarted server
sends every accepted email within a minute, none twice. The dead worker's leases are not renewed
any more, so they run out within ``worker_lease_seconds`` (30 s by default) of the kill and the
deliveries come due again for whoever claims next."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from posthorn.services.container import build_services
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.migrate import migrate
from tests.acceptance.test_durability import kill, message_ids, start
from tests.conftest import free_port, make_settings
from tests.support.dns import DnsServer
from tests.support.domains import verified_domain
from tests.support.sink import SmtpSink

EMAILS = 80
# The worker takes no more deliveries than it may open connections to one MX (the sink): each
# one it holds at the kill is in an open session, the others are still queued.
IN_FLIGHT = 10
# From the moment the restarted server answers (its start-up alone takes tens of seconds on a
# loaded machine): one lease and then some; the old 300 s lease fails it by minutes.
RESUME_WITHIN = 60.0
STALL = 45.0  # the MX's delay before each reply until the kill: every session waits for 220


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dns: DnsServer) -> Settings:
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    return make_settings(tmp_path / "data", database_url, dns_nameservers=[dns.nameserver])


@pytest.fixture
def env(settings: Settings, database_url: str, sink: SmtpSink, dns: DnsServer) -> dict[str, str]:
    # The lease is left at its default: that is what a crashed node's mail waits for.
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTHORN_")},
        "POSTHORN_DATA_DIR": str(settings.data_dir),
        "POSTHORN_DATABASE_URL": database_url,
        "POSTHORN_SECRET_KEY": settings.secret_key,
        "POSTHORN_HTTP_PORT": str(free_port()),
        "POSTHORN_SMTP_PORT": str(free_port()),
        "POSTHORN_INBOUND_PORT": str(free_port()),
        "POSTHORN_HOSTNAME": "mail.posthorn.test",
        "POSTHORN_MX_PORT": str(sink.port),
        "POSTHORN_MX_ALLOW_PRIVATE": "true",
        "POSTHORN_DNS_NAMESERVERS": dns.nameserver,
        "POSTHORN_WORKER_POLL_SECONDS": "0.1",
        "POSTHORN_WORKER_CONCURRENCY": str(IN_FLIGHT),
    }


async def api_key(settings: Settings, dns: DnsServer) -> str:
    """A migrated database with an account, its verified domain and a key (what the admin
    commands and the domain routes would make, without a process start each)."""
    db = Database(settings.effective_database_url)
    try:
        await migrate(db)
        services = build_services(settings, db)
        try:
            account = await services.accounts.create_account("acme")
            await verified_domain(services, dns, account.id)
            return (await services.accounts.create_key(account.id, name="k")).key
        finally:
            await services.close()
    finally:
        await db.dispose()


async def submit(base: str, key: str, count: int) -> set[str]:
    """Submit ``count`` emails from 8 clients; the ids of those accepted."""
    accepted: set[str] = set()
    numbers = iter(range(count))
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def one() -> None:
            for n in numbers:
                response = await client.post(
                    "/v1/emails",
                    headers={"X-API-KEY": key},
                    json={
                        "from": "hello@acme.test",
                        "to": [f"user{n}@example.test"],
                        "subject": "in flight",
                        "text": "must arrive once",
                    },
                )
                if response.status_code == 200:
                    accepted.add(response.json()["id"])

        await asyncio.gather(*(one() for _ in range(8)))
    return accepted


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the SQL: test_lease_renewal
def test_a_restarted_server_resumes_the_deliveries_a_killed_one_held(
    settings: Settings, env: dict[str, str], sink: SmtpSink, dns: DnsServer
) -> None:
    key = asyncio.run(api_key(settings, dns))
    base = f"http://127.0.0.1:{env['POSTHORN_HTTP_PORT']}"
    # A slow MX holds every session at its greeting: the worker's deliveries are leased and in
    # flight, and none has reached DATA, so the kill cannot make a duplicate.
    sink.slow(STALL)
    proc = start(env)
    try:
        accepted = asyncio.run(submit(base, key, EMAILS))
        assert len(accepted) == EMAILS
        assert wait_until(lambda: sink.connections >= IN_FLIGHT, timeout=30), sink.connections
        in_flight = sink.connections
    finally:
        kill(proc)
    killed = time.monotonic()

    sink.slow(0)
    proc = start(env)
    up = time.monotonic()
    expected = {f"{email_id}@mail.posthorn.test" for email_id in accepted}
    try:
        wait_until(lambda: expected <= set(message_ids(sink.messages)), timeout=RESUME_WITHIN)
        done = time.monotonic()
        time.sleep(1.0)  # let a second send of anything show up
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    pairs = Counter((mid, m.rcpt_tos) for m in sink.messages for mid in message_ids([m]))
    missing = expected - {mid for mid, _ in pairs}
    print(
        f"\n{in_flight} of {EMAILS} deliveries in flight at the kill; the restarted server was "
        f"up {up - killed:.1f} s after it; {len(expected) - len(missing)} of {len(expected)} "
        f"delivered {done - up:.1f} s after that ({done - killed:.1f} s after the kill)"
    )
    assert in_flight >= IN_FLIGHT, "too few deliveries were in flight at the kill to prove anything"
    assert not missing, (
        f"{len(missing)} accepted emails not delivered within {RESUME_WITHIN:.0f} s "
        "of the restart: a dead worker's leases still hold them"
    )
    assert max(pairs.values()) == 1, "a delivery was sent twice"
