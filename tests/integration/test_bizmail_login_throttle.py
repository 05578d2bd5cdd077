"""Failed BizMail logins throttled per client network, over real HTTP.

The app believes ``X-Forwarded-For`` from 127.0.0.1 here (``POSTHORN_TRUSTED_PROXIES``), so
the tests can speak for several client networks through loopback, as a reverse proxy would.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from posthorn.services.container import Services
from posthorn.settings import Settings
from posthorn.store.users import UserRow
from tests.conftest import make_settings
from tests.support.dns import DnsServer

PASSWORD = "correct horse battery"
TOKEN = "/api/1.0/auth/token"
LIMIT = 3
WINDOW = 300


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dns: DnsServer) -> Settings:
    return make_settings(
        tmp_path,
        database_url,
        dns_nameservers=[dns.nameserver],
        trusted_proxies=["127.0.0.1"],
        login_failure_limit=LIMIT,
        login_failure_window=WINDOW,
    )


@pytest.fixture
async def user(services: Services, account: dict[str, str]) -> UserRow:
    return await services.users.create_user(
        account["account_id"], username="portal.user", password=PASSWORD
    )


async def login(
    http: httpx.AsyncClient,
    client: str | None,
    password: str = PASSWORD,
    username: str = "portal.user",
    **headers: str,
) -> httpx.Response:
    if client is not None:
        headers["X-Forwarded-For"] = client
    return await http.post(
        TOKEN, json={"username": username, "password": password}, headers=headers
    )


def throttled(response: httpx.Response) -> str:
    """Check a refusal; its text with the number of seconds taken out."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    # Failures are counted in buckets of a sixth of the window: one counts for at least the
    # window, and at most a bucket longer.
    assert WINDOW - 30 <= retry_after <= WINDOW + WINDOW // 6
    detail = response.json()["detail"]
    assert set(response.json()) == {"detail"}  # BizMail's own error shape
    assert f"{retry_after} " in detail
    return re.sub(r"\d+", "N", detail)


async def test_after_the_limit_even_the_right_password_is_refused_for_that_network_only(
    http: httpx.AsyncClient, user: UserRow
) -> None:
    attacker = "203.0.113.7"
    wrong = await login(http, attacker, password="wrong-password")
    unknown = await login(http, attacker, username="nobody")
    wrong_again = await login(http, attacker, password="another-guess")
    assert [r.status_code for r in (wrong, unknown, wrong_again)] == [401, 401, 401]

    right = await login(http, attacker)
    assert throttled(right) == "Too many failed logins from your network; try again in N s"
    # The refusal is the same for a user that does not exist: it tells nothing about users.
    nobody = await login(http, attacker, username="nobody", password="x")
    assert throttled(nobody) == throttled(right)
    assert nobody.headers["content-type"] == right.headers["content-type"]
    vi = await login(http, attacker, **{"Content-Language": "vi"})
    assert throttled(vi).startswith("Quá nhiều lần đăng nhập thất bại")

    # Other networks, and the proxy's own address, are not affected.
    assert (await login(http, "198.51.100.7")).status_code == 200
    assert (await login(http, None)).status_code == 200


async def test_ipv6_clients_are_counted_per_64(http: httpx.AsyncClient, user: UserRow) -> None:
    for host in range(1, LIMIT + 1):
        response = await login(http, f"2001:db8:0:7::{host}", password="wrong-password")
        assert response.status_code == 401
    throttled(await login(http, "2001:db8:0:7::ffff"))
    assert (await login(http, "2001:db8:0:8::1")).status_code == 200


async def test_a_success_in_between_neither_counts_nor_clears_the_failures(
    http: httpx.AsyncClient, user: UserRow
) -> None:
    client = "192.0.2.44"
    for _ in range(LIMIT - 1):
        assert (await login(http, client, password="wrong-password")).status_code == 401
    assert (await login(http, client)).status_code == 200
    # Had the success counted, this would already be a 429; had it cleared, the next too.
    assert (await login(http, client, password="wrong-password")).status_code == 401
    throttled(await login(http, client))


async def test_a_forged_forwarded_for_does_not_change_the_network(
    http: httpx.AsyncClient, user: UserRow
) -> None:
    # Only the hop the trusted proxy reported is believed: what the client wrote before it
    # is ignored, so varying it buys no new attempts.
    for forged in range(LIMIT):
        response = await login(http, f"10.9.9.{forged}, 203.0.113.50", password="wrong")
        assert response.status_code == 401
    throttled(await login(http, "10.1.1.1, 203.0.113.50"))
    throttled(await login(http, "203.0.113.50"))


async def test_concurrent_guesses_cannot_exceed_the_limit(
    http: httpx.AsyncClient, user: UserRow
) -> None:
    guesses = await asyncio.gather(
        *(login(http, "203.0.113.99", password=f"guess-{n}") for n in range(4 * LIMIT))
    )
    codes = sorted(response.status_code for response in guesses)
    assert codes == [401] * LIMIT + [429] * (3 * LIMIT)
