"""An account's relay may not point into the server's own network (server-side request forgery).

Over real HTTP and a real worker: the relay's host is resolved with the test DNS server and
refused at save when any address is loopback, private, link-local or a cloud metadata
service; the worker checks again on the address it connects to, so a DNS answer changed after
the save (rebinding), or a relay saved before the check existed, reaches nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthorn.delivery.hosts import DnsHostResolver
from posthorn.services.container import Services
from posthorn.services.relays import Relays
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.tables import relays, utcnow
from tests.conftest import LiveServer
from tests.support.delivery import deliver_due
from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink

PUBLIC = "93.184.216.34"  # resolved, never connected to
MESSAGE: dict[str, Any] = {
    "from": "hello@acme.test",
    "to": ["user@example.test"],
    "subject": "Hi",
    "text": "hello",
}


def h(account: dict[str, str]) -> dict[str, str]:
    return {"X-API-KEY": account["full_access"]}


@pytest.fixture
def mx(dns: DnsServer) -> Iterator[SmtpSink]:
    """The recipients' MX: mail that does not go through a relay lands here."""
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
def relay_sink() -> Iterator[SmtpSink]:
    """An SMTP server on loopback standing for what a relay must not reach (or, where private
    relays are allowed, the relay itself)."""
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
def allowing(settings: Settings, services: Services, db: Database) -> Services:
    """The services of a deployment with ``RELAY_ALLOW_PRIVATE=true``."""
    allowed = settings.model_copy(update={"relay_allow_private": True})
    return dataclasses.replace(
        services, settings=allowed, relays=Relays(db, allowed, DnsHostResolver(allowed))
    )


@pytest.fixture
async def allowing_http(allowing: Services) -> AsyncIterator[httpx.AsyncClient]:
    server = LiveServer(allowing.settings, allowing)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        await server.stop()


def relay(host: str, port: int = 587, **more: Any) -> dict[str, Any]:
    return {"name": "provider", "host": host, "port": port, "tls": "none", **more}


REFUSED = [
    ("169.254.169.254", 80, "169.254.169.254", "link-local"),
    ("localhost", 6379, "127.0.0.1", "loopback"),
    ("127.0.0.1", 25, "127.0.0.1", "loopback"),
    ("10.0.0.5", 25, "10.0.0.5", "private"),
    ("192.168.1.1", 25, "192.168.1.1", "private"),
    ("100.64.0.1", 25, "100.64.0.1", "carrier-grade NAT"),
    ("0.0.0.0", 25, "0.0.0.0", "unspecified"),
    ("internal.relay.test", 25, "192.168.10.20", "private"),
    ("imds.relay.test", 80, "169.254.169.254", "link-local"),
    ("imds6.relay.test", 80, "fd00:ec2::254", "private"),
    ("mixed.relay.test", 25, "127.0.0.1", "loopback"),  # one bad address is enough
]


async def test_private_and_metadata_hosts_are_refused_at_save(
    http: httpx.AsyncClient, account: dict[str, str], dns: DnsServer
) -> None:
    dns.add("internal.relay.test", "A", "192.168.10.20")
    dns.add("imds.relay.test", "A", "169.254.169.254")
    dns.add("imds6.relay.test", "AAAA", "fd00:ec2::254")
    dns.add("mixed.relay.test", "A", PUBLIC)
    dns.add("mixed.relay.test", "A", "127.0.0.1")
    for host, port, address, problem in REFUSED:
        response = await http.post("/v1/relays", json=relay(host, port), headers=h(account))
        assert response.status_code == 422, (host, response.text)
        assert response.json()["detail"].startswith(
            f"host: {host} resolves to {address}, a {problem} address"
        ), response.text
    nowhere = await http.post("/v1/relays", json=relay("nowhere.relay.test"), headers=h(account))
    assert nowhere.status_code == 422
    assert (
        nowhere.json()["detail"]
        == "host: the host nowhere.relay.test does not resolve to any address"
    )
    assert (await http.get("/v1/relays", headers=h(account))).json()["total"] == 0


async def test_a_public_relay_is_kept_and_a_private_host_refused_on_update(
    http: httpx.AsyncClient, account: dict[str, str], dns: DnsServer
) -> None:
    dns.add("smtp.provider.test", "A", PUBLIC)
    created = await http.post("/v1/relays", json=relay("SMTP.Provider.test."), headers=h(account))
    assert created.status_code == 200, created.text
    relay_id = created.json()["id"]
    assert created.json()["host"] == "smtp.provider.test"
    for change, field in (
        ({"host": "127.0.0.1"}, "host: "),
        ({"host": "localhost"}, "host: "),
        ({"host": None}, "host: must not be null"),
        ({"name": None}, "name: must not be null"),
        ({"port": None}, "port: must not be null"),
    ):
        response = await http.patch(f"/v1/relays/{relay_id}", json=change, headers=h(account))
        assert response.status_code == 422, (change, response.text)
        assert response.json()["detail"].startswith(field), response.text
    shown = (await http.get(f"/v1/relays/{relay_id}", headers=h(account))).json()
    assert (shown["name"], shown["host"], shown["port"]) == ("provider", "smtp.provider.test", 587)


async def test_metadata_is_refused_even_when_private_relays_are_allowed(
    allowing_http: httpx.AsyncClient, account: dict[str, str], dns: DnsServer
) -> None:
    dns.add("imds6.relay.test", "AAAA", "fd00:ec2::254")
    dns.add("mapped.relay.test", "AAAA", "::ffff:a9fe:a9fe")  # ::ffff:169.254.169.254
    for host in ("169.254.169.254", "100.100.100.200", "imds6.relay.test", "mapped.relay.test"):
        response = await allowing_http.post("/v1/relays", json=relay(host), headers=h(account))
        assert response.status_code == 422, (host, response.text)
        assert "a cloud metadata address" in response.json()["detail"], response.text
    for host in ("127.0.0.1", "localhost", "10.0.0.5"):
        response = await allowing_http.post("/v1/relays", json=relay(host), headers=h(account))
        assert response.status_code == 200, (host, response.text)


