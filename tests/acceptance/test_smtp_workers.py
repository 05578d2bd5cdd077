"""`posthorn smtp` with POSTHORN_SMTP_WORKERS=2: session processes that share one intake.

The server runs as a subprocess; clients are Python's smtplib over loopback, from trusted
127.0.0.1 (so no AUTH is needed); what is checked is what a user would see: the replies, the
emails in the database, quotas counted exactly across the processes, and a clean stop.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from posthorn.services.container import Services
from posthorn.settings import Settings
from posthorn.store.tables import emails
from tests.conftest import free_port
from tests.support.submission import authenticate

QUEUED = re.compile(r"2\.0\.0 Ok: queued as ([0-9a-f-]{36})")
MESSAGE = (
    "From: Ann <ann@acme.test>\r\nTo: bob@example.test\r\nSubject: hello {n}\r\n\r\nbody {n}\r\n"
)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def start(settings: Settings, account_id: str, **extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTHORN_")},
        "POSTHORN_DATA_DIR": str(settings.data_dir),
        "POSTHORN_DATABASE_URL": settings.database_url,
        "POSTHORN_SECRET_KEY": settings.secret_key,
        "POSTHORN_HOSTNAME": "mail.posthorn.test",
        "POSTHORN_SMTP_HOST": "127.0.0.1",
        "POSTHORN_SMTP_PORT": str(port),
        "POSTHORN_SMTP_TRUSTED_NETWORKS": "127.0.0.1/32",
        "POSTHORN_SMTP_TRUSTED_ACCOUNT": account_id,
        "POSTHORN_SMTP_WORKERS": "2",
        **extra,
    }
    proc = subprocess.Popen([sys.executable, "-m", "posthorn", "smtp"], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both session processes listening
        assert proc.poll() is None, "posthorn smtp exited early"
        if len(children(proc.pid)) == 2 and all(listening(p, port) for p in children(proc.pid)):
            return proc, port
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the session processes did not start listening")


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``port`` (from /proc)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return False
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port and inode in inodes:
            return True
    return False


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def send(port: int, n: int) -> str:
    """One message on its own connection; the final reply's text."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("ann@acme.test")
        client.rcpt("bob@example.test")
        code, reply = client.data(MESSAGE.format(n=n).encode())
        return f"{code} {reply.decode()}"


@pytest.fixture
def server(
    settings: Settings, account: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    proc, port = start(settings, account["account_id"])
    yield proc, port
    stop(proc)


async def stored(services: Services) -> dict[str, str]:
    async with services.db.read() as conn:
        rows = await conn.execute(select(emails.c.id, emails.c.subject, emails.c.source))
        return {row.id: row.subject for row in rows if row.source == "smtp"}


async def test_messages_from_both_session_processes_are_committed(
    server: tuple[subprocess.Popen[bytes], int], services: Services
) -> None:
    proc, port = server
    with ThreadPoolExecutor(max_workers=20) as pool:
        replies = list(pool.map(lambda n: send(port, n), range(40)))
    ids = []
    for reply in replies:
        match = QUEUED.search(reply)
        assert reply.startswith("250 ") and match, reply
        ids.append(match.group(1))
    assert await stored(services) == {i: f"hello {n}" for n, i in enumerate(ids)}
    assert stop(proc) == 0
    assert children(proc.pid) == []


async def test_a_refusal_comes_back_from_the_intake_as_in_one_process(
    server: tuple[subprocess.Popen[bytes], int],
) -> None:
    _, port = server
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("ann@acme.test")
        client.rcpt("bob@example.test")
        # The From domain is not one of the account's: the intake refuses it.
        code, reply = client.data(b"From: eve@elsewhere.test\r\nSubject: x\r\n\r\nbody\r\n")
    assert code == 553, reply
    assert b"5.7.1" in reply and b"elsewhere.test" in reply


async def test_a_quota_is_exact_across_the_session_processes(
    settings: Settings, account: dict[str, str], services: Services
) -> None:
    plans = (
        '{"TINY": {"name": "tiny", "daily_limit": 12, "hourly_limit": 100, "monthly_limit": 100}}'
    )
    proc, port = start(
        settings, account["account_id"], POSTHORN_PLANS=plans, POSTHORN_DEFAULT_PLAN="TINY"
    )
    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            replies = list(pool.map(lambda n: send(port, n), range(20)))
    finally:
        assert stop(proc) == 0
    accepted = [r for r in replies if r.startswith("250 ")]
    refused = [r for r in replies if not r.startswith("250 ")]
    assert len(accepted) == 12, replies
    assert refused and all(r.startswith("452 4.7.1") for r in refused), refused
    assert len(await stored(services)) == 12


async def test_the_parent_stops_when_a_session_process_dies(
    settings: Settings, account: dict[str, str]
) -> None:
    proc, _ = start(settings, account["account_id"])
    first, second = children(proc.pid)
    os.kill(first, signal.SIGKILL)
    assert proc.wait(timeout=60) == 1  # whatever supervises Posthorn sees it
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # the other one was stopped too (bounded wait)
            os.kill(second, 0)
            time.sleep(0.1)


def wrong_login(port: int, n: int) -> int:
    """One AUTH PLAIN with a wrong password on its own connection; the reply code."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        try:
            return authenticate(client, "PLAIN", "ann@acme.test", f"guess {n}")[0]
        except smtplib.SMTPServerDisconnected:
            return 421


async def test_failed_logins_are_counted_across_the_session_processes(
    settings: Settings, account: dict[str, str]
) -> None:
    proc, port = start(
        settings,
        account["account_id"],
        POSTHORN_SMTP_AUTH_FAILURE_LIMIT="3",
        POSTHORN_SMTP_AUTH_REQUIRE_TLS="false",
    )
    try:
        # One after the other, each on a new connection: the kernel spreads them over both
        # session processes, which together allow three.
        codes = [wrong_login(port, n) for n in range(10)]
    finally:
        assert stop(proc) == 0
    assert codes == [535] * 3 + [421] * 7


async def test_the_per_client_cap_holds_across_the_session_processes(
    settings: Settings, account: dict[str, str]
) -> None:
    proc, port = start(
        settings, account["account_id"], POSTHORN_SMTP_MAX_CONNECTIONS_PER_CLIENT="4"
    )
    sockets = []
    try:
        greetings = []
        for _ in range(10):
            # Not from 127.0.0.1: that is a trusted network here, which is not capped.
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=30, source_address=("127.0.0.2", 0)
            )
            sockets.append(sock)
            greetings.append(sock.recv(100)[:4])
    finally:
        for sock in sockets:
            sock.close()
        assert stop(proc) == 0
    greeted = greetings.count(b"220 ")
    assert 2 <= greeted <= 4, greetings  # each process allows its half of the cap
    assert greetings.count(b"421 ") == 10 - greeted
