"""Nothing accepted is ever lost: `posthorn serve` is killed with SIGKILL (the whole process
group, as a power cut would) while clients submit mail, restarted, killed again; at the end
every email that got a 200 must have reached the sink. Duplicates (at-least-once delivery)
are counted and reported. And several worker processes on one PostgreSQL queue never send a
delivery twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from posthorn.services.intake import SendRequest
from posthorn.settings import Settings
from tests.conftest import free_port, make_settings
from tests.support.dns import DnsServer
from tests.support.domains import publish
from tests.support.sink import ReceivedMessage, SmtpSink

TOTAL = 3000  # submissions attempted across the crashes
KILLS = 3


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, database_url: str, sink: SmtpSink, dns: DnsServer) -> dict[str, str]:
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTHORN_")},
        "POSTHORN_DATA_DIR": str(tmp_path / "data"),
        "POSTHORN_DATABASE_URL": database_url,
        "POSTHORN_HTTP_PORT": str(free_port()),
        "POSTHORN_SMTP_PORT": str(free_port()),
        "POSTHORN_INBOUND_PORT": str(free_port()),
        "POSTHORN_HOSTNAME": "mail.posthorn.test",
        "POSTHORN_MX_PORT": str(sink.port),
        "POSTHORN_MX_ALLOW_PRIVATE": "true",
        "POSTHORN_DNS_NAMESERVERS": dns.nameserver,
        "POSTHORN_WORKER_POLL_SECONDS": "0.1",
        # A short lease, so deliveries claimed by a killed worker come back quickly.
        "POSTHORN_WORKER_LEASE_SECONDS": "3",
    }


def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A session of its own: SIGKILL to the group takes web, worker and SMTP down at once.
    proc = subprocess.Popen(
        [sys.executable, "-m", "posthorn", "--log-level", "WARNING", "serve"],
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{env['POSTHORN_HTTP_PORT']}/healthz"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("posthorn serve did not come up")


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "posthorn", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout


def message_ids(received: list[ReceivedMessage]) -> Counter[str]:
    ids: Counter[str] = Counter()
    for item in received:
        for line in item.data.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                ids[line.split(b":", 1)[1].strip().strip(b"<>").decode()] += 1
                break
    return ids


async def submit_until(
    base: str, key: str, stop_at: float, accepted: set[str], counter: list[int]
) -> None:
    """Submit as fast as 16 clients can until ``stop_at``; record ids that got a 200."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def one() -> None:
            while time.monotonic() < stop_at and counter[0] < TOTAL:
                counter[0] += 1
                try:
                    response = await client.post(
                        "/v1/emails",
                        headers={"X-API-KEY": key},
                        json={
                            "from": "hello@acme.test",
                            "to": [f"user{counter[0]}@example.test"],
                            "subject": "durable",
                            "text": "must arrive",
                        },
                    )
                except httpx.HTTPError:
                    continue  # the server died under us: this one was never acknowledged
                if response.status_code == 200:
                    accepted.add(response.json()["id"])

        await asyncio.gather(*(one() for _ in range(16)))


def test_sigkill_never_loses_an_accepted_email(
    env: dict[str, str], sink: SmtpSink, dns: DnsServer
) -> None:
    import json

    proc = start(env)  # migrates the fresh database
    account = json.loads(cli(env, "admin", "create-account", "acme", "--json"))
    key = json.loads(
        cli(env, "admin", "create-key", "--account", account["id"], "--name", "k", "--json")
    )["key"]
    base = f"http://127.0.0.1:{env['POSTHORN_HTTP_PORT']}"
    headers = {"X-API-KEY": key}
    domain = httpx.post(f"{base}/v1/domains", headers=headers, json={"domain": "acme.test"}).json()
    publish(dns, "acme.test", domain["dns_records"])
    assert (
        httpx.post(f"{base}/v1/domains/{domain['id']}/verify", headers=headers).json()["status"]
        == "verified"
    )

    rng = random.Random(1234)
    accepted: set[str] = set()
    counter = [0]
    for _ in range(KILLS):
        asyncio.run(
            submit_until(base, key, time.monotonic() + rng.uniform(1.0, 2.5), accepted, counter)
        )
        kill(proc)
        proc = start(env)
    asyncio.run(submit_until(base, key, time.monotonic() + 30, accepted, counter))

    expected = {f"{email_id}@mail.posthorn.test" for email_id in accepted}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not expected <= set(message_ids(sink.messages)):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)

    delivered = message_ids(sink.messages)
    lost = expected - set(delivered)
    duplicates = sum(n - 1 for n in delivered.values() if n > 1)
    unacknowledged = len(set(delivered) - expected)
    print(
        f"\naccepted {len(accepted)}, delivered {len(delivered)} distinct, lost {len(lost)}, "
        f"duplicates {duplicates}, delivered without a 200 {unacknowledged}"
    )
    assert len(accepted) > 500, "the clients barely got through: the test proves little"
    assert not lost, f"{len(lost)} accepted emails never arrived, e.g. {sorted(lost)[:3]}"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_several_workers_never_send_a_delivery_twice(
    tmp_path: Path, database_url: str, sink: SmtpSink, dns: DnsServer, backend: str
) -> None:
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    settings = make_settings(
        tmp_path,
        database_url,
        dns_nameservers=[dns.nameserver],
        mx_port=sink.port,
        hostname="mail.posthorn.test",
    )
    count = asyncio.run(queue_many(settings, dns, 600))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTHORN_")},
        "POSTHORN_DATA_DIR": str(tmp_path),
        "POSTHORN_DATABASE_URL": database_url,
        "POSTHORN_SECRET_KEY": settings.secret_key,
        "POSTHORN_HOSTNAME": "mail.posthorn.test",
        "POSTHORN_MX_PORT": str(sink.port),
        "POSTHORN_MX_ALLOW_PRIVATE": "true",
        "POSTHORN_DNS_NAMESERVERS": dns.nameserver,
        "POSTHORN_WORKER_POLL_SECONDS": "0.05",
        "POSTHORN_WORKER_CONCURRENCY": "20",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "posthorn", "--log-level", "WARNING", "worker"], env=env
        )
        for _ in range(3)
    ]
    try:
        sink.wait_for(count, timeout=120)
        time.sleep(1.0)  # let any double send show up
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(timeout=60)
    pairs = Counter((mid, m.rcpt_tos) for m in sink.messages for mid in message_ids([m]))
    assert len(pairs) == count
    assert max(pairs.values()) == 1, "a delivery was sent twice"


async def queue_many(settings: Settings, dns: DnsServer, count: int) -> int:
    from posthorn.services.container import build_services
    from posthorn.store.database import Database
    from posthorn.store.migrate import migrate
    from tests.support.domains import verified_domain

    db = Database(settings.effective_database_url)
    await migrate(db)
    services = build_services(settings, db)
    account = await services.accounts.create_account("acme")
    await verified_domain(services, dns, account.id)
    await asyncio.gather(
        *(
            services.intake.submit(
                SendRequest(
                    account_id=account.id,
                    source="api",
                    from_="hello@acme.test",
                    to=[f"user{n}@example.test"],
                    subject="parallel",
                    text="once",
                )
            )
            for n in range(count)
        )
    )
    await services.close()
    await db.dispose()
    return count
