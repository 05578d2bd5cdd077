"""TLS_POLICY against real SMTP sinks and a real DNS server, over loopback sockets.

The sinks' certificates come from a throwaway CA (trustme): ``verify`` succeeds only with that
CA in TLS_CA_FILE and a certificate issued for the MX host name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from posthorn.delivery.transport import Envelope, SmtpDeliverer
from posthorn.domain.results import Delivered, DeliveryResult, SoftFail
from posthorn.settings import Settings
from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink

# The sink and dns_server fixtures.
pytest_plugins = ["tests.support.fixtures"]

MESSAGE = b"From: a@posthorn.test\r\nTo: bob@bank.example\r\nSubject: Hi\r\n\r\nHello\r\n"

MakeDeliverer = Callable[..., SmtpDeliverer]


@pytest.fixture
async def make_deliverer(tmp_path: Path) -> AsyncIterator[MakeDeliverer]:
    """Deliverers for direct delivery to ``sink`` through ``dns``; closed after the test."""
    made: list[SmtpDeliverer] = []

    def make(sink: SmtpSink, dns: DnsServer, **overrides: Any) -> SmtpDeliverer:
        settings = Settings(
            mx_allow_private=True,
            hostname="posthorn.test",
            data_dir=tmp_path,
            secret_key="x",
            mx_port=sink.port,
            dns_nameservers=[dns.nameserver],
            **overrides,
        )
        deliverer = SmtpDeliverer(settings)
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        await deliverer.aclose()


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    """The sinks' CA (one per test process) as a PEM file, for TLS_CA_FILE."""
    path = tmp_path / "sink-ca.pem"
    path.write_bytes(SmtpSink().ca_pem)
    return path


def mx(dns: DnsServer, domain: str, host: str, address: str = "127.0.0.1", pref: int = 10) -> None:
    dns.add(domain, "MX", host, priority=pref)
    dns.add(host, "A", address)


def to(recipient: str) -> Envelope:
    return Envelope("a@posthorn.test", recipient, MESSAGE)


def delivered(result: DeliveryResult) -> Delivered:
    assert isinstance(result, Delivered), result
    return result


def deferred(result: DeliveryResult) -> SoftFail:
    assert isinstance(result, SoftFail), result
    return result


def transcript(result: DeliveryResult) -> str:
    return "\n".join(result.attempt.transcript)


# verify


async def test_verify_delivers_when_the_certificate_names_the_mx_host(
    dns_server: DnsServer, make_deliverer: MakeDeliverer, ca_file: Path
) -> None:
    mx(dns_server, "bank.example", "mx.bank.example")
    with SmtpSink(hostnames=["mx.bank.example"]) as server:
        deliverer = make_deliverer(
            server, dns_server, tls_policy={"bank.example": "verify"}, tls_ca_file=ca_file
        )

        result = delivered(await deliverer.deliver(to("bob@bank.example")))

        [received] = server.wait_for(1)
    assert received.tls is True
    assert result.attempt.tls_version is not None
    assert result.attempt.tls_version.startswith("TLS")
    assert "* TLS policy 'verify' for bank.example" in result.attempt.transcript
    assert "certificate verified for mx.bank.example" in transcript(result)


