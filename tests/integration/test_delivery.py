"""SmtpDeliverer against a real SMTP sink and a real DNS server, over loopback sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dns.asyncresolver
import dns.nameserver
import dns.rdtypes.ANY.TXT
import dns.resolver
import pytest

from posthorn.delivery import transport
from posthorn.delivery.transport import Envelope, SmtpDeliverer
from posthorn.domain.results import Delivered, DeliveryResult, HardFail, SoftFail
from posthorn.settings import Settings
from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink

# The sink, dns_server and closed_port fixtures.
pytest_plugins = ["tests.support.fixtures"]

MESSAGE = (
    b"From: Sender <sender@posthorn.test>\r\n"
    b"To: bob@example.test\r\n"
    b"Subject: Hello\r\n"
    b"Message-ID: <1@posthorn.test>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line that starts with a dot\r\n"
    b"..and one with two\r\n"
    b".\r\n"
    b"Bye\r\n"
)
ENVELOPE = Envelope("sender@posthorn.test", "bob@example.test", MESSAGE)

MakeDeliverer = Callable[..., SmtpDeliverer]


@pytest.fixture
async def make_deliverer(tmp_path: Path) -> AsyncIterator[MakeDeliverer]:
    """Build deliverers from Settings overrides; every one is closed after the test."""
    made: list[SmtpDeliverer] = []

    def make(*, relay_tls_context: Any = None, **overrides: Any) -> SmtpDeliverer:
        values: dict[str, Any] = {
            "mx_allow_private": True,
            "hostname": "posthorn.test",
            "data_dir": tmp_path,
            "secret_key": "x",
            # The sinks' certificates come from a throwaway CA; tests that check certificate
            # verification turn it back on.
            "relay_tls_verify": False,
            **overrides,
        }
        deliverer = SmtpDeliverer(Settings(**values), relay_tls_context=relay_tls_context)
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        await deliverer.aclose()


def direct(make: MakeDeliverer, sink: SmtpSink, dns: DnsServer, **overrides: Any) -> SmtpDeliverer:
    return make(mx_port=sink.port, dns_nameservers=[dns.nameserver], **overrides)


def one_mx(dns: DnsServer, domain: str = "example.test", address: str = "127.0.0.1") -> None:
    dns.add(domain, "MX", f"mx.{domain}", priority=10)
    dns.add(f"mx.{domain}", "A", address)


def assert_delivered(result: DeliveryResult) -> Delivered:
    assert isinstance(result, Delivered), result
    return result


# Success.


async def test_delivers_exact_bytes_and_envelope(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    result = assert_delivered(await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE))

    [received] = sink.wait_for(1)
    assert received.data == MESSAGE
    assert received.mail_from == "sender@posthorn.test"
    assert received.rcpt_tos == ("bob@example.test",)
    assert f"SIZE={len(MESSAGE)}" in received.mail_options
    assert result.via_relay is False
    attempt = result.attempt
    assert (attempt.remote_host, attempt.remote_ip) == ("mx.example.test", "127.0.0.1")
    assert (attempt.code, attempt.enhanced_code) == (250, "2.0.0")
    assert "> RCPT TO:<bob@example.test>" in attempt.transcript
    assert not any(b"Hello Bob".decode() in line for line in attempt.transcript)


async def test_null_reverse_path_and_8bit_body(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    body = "Subject: Grüße\r\n\r\nÄpfel und Birnen\r\n".encode()
    deliverer = direct(make_deliverer, sink, dns_server)

    assert_delivered(await deliverer.deliver(Envelope("", "bob@example.test", body)))

    [received] = sink.wait_for(1)
    assert received.mail_from == ""
    assert received.data == body
    assert "BODY=8BITMIME" in received.mail_options


async def test_starttls_is_used_when_offered(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    result = assert_delivered(await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE))

    assert sink.wait_for(1)[0].tls is True
    assert result.attempt.tls_version is not None
    assert result.attempt.tls_version.startswith("TLS")
    assert "> STARTTLS" in result.attempt.transcript


async def test_plain_text_when_starttls_is_not_offered(
    dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    with SmtpSink(starttls=False) as plain:
        result = assert_delivered(await direct(make_deliverer, plain, dns_server).deliver(ENVELOPE))
        assert plain.wait_for(1)[0].tls is False
    assert result.attempt.tls_version is None


async def test_broken_tls_handshake_falls_back_to_plain_text_once(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    sink.break_tls_next()

    result = assert_delivered(await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE))

    assert sink.wait_for(1)[0].tls is False
    assert sink.connections == 2
    transcript = "\n".join(result.attempt.transcript)
    assert "TLS handshake failed" in transcript
    assert "reconnecting without TLS" in transcript


async def test_starttls_refused_with_454_continues_in_plain_text(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    sink.fail_next(stage="starttls", code=454, message="4.7.0 TLS not available")

    result = assert_delivered(await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE))

    assert sink.wait_for(1)[0].tls is False
    assert sink.connections == 1
    assert "* continuing without TLS" in result.attempt.transcript


async def test_internationalised_domain_goes_out_as_a_label(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server, "xn--bcher-kva.test")
    deliverer = direct(make_deliverer, sink, dns_server)

    assert_delivered(
        await deliverer.deliver(Envelope("a@posthorn.test", "bob@bücher.test", MESSAGE))
    )

    assert sink.wait_for(1)[0].rcpt_tos == ("bob@xn--bcher-kva.test",)


async def test_non_ascii_local_part_uses_smtputf8(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    deliverer = direct(make_deliverer, sink, dns_server)

    assert_delivered(
        await deliverer.deliver(Envelope("a@posthorn.test", "jörg@example.test", MESSAGE))
    )

    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ("jörg@example.test",)
    assert "SMTPUTF8" in received.mail_options


# Refusals.


async def test_4xx_at_rcpt_is_a_soft_fail_with_the_hint(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    sink.fail_next(stage="rcpt", code=451, message="4.7.1 Greylisted, try again in 5 minutes")

    result = await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE)

    assert isinstance(result, SoftFail), result
    assert (result.attempt.code, result.attempt.enhanced_code) == (451, "4.7.1")
    assert result.retry_after == timedelta(minutes=5)
    assert result.possible_duplicate is False
    assert sink.messages == []


async def test_550_5_1_1_is_a_hard_fail_that_suppresses(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    sink.fail_next(stage="rcpt", code=550, message="5.1.1 <bob@example.test>: user unknown")

    result = await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE)

    assert isinstance(result, HardFail), result
    assert result.suppress is True
    assert (result.attempt.code, result.attempt.enhanced_code) == (550, "5.1.1")
    assert "550" in result.reason


async def test_554_5_7_1_is_a_hard_fail_that_does_not_suppress(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    sink.fail_next(stage="data", code=554, message="5.7.1 Message rejected as spam")

    result = await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE)

    assert isinstance(result, HardFail), result
    assert result.suppress is False
    assert (result.attempt.code, result.attempt.enhanced_code) == (554, "5.7.1")


async def test_5xx_at_mail_from_is_a_hard_fail_without_suppression(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    sink.fail_next(stage="mail", code=550, message="5.1.8 sender domain does not exist")

    result = await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE)

    assert isinstance(result, HardFail), result
    assert result.suppress is False


async def test_invalid_recipient_is_refused_before_any_connection(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    result = await direct(make_deliverer, sink, dns_server).deliver(
        Envelope("a@posthorn.test", "no-at-sign", MESSAGE)
    )

    assert isinstance(result, HardFail), result
    assert result.attempt.enhanced_code == "5.1.3"
    assert sink.connections == 0


# Broken connections.


async def test_connection_refused_is_a_soft_fail(
    dns_server: DnsServer, make_deliverer: MakeDeliverer, closed_port: int
) -> None:
    one_mx(dns_server)
    deliverer = make_deliverer(mx_port=closed_port, dns_nameservers=[dns_server.nameserver])

    result = await deliverer.deliver(ENVELOPE)

    assert isinstance(result, SoftFail), result
    assert "connection refused" in result.reason
    assert result.attempt.remote_ip == "127.0.0.1"


async def test_connection_dropped_after_the_dot_may_be_a_duplicate(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    dns_server.add("example.test", "MX", "mx2.example.test", priority=20)
    dns_server.add("mx2.example.test", "A", "127.0.0.1")
    sink.drop_next(stage="after_dot")

    result = await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE)

    assert isinstance(result, SoftFail), result
    assert result.possible_duplicate is True
    assert sink.connections == 1, "the next MX must not get a second copy at once"


async def test_connection_dropped_mid_data_is_not_a_duplicate(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    # Larger than the kernel's socket buffers, so the final dot cannot have been written
    # when the server goes away.
    line = b"x" * 998 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * 24_000
    sink.drop_next(stage="data")

    result = await direct(make_deliverer, sink, dns_server).deliver(
        Envelope("a@posthorn.test", "bob@example.test", big)
    )

    assert isinstance(result, SoftFail), result
    assert result.possible_duplicate is False
    assert "sending the message failed" in result.reason


async def test_a_slow_server_times_out(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    sink.slow(1.0)
    # 0.001 turns the 5-minute greeting timeout into 0.3 s.
    deliverer = direct(make_deliverer, sink, dns_server, smtp_timeout_scale=0.001)

    started = time.monotonic()
    result = await deliverer.deliver(ENVELOPE)

    assert isinstance(result, SoftFail), result
    assert "timed out" in result.reason.lower()
    assert time.monotonic() - started < 1.0


# Routing.


async def test_mx_preference_order(dns_server: DnsServer, make_deliverer: MakeDeliverer) -> None:
    with (
        SmtpSink(host="127.0.0.1") as preferred,
        SmtpSink(host="127.0.0.2", port=preferred.port) as backup,
    ):
        dns_server.add("example.test", "MX", "backup.example.test", priority=20)
        dns_server.add("example.test", "MX", "primary.example.test", priority=10)
        dns_server.add("backup.example.test", "A", "127.0.0.2")
        dns_server.add("primary.example.test", "A", "127.0.0.1")

        result = assert_delivered(
            await direct(make_deliverer, preferred, dns_server).deliver(ENVELOPE)
        )

        assert result.attempt.remote_host == "primary.example.test"
        assert len(preferred.wait_for(1)) == 1
        assert backup.messages == []
        assert backup.connections == 0


async def test_falls_back_to_the_second_mx_when_the_first_refuses(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    # Nothing listens on 127.0.0.3 at the sink's port: the connection is refused.
    dns_server.add("example.test", "MX", "mx1.example.test", priority=10)
    dns_server.add("example.test", "MX", "mx2.example.test", priority=20)
    dns_server.add("mx1.example.test", "A", "127.0.0.3")
    dns_server.add("mx2.example.test", "A", "127.0.0.1")

    result = assert_delivered(await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE))

    assert result.attempt.remote_host == "mx2.example.test"
    assert any("connection refused" in line for line in result.attempt.transcript)
    assert len(sink.wait_for(1)) == 1


async def test_falls_back_to_the_next_mx_after_a_4xx_greeting(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    dns_server.add("example.test", "MX", "mx1.example.test", priority=10)
    dns_server.add("example.test", "MX", "mx2.example.test", priority=20)
    dns_server.add("mx1.example.test", "A", "127.0.0.1")
    dns_server.add("mx2.example.test", "A", "127.0.0.1")
    sink.fail_next(stage="connect", code=421, message="4.3.2 too busy, try later")

    result = assert_delivered(await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE))

    assert result.attempt.remote_host == "mx2.example.test"
    assert sink.connections == 2


async def test_domain_without_mx_uses_its_a_record(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    dns_server.add("example.test", "A", "127.0.0.1")

    result = assert_delivered(await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE))

    assert result.attempt.remote_host == "example.test"
    assert len(sink.wait_for(1)) == 1


async def test_null_mx_is_a_hard_fail(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    dns_server.add("example.test", "MX", ".", priority=0)
    dns_server.add("example.test", "A", "127.0.0.1")

    result = await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE)

    assert isinstance(result, HardFail), result
    assert result.attempt.enhanced_code == "5.1.10"
    assert result.suppress is True
    assert sink.connections == 0


async def test_nxdomain_is_a_hard_fail(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    result = await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE)

    assert isinstance(result, HardFail), result
    assert "NXDOMAIN" in result.reason


async def test_servfail_is_a_soft_fail(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    dns_server.servfail("example.test")

    result = await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE)

    assert isinstance(result, SoftFail), result
    assert "SERVFAIL" in result.reason


async def test_an_mx_host_that_cannot_be_resolved_now_is_a_soft_fail(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    dns_server.add("example.test", "MX", "mx.example.test")
    dns_server.servfail("mx.example.test")

    result = await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE)

    assert isinstance(result, SoftFail), result
    assert result.attempt.enhanced_code == "4.4.3"


async def test_loopback_mx_is_refused_unless_private_addresses_are_allowed(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)

    result = await direct(make_deliverer, sink, dns_server, mx_allow_private=False).deliver(
        ENVELOPE
    )

    assert isinstance(result, HardFail), result
    assert "loopback" in result.reason
    assert sink.connections == 0


# Relay.


async def test_relay_with_auth_delivers_via_relay(make_deliverer: MakeDeliverer) -> None:
    password = "p@ss:w/rd%"
    with SmtpSink(auth={"relay-user": password}) as relay:
        deliverer = make_deliverer(
            relay_url=f"smtp://relay-user:{quote(password, safe='')}@127.0.0.1:{relay.port}",
            relay_tls_context=relay.client_context(),
        )

        result = assert_delivered(await deliverer.deliver(ENVELOPE))

        [received] = relay.wait_for(1)
    assert result.via_relay is True
    assert received.authenticated_as == "relay-user"
    assert received.tls is True
    assert received.data == MESSAGE
    transcript = "\n".join(result.attempt.transcript)
    assert "AUTH" in transcript
    assert password not in transcript
    assert quote(password, safe="") not in transcript


async def test_relay_with_implicit_tls(make_deliverer: MakeDeliverer) -> None:
    with SmtpSink(implicit_tls=True, auth={"u": "p"}) as relay:
        deliverer = make_deliverer(
            relay_url=f"smtps://u:p@127.0.0.1:{relay.port}",
            relay_tls_context=relay.client_context(),
        )

        result = assert_delivered(await deliverer.deliver(ENVELOPE))

        assert relay.wait_for(1)[0].tls is True
    assert result.via_relay is True


async def test_relay_tls_is_only_encrypted_when_verification_is_off(
    make_deliverer: MakeDeliverer,
) -> None:
    with SmtpSink(auth={"u": "p"}) as relay:
        deliverer = make_deliverer(
            relay_url=f"smtp://u:p@127.0.0.1:{relay.port}", relay_tls_verify=False
        )

        result = assert_delivered(await deliverer.deliver(ENVELOPE))

        assert relay.wait_for(1)[0].tls is True
    assert any("certificate not verified" in line for line in result.attempt.transcript)


async def test_relay_certificate_is_checked_by_default(
    make_deliverer: MakeDeliverer,
) -> None:
    with SmtpSink(implicit_tls=True, auth={"u": "p"}) as relay:
        # The product's default: verify. The system's CAs do not know the sink's CA.
        assert Settings.model_fields["relay_tls_verify"].default is True
        deliverer = make_deliverer(
            relay_url=f"smtps://u:p@127.0.0.1:{relay.port}", relay_tls_verify=True
        )

        result = await deliverer.deliver(ENVELOPE)

        assert relay.messages == []
    assert isinstance(result, SoftFail), result
    assert "certificate verify failed" in result.reason.lower()


async def test_relay_refusing_the_password_is_a_soft_fail(make_deliverer: MakeDeliverer) -> None:
    with SmtpSink(auth={"u": "right"}) as relay:
        deliverer = make_deliverer(
            relay_url=f"smtp://u:wrong@127.0.0.1:{relay.port}",
            relay_tls_context=relay.client_context(),
        )

        result = await deliverer.deliver(ENVELOPE)

        assert relay.messages == []
    assert isinstance(result, SoftFail), result
    assert result.attempt.code == 535
    assert "wrong" not in "\n".join(result.attempt.transcript)


# Connection reuse.


async def test_sequential_messages_reuse_one_connection(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    deliverer = direct(make_deliverer, sink, dns_server)

    for number in range(20):
        envelope = Envelope("a@posthorn.test", f"user{number}@example.test", MESSAGE)
        assert_delivered(await deliverer.deliver(envelope))

    assert len(sink.wait_for(20)) == 20
    assert sink.connections == 1


async def test_concurrent_messages_share_a_few_connections(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    deliverer = direct(make_deliverer, sink, dns_server)
    envelopes = [
        Envelope("a@posthorn.test", f"user{number}@example.test", MESSAGE) for number in range(20)
    ]

    results = await asyncio.gather(*(deliverer.deliver(envelope) for envelope in envelopes))

    assert all(isinstance(result, Delivered) for result in results), results
    received = sink.wait_for(20)
    assert sorted(rcpt for message in received for rcpt in message.rcpt_tos) == sorted(
        envelope.recipient for envelope in envelopes
    )
    assert 1 <= sink.connections <= 10


async def test_a_connection_closed_by_the_server_is_replaced(
    dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    one_mx(dns_server)
    with SmtpSink() as first:
        deliverer = direct(make_deliverer, first, dns_server)
        assert_delivered(await deliverer.deliver(ENVELOPE))
        port = first.port
    # The pooled connection's server is gone; a new one listens on the same port.
    with SmtpSink(port=port) as second:
        result = assert_delivered(await deliverer.deliver(ENVELOPE))
        assert len(second.wait_for(1)) == 1
        assert second.connections == 1
    assert any("reuse connection" in line for line in result.attempt.transcript)


async def test_idle_connections_are_closed_after_a_while(
    sink: SmtpSink,
    dns_server: DnsServer,
    make_deliverer: MakeDeliverer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "IDLE_SECONDS", 0.1)
    one_mx(dns_server)
    deliverer = direct(make_deliverer, sink, dns_server)
    assert_delivered(await deliverer.deliver(ENVELOPE))

    await asyncio.sleep(0.4)
    result = assert_delivered(await deliverer.deliver(ENVELOPE))

    assert sink.connections == 2
    assert not any("reuse connection" in line for line in result.attempt.transcript)


# The test DNS server itself, as other suites rely on it (DKIM keys, SPF, MX).


def resolver_for(server: DnsServer) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(server.host, server.port)]
    resolver.lifetime = 5.0
    return resolver


async def test_dns_server_splits_long_txt_records(dns_server: DnsServer) -> None:
    key = "v=DKIM1; k=rsa; p=" + "A" * 390
    dns_server.add("sel._domainkey.example.test", "TXT", key)

    answer = await resolver_for(dns_server).resolve("sel._domainkey.example.test", "TXT")

    [rdata] = list(answer)
    assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    assert [len(part) for part in rdata.strings] == [255, len(key) - 255]
    assert b"".join(rdata.strings).decode() == key


async def test_dns_server_nxdomain_nodata_case_and_tcp(dns_server: DnsServer) -> None:
    dns_server.add("Host.Example.TEST.", "A", "192.0.2.1")
    dns_server.add("deep.name.example.test", "A", "192.0.2.2")
    resolver = resolver_for(dns_server)

    answer = await resolver.resolve("host.example.test", "A")
    assert [str(rdata) for rdata in answer] == ["192.0.2.1"]
    nodata = await resolver.resolve("host.example.test", "AAAA", raise_on_no_answer=False)
    assert nodata.rrset is None
    # An empty non-terminal exists (RFC 8020): NODATA, not NXDOMAIN.
    between = await resolver.resolve("name.example.test", "A", raise_on_no_answer=False)
    assert between.rrset is None
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("missing.example.test", "A")
    over_tcp = await resolver.resolve("host.example.test", "A", tcp=True)
    assert [str(rdata) for rdata in over_tcp] == ["192.0.2.1"]

    dns_server.remove("host.example.test", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("host.example.test", "A")
    dns_server.clear()
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver.resolve("deep.name.example.test", "A")


async def test_mx_behind_a_cname_is_followed(
    sink: SmtpSink, dns_server: DnsServer, make_deliverer: MakeDeliverer
) -> None:
    dns_server.add("example.test", "MX", "mail.example.test")
    dns_server.add("mail.example.test", "CNAME", "real-mx.example.test")
    dns_server.add("real-mx.example.test", "A", "127.0.0.1")

    result = assert_delivered(await direct(make_deliverer, sink, dns_server).deliver(ENVELOPE))

    assert result.attempt.remote_ip == "127.0.0.1"
