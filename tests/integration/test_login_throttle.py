"""The failed-login throttle with real clients: parallel valid logins are never refused for
each other's pending checks, parallel guesses get no more checks than the limit, and the limit
holds for the whole deployment (several servers on one database), on both databases.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from posthorn.errors import AuthenticationFailed, LimitExceeded
from posthorn.services import login_throttle
from posthorn.services.container import build_services
from posthorn.settings import Settings
from posthorn.store.database import Database
from tests.support.dns import DnsServer
from tests.support.submission import (
    PASSWORD,
    SENDER,
    Start,
    Tenant,
    authenticate,
    client_context,
    dns_with_mx,
)

pytest_plugins = ["tests.support.submission_fixtures"]

PARALLEL = 20
CLIENT_TIMEOUT = 60.0


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with dns_with_mx() as server:
        yield server


def parallel_logins(port: int, credentials: list[tuple[str, str]]) -> list[int]:
    """One smtplib session per credential, each in its own thread: all get ready (EHLO,
    STARTTLS, EHLO), then all send AUTH PLAIN at the same moment. The AUTH reply codes."""
    ready = threading.Barrier(len(credentials), timeout=CLIENT_TIMEOUT)

    def login(user: str, password: str) -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as client:
            client.ehlo("app.test")
            client.starttls(context=client_context())
            client.ehlo("app.test")
            ready.wait()
            try:
                code, _ = authenticate(client, "PLAIN", user, password)
            except smtplib.SMTPServerDisconnected:
                return 421  # smtplib raises rather than returning the 421 it was told
            return code

    with ThreadPoolExecutor(max_workers=len(credentials)) as pool:
        return list(pool.map(lambda c: login(*c), credentials))


def one_login(port: int, user: str, password: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=CLIENT_TIMEOUT) as client:
        client.ehlo("app.test")
        client.starttls(context=client_context())
        client.ehlo("app.test")
        try:
            return authenticate(client, "PLAIN", user, password)[0]
        except smtplib.SMTPServerDisconnected:
            return 421


async def test_parallel_valid_logins_from_one_host_all_succeed(
    start_smtp: Start, smtp_tenant: Tenant
) -> None:
    # A small limit: valid logins must not use it up however many are checked at once.
    server = await start_smtp(smtp_auth_failure_limit=3)
    key = smtp_tenant.keys["sending_access"]
    codes = await asyncio.to_thread(parallel_logins, server.port, [("apikey", key)] * PARALLEL)
    assert codes == [235] * PARALLEL
    # The sender's password (an argon2 check each) too.
    codes = await asyncio.to_thread(parallel_logins, server.port, [(SENDER, PASSWORD)] * PARALLEL)
    assert codes == [235] * PARALLEL


async def test_parallel_wrong_passwords_get_no_more_checks_than_the_limit(
    start_smtp: Start, smtp_tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="posthorn.smtp")
    limit = 5
    server = await start_smtp(smtp_auth_failure_limit=limit)
    guesses = [("apikey", f"phk_guess-{n}") for n in range(PARALLEL)]
    codes = await asyncio.to_thread(parallel_logins, server.port, guesses)
    checked = sum(1 for r in caplog.records if getattr(r, "action", "") == "smtp_auth_failed")
    assert checked == limit
    assert sorted(codes) == [421] * (PARALLEL - limit) + [535] * limit


async def test_two_smtp_servers_on_one_database_share_the_limit(
    start_smtp: Start, smtp_tenant: Tenant
) -> None:
    limit = 4
    first = await start_smtp(smtp_auth_failure_limit=limit)
    second = await start_smtp(smtp_auth_failure_limit=limit)
    codes = []
    for n in range(2 * limit + 2):  # one server after the other
        port = (first, second)[n % 2].port
        codes.append(await asyncio.to_thread(one_login, port, SENDER, f"guess {n}"))
    assert codes == [535] * limit + [421] * (limit + 2)


async def test_two_web_processes_on_one_database_share_the_bizmail_limit(
    settings: Settings, db: Database, smtp_tenant: Tenant
) -> None:
    limit = 3
    config = settings.model_copy(update={"login_failure_limit": limit})
    first, second = build_services(config, db), build_services(config, db)
    try:
        await first.users.create_user(smtp_tenant.account_id, username="ann", password=PASSWORD)
        outcomes: list[str] = []
        for n in range(2 * limit):
            tokens = (first, second)[n % 2].tokens
            try:
                await tokens.login("ann", f"guess {n}", client_ip="203.0.113.9")
            except AuthenticationFailed:
                outcomes.append("401")
            except LimitExceeded:
                outcomes.append("429")
        assert outcomes == ["401"] * limit + ["429"] * limit
        # Another network still logs in, through either.
        pair = await second.tokens.login("ann", PASSWORD, client_ip="198.51.100.1")
        assert pair.access_token
    finally:
        await first.close()
        await second.close()


async def test_a_wait_that_runs_out_blocks_no_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that waited too long for a place among the checks in flight is told to try
    again, but no password was wrong: the network is not marked blocked for the next one."""
    monkeypatch.setattr(login_throttle, "MAX_WAIT", 0.2)
    throttle = login_throttle.LoginThrottle(db, scope="smtp", limit=10, window=60)
    release = asyncio.Event()
    holding = 0

    async def hold_a_place() -> None:
        nonlocal holding
        async with throttle.attempt("127.0.0.9"):
            holding += 1
            await release.wait()

    holders = [asyncio.create_task(hold_a_place()) for _ in range(login_throttle.MAX_IN_FLIGHT)]
    for _ in range(200):
        if holding == login_throttle.MAX_IN_FLIGHT:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(LimitExceeded):
        async with throttle.attempt("127.0.0.9"):
            pass
    release.set()
    await asyncio.gather(*holders)
    assert not throttle.known_blocked("127.0.0.9")
    async with throttle.attempt("127.0.0.9"):
        pass  # a place at once: no failure was counted