async def test_verify_without_the_ca_defers_and_sends_nothing(
    dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    mx(dns_server, "bank.example", "mx.bank.example")
    with SmtpSink(hostnames=["mx.bank.example"]) as server:
        deliverer = make_deliverer(server, dns_server, tls_policy={"bank.example": "verify"})

        result = deferred(await deliverer.deliver(to("bob@bank.example")))

        assert server.messages == []
        assert server.connections == 1
    assert result.reason.startswith("TLS required by policy 'verify' for bank.example: ")
    assert "certificate verify failed" in result.reason
    assert result.attempt.enhanced_code == "4.7.5"
    assert result.attempt.tls_version is None
    assert result.possible_duplicate is False
    assert "reconnecting without TLS" not in transcript(result)
    assert not any(line.startswith("> MAIL") for line in result.attempt.transcript)


async def test_verify_refuses_a_certificate_for_another_name(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer, ca_file: Path
) -> None:
    # The sink's certificate names mx.sink.test, localhost and the loopback addresses.
    mx(dns_server, "bank.example", "mx.bank.example")
    deliverer = make_deliverer(
        sink, dns_server, tls_policy={"bank.example": "verify"}, tls_ca_file=ca_file
    )

    result = deferred(await deliverer.deliver(to("bob@bank.example")))

    assert "certificate verify failed" in result.reason
    assert "mx.bank.example" in result.reason
    assert result.attempt.enhanced_code == "4.7.5"
    assert sink.messages == []
    assert sink.connections == 1


async def test_verify_moves_on_to_an_mx_whose_certificate_verifies(
    dns_server: DnsServer, make_deliverer: MakeDeliverer, ca_file: Path
) -> None:
    mx(dns_server, "bank.example", "mx1.bank.example", "127.0.0.1", pref=10)
    mx(dns_server, "bank.example", "mx2.bank.example", "127.0.0.2", pref=20)
    with (
        SmtpSink(host="127.0.0.1", hostnames=["mx.elsewhere.test"]) as wrong,
        SmtpSink(host="127.0.0.2", port=wrong.port, hostnames=["mx2.bank.example"]) as right,
    ):
        deliverer = make_deliverer(
            wrong, dns_server, tls_policy={"bank.example": "verify"}, tls_ca_file=ca_file
        )

        result = delivered(await deliverer.deliver(to("bob@bank.example")))

        assert right.wait_for(1)[0].tls is True
        assert wrong.messages == []
    assert result.attempt.remote_host == "mx2.bank.example"
    assert "certificate verify failed" in transcript(result)


# encrypt


async def test_encrypt_without_starttls_defers_and_sends_nothing(
    dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    mx(dns_server, "partner.example", "mx.partner.example")
    with SmtpSink(starttls=False) as plain:
        deliverer = make_deliverer(plain, dns_server, tls_policy={"partner.example": "encrypt"})

        result = deferred(await deliverer.deliver(to("bob@partner.example")))

        assert plain.messages == []
    assert result.reason == (
        "TLS required by policy 'encrypt' for partner.example: the server does not offer STARTTLS"
    )
    assert result.attempt.enhanced_code == "4.7.4"
    assert not any(line.startswith("> MAIL") for line in result.attempt.transcript)


async def test_encrypt_after_a_broken_handshake_does_not_retry_in_clear(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    mx(dns_server, "partner.example", "mx.partner.example")
    sink.break_tls_next()
    deliverer = make_deliverer(sink, dns_server, tls_policy={"partner.example": "encrypt"})

    result = deferred(await deliverer.deliver(to("bob@partner.example")))

    assert sink.messages == []
    assert sink.connections == 1
    assert result.reason.startswith(
        "TLS required by policy 'encrypt' for partner.example: TLS handshake failed"
    )
    assert result.attempt.enhanced_code == "4.7.5"
    assert "reconnecting without TLS" not in transcript(result)


@pytest.mark.parametrize(
    ("code", "text"), [(454, "4.7.0 TLS not available"), (554, "5.7.0 no TLS for you")]
)
async def test_encrypt_with_starttls_refused_defers_whatever_the_reply(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer, code: int, text: str
) -> None:
    mx(dns_server, "partner.example", "mx.partner.example")
    sink.fail_next(stage="starttls", code=code, message=text)
    deliverer = make_deliverer(sink, dns_server, tls_policy={"partner.example": "encrypt"})

    result = deferred(await deliverer.deliver(to("bob@partner.example")))

    assert sink.messages == []
    assert f"STARTTLS refused: {code}" in result.reason
    assert result.attempt.enhanced_code == "4.7.4"
    assert "continuing without TLS" not in transcript(result)


async def test_encrypt_takes_a_certificate_nobody_vouches_for(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    mx(dns_server, "partner.example", "mx.partner.example")
    deliverer = make_deliverer(sink, dns_server, tls_policy={"partner.example": "encrypt"})

    result = delivered(await deliverer.deliver(to("bob@partner.example")))

    assert sink.wait_for(1)[0].tls is True
    assert "certificate not verified" in transcript(result)


# may, and matching


@pytest.mark.parametrize(
    "table", [{}, {"example.test": "may"}, {"bank.example": "verify", ".example.test": "encrypt"}]
)
async def test_may_still_falls_back_to_clear_text_after_a_broken_handshake(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer, table: dict[str, str]
) -> None:
    mx(dns_server, "example.test", "mx.example.test")
    sink.break_tls_next()
    deliverer = make_deliverer(sink, dns_server, tls_policy=table)

    result = delivered(await deliverer.deliver(to("bob@example.test")))

    assert sink.wait_for(1)[0].tls is False
    assert sink.connections == 2
    assert "reconnecting without TLS" in transcript(result)
    assert "TLS policy" not in transcript(result)


async def test_a_dotted_key_covers_subdomains_but_not_the_domain(
    dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    mx(dns_server, "eu.bank.example", "mx.bank.example")
    dns_server.add("bank.example", "MX", "mx.bank.example", priority=10)
    with SmtpSink(starttls=False) as plain:
        deliverer = make_deliverer(plain, dns_server, tls_policy={".bank.example": "encrypt"})

        sub = deferred(await deliverer.deliver(to("bob@eu.bank.example")))
        parent = delivered(await deliverer.deliver(to("bob@bank.example")))

        [received] = plain.wait_for(1)
    assert "policy 'encrypt' for eu.bank.example" in sub.reason
    assert received.rcpt_tos == ("bob@bank.example",)
    assert parent.attempt.tls_version is None


async def test_an_internationalised_key_matches_the_a_label(
    dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    mx(dns_server, "xn--bcher-kva.test", "mx.xn--bcher-kva.test")
    with SmtpSink(starttls=False) as plain:
        deliverer = make_deliverer(plain, dns_server, tls_policy={"Bücher.test": "encrypt"})

        result = deferred(await deliverer.deliver(to("bob@bücher.test")))

        assert plain.messages == []
    assert "policy 'encrypt' for xn--bcher-kva.test" in result.reason


# Pooled connections under mixed policies (one address, so one pool slot set).


async def test_a_clear_text_connection_is_not_reused_for_an_encrypt_domain(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    mx(dns_server, "example.test", "mx.example.test")
    mx(dns_server, "partner.example", "mx.partner.example")
    deliverer = make_deliverer(sink, dns_server, tls_policy={"partner.example": "encrypt"})
    sink.break_tls_next()
    delivered(await deliverer.deliver(to("bob@example.test")))  # in clear, after a fallback
    assert sink.connections == 2

    strict = delivered(await deliverer.deliver(to("bob@partner.example")))
    relaxed = delivered(await deliverer.deliver(to("alice@example.test")))

    received = sink.wait_for(3)
    assert [message.tls for message in received] == [False, True, True]
    assert "reuse connection" not in transcript(strict)
    # The encrypted connection serves the domain that asks for less.
    assert "reuse connection" in transcript(relaxed)
    assert sink.connections == 3


async def test_a_connection_verified_for_one_mx_name_is_not_reused_for_another(
    dns_server: DnsServer, make_deliverer: MakeDeliverer, ca_file: Path
) -> None:
    mx(dns_server, "bank.example", "mx.bank.example")
    mx(dns_server, "other.example", "mx.other.example")
    mx(dns_server, "example.test", "mx.example.test")
    with SmtpSink(hostnames=["mx.bank.example", "mx.other.example"]) as server:
        deliverer = make_deliverer(
            server,
            dns_server,
            tls_policy={"bank.example": "verify", "other.example": "verify"},
            tls_ca_file=ca_file,
        )

        delivered(await deliverer.deliver(to("bob@bank.example")))
        other = delivered(await deliverer.deliver(to("bob@other.example")))
        assert server.connections == 2
        relaxed = delivered(await deliverer.deliver(to("bob@example.test")))

        assert len(server.wait_for(3)) == 3
        assert server.connections == 2
    assert "reuse connection" not in transcript(other)
    assert "certificate verified for mx.other.example" in transcript(other)
    assert "reuse connection" in transcript(relaxed)


# Configuration.


def test_an_unknown_policy_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(
        hostname="posthorn.test",
        data_dir=tmp_path,
        secret_key="x",
        tls_policy={"bank.example": "secure"},
    )

    with pytest.raises(ValueError, match="unknown TLS policy 'secure'"):
        SmtpDeliverer(settings)


def test_a_missing_ca_file_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(
        hostname="posthorn.test",
        data_dir=tmp_path,
        secret_key="x",
        tls_policy={"bank.example": "verify"},
        tls_ca_file=tmp_path / "missing.pem",
    )

    with pytest.raises(FileNotFoundError):
        SmtpDeliverer(settings)