async def test_a_loopback_relay_carries_mail_when_private_is_allowed(
    allowing: Services,
    allowing_http: httpx.AsyncClient,
    account: dict[str, str],
    dns: DnsServer,
    mx: SmtpSink,
    relay_sink: SmtpSink,
) -> None:
    # A name only the test DNS knows: the worker connects to the address it resolved and
    # checked, not to whatever the system resolver would make of the name.
    dns.add("relay.loop.test", "A", "127.0.0.1")
    body = relay("relay.loop.test", relay_sink.port, is_default=True)
    assert (await allowing_http.post("/v1/relays", json=body, headers=h(account))).is_success
    sent = await allowing_http.post("/v1/emails", json=MESSAGE, headers=h(account))
    await deliver_due(allowing, mx)
    assert len(relay_sink.messages) == 1 and mx.messages == []
    email = (await allowing_http.get(f"/v1/emails/{sent.json()['id']}", headers=h(account))).json()
    assert email["deliveries"][0]["status"] == "sent"


async def test_an_implicit_tls_relay_is_verified_against_its_name_not_the_address(
    allowing: Services,
    allowing_http: httpx.AsyncClient,
    account: dict[str, str],
    dns: DnsServer,
    mx: SmtpSink,
    tmp_path: Path,
) -> None:
    """The connection goes to the checked address; the certificate must still name the host."""
    dns.add("relay.loop.test", "A", "127.0.0.1")
    with SmtpSink(implicit_tls=True, hostnames=["relay.loop.test"]) as tls_relay:
        ca_file = tmp_path / "relay-ca.pem"
        ca_file.write_bytes(tls_relay.ca_pem)
        body = {**relay("relay.loop.test", tls_relay.port, is_default=True), "tls": "implicit"}
        assert (await allowing_http.post("/v1/relays", json=body, headers=h(account))).is_success
        await allowing_http.post("/v1/emails", json=MESSAGE, headers=h(account))
        await deliver_due(allowing, mx, relay_tls_verify=True, relay_ca_file=ca_file)
        (received,) = tls_relay.messages
        assert received.tls is True


async def refused_delivery(http: httpx.AsyncClient, account: dict[str, str]) -> dict[str, Any]:
    email = (await http.get("/v1/emails", headers=h(account))).json()["data"][0]
    detail = (await http.get(f"/v1/emails/{email['id']}", headers=h(account))).json()
    (delivery,) = detail["deliveries"]
    return dict(delivery)


async def test_a_dns_answer_changed_after_save_is_refused_at_connect(
    services: Services,
    http: httpx.AsyncClient,
    account: dict[str, str],
    dns: DnsServer,
    mx: SmtpSink,
    relay_sink: SmtpSink,
) -> None:
    """DNS rebinding: public when saved, loopback when the worker connects."""
    dns.add("rebind.relay.test", "A", PUBLIC)
    body = relay("rebind.relay.test", relay_sink.port, is_default=True)
    assert (await http.post("/v1/relays", json=body, headers=h(account))).is_success
    dns.remove("rebind.relay.test")
    dns.add("rebind.relay.test", "A", "127.0.0.1")
    await http.post("/v1/emails", json=MESSAGE, headers=h(account))
    await deliver_due(services, mx)

    assert relay_sink.connections == 0 and mx.messages == []
    delivery = await refused_delivery(http, account)
    assert delivery["status"] == "deferred"
    assert delivery["last_reply"].startswith(
        "refused: the relay host rebind.relay.test resolves to 127.0.0.1, a loopback address"
    )


@pytest.mark.parametrize(
    ("allow_private", "host", "problem"),
    [(False, "127.0.0.1", "loopback"), (True, "169.254.169.254", "cloud metadata")],
)
async def test_a_relay_saved_before_the_check_is_refused_at_connect(
    services: Services,
    allowing: Services,
    http: httpx.AsyncClient,
    account: dict[str, str],
    mx: SmtpSink,
    relay_sink: SmtpSink,
    allow_private: bool,
    host: str,
    problem: str,
) -> None:
    """A row written without the save-time check (an older version wrote it) reaches
    nothing either."""
    now = utcnow()
    async with services.db.write() as conn:
        await conn.execute(
            relays.insert().values(
                id="rel_old",
                account_id=account["account_id"],
                name="old",
                host=host,
                port=relay_sink.port,
                tls="none",
                is_default=1,
                created_at=now,
                updated_at=now,
            )
        )
    await http.post("/v1/emails", json=MESSAGE, headers=h(account))
    await deliver_due(allowing if allow_private else services, mx)

    assert relay_sink.connections == 0 and mx.messages == []
    delivery = await refused_delivery(http, account)
    assert delivery["status"] == "deferred"
    assert delivery["last_reply"].startswith(
        f"refused: the relay host {host} resolves to {host}, a {problem} address"
    )


async def test_the_operators_relay_url_is_trusted(
    services: Services, http: httpx.AsyncClient, account: dict[str, str], mx: SmtpSink
) -> None:
    """``RELAY_URL`` is the operator's own: a Postfix on loopback is what it often is."""
    with SmtpSink(starttls=False) as local_postfix:
        await http.post("/v1/emails", json=MESSAGE, headers=h(account))
        await deliver_due(services, mx, relay_url=f"smtp://127.0.0.1:{local_postfix.port}")
        assert len(local_postfix.messages) == 1
    assert services.settings.relay_allow_private is False
