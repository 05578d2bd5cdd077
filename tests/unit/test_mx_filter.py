"""Pure helpers of the delivery pipeline: address filter, nameserver parsing, MX ordering,
domain and envelope encoding. No sockets."""

from __future__ import annotations

from collections import Counter

import pytest

from posthorn.delivery.dns_query import parse_nameserver
from posthorn.delivery.envelope import Envelope, EnvelopeError, prepare, smtp_path
from posthorn.delivery.mx import address_problem, order_mx, to_a_label
from posthorn.delivery.session import SmtpTimeouts
from posthorn.delivery.transport import RelayConfig

# Private-address filter.


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),
        ("192.0.2.10", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::1", "loopback"),
        ("mx.example.test", "not an IP address"),
    ],
)
def test_non_public_addresses_are_refused(address: str, problem: str) -> None:
    assert address_problem(address) == problem


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "142.250.27.26", "2a00:1450:400c:c00::1b", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


# Nameserver settings.


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("127.0.0.1", ("127.0.0.1", 53)),
        (" 10.0.0.2 ", ("10.0.0.2", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),
        ("2001:db8::53", ("2001:db8::53", 53)),
    ],
)
def test_parse_nameserver(entry: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(entry) == expected


@pytest.mark.parametrize(
    "entry", ["dns.example.test", "127.0.0.1:abc", "127.0.0.1:0", "127.0.0.1:70000", "[::1", ""]
)
def test_parse_nameserver_rejects_garbage(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(entry)


# Domains.


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("Example.TEST", "example.test"),
        ("example.test.", "example.test"),
        ("bücher.test", "xn--bcher-kva.test"),
        ("BÜCHER.test", "xn--bcher-kva.test"),
        ("xn--bcher-kva.test", "xn--bcher-kva.test"),
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("_dmarc.example.test", "_dmarc.example.test"),
    ],
)
def test_to_a_label(domain: str, expected: str) -> None:
    assert to_a_label(domain) == expected


@pytest.mark.parametrize("domain", ["", ".", "a..b", "x" * 64 + ".test"])
def test_to_a_label_rejects_invalid_names(domain: str) -> None:
    with pytest.raises(ValueError):
        to_a_label(domain)


# MX ordering (RFC 5321 §5.1).


def test_order_mx_sorts_by_preference_and_drops_duplicates() -> None:
    records = [(20, "b.test"), (10, "a.test"), (30, "c.test"), (40, "a.test")]
    assert order_mx(records) == [(10, "a.test"), (20, "b.test"), (30, "c.test")]


def test_order_mx_shuffles_equal_preferences() -> None:
    records = [(10, "a.test"), (10, "b.test"), (10, "c.test"), (20, "z.test")]
    firsts: Counter[str] = Counter()
    for _ in range(300):
        ordered = order_mx(records)
        assert ordered[-1] == (20, "z.test")
        assert sorted(host for _, host in ordered[:3]) == ["a.test", "b.test", "c.test"]
        firsts[ordered[0][1]] += 1
    assert set(firsts) == {"a.test", "b.test", "c.test"}


# Envelope encoding.


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("bob@Example.TEST", ("bob@example.test", False)),
        ("bob@bücher.test", ("bob@xn--bcher-kva.test", False)),
        ("jörg@example.test", ("jörg@example.test", True)),
        ('"john doe"@example.test', ('"john doe"@example.test', False)),
        ("a+tag@sub.example.test", ("a+tag@sub.example.test", False)),
    ],
)
def test_smtp_path(address: str, expected: tuple[str, bool]) -> None:
    assert smtp_path(address, null_allowed=False) == expected


@pytest.mark.parametrize(
    "address",
    [
        "",
        "no-at-sign",
        "@example.test",
        "bob@",
        "bob@exa mple.test",
        "bo b@example.test",
        "bob@example.test>",
        "bob\r\n@example.test",
        "x" * 300 + "@example.test",
    ],
)
def test_smtp_path_rejects_what_cannot_go_on_the_wire(address: str) -> None:
    with pytest.raises(ValueError):
        smtp_path(address, null_allowed=False)


def test_null_reverse_path_is_allowed_for_the_sender_only() -> None:
    assert smtp_path("", null_allowed=True) == ("", False)
    with pytest.raises(EnvelopeError) as caught:
        prepare(Envelope("a@example.test", "", b"x\r\n"))
    assert caught.value.enhanced_code == "5.1.3"
    with pytest.raises(EnvelopeError) as caught:
        prepare(Envelope("bad sender@", "b@example.test", b"x\r\n"))
    assert caught.value.enhanced_code == "5.1.7"


def test_prepare_normalises_line_ends_and_stuffs_dots() -> None:
    message = prepare(Envelope("", "b@example.test", b"A: 1\n\n.line\r.x\r\n..y"))
    assert message.payload == b"A: 1\r\n\r\n..line\r\n..x\r\n...y\r\n"
    assert message.size == len(b"A: 1\r\n\r\n.line\r\n.x\r\n..y\r\n")
    assert message.eight_bit is False
    assert message.smtputf8 is False
    assert message.recipient_domain == "example.test"


def test_prepare_keeps_crlf_messages_byte_for_byte() -> None:
    data = "Subject: Grüße\r\n\r\nhi\r\n".encode()
    message = prepare(Envelope("a@example.test", "b@example.test", data))
    assert message.payload == data
    assert message.size == len(data)
    assert message.eight_bit is True
    assert "Grüße" not in repr(message)


# Relay URL and timeouts.


def test_relay_url_with_encoded_credentials() -> None:
    relay = RelayConfig.from_url("smtp://user%40corp:p%40ss%3Aw%2Frd@relay.example.test:2587")
    assert (relay.host, relay.port, relay.implicit_tls) == ("relay.example.test", 2587, False)
    assert relay.credentials == ("user@corp", "p@ss:w/rd")
    assert "p@ss" not in repr(relay)


def test_relay_url_defaults() -> None:
    assert RelayConfig.from_url("smtp://relay.example.test").port == 587
    smtps = RelayConfig.from_url("smtps://u:p@relay.example.test")
    assert (smtps.port, smtps.implicit_tls) == (465, True)
    assert RelayConfig.from_url("smtp://relay.example.test").credentials is None
    assert RelayConfig.from_url("smtp://127.0.0.1:25").is_loopback is True
    assert RelayConfig.from_url("smtp://relay.example.test").is_loopback is False


@pytest.mark.parametrize("url", ["http://relay.example.test", "smtp://", "smtp://h:99999"])
def test_relay_url_rejects_garbage(url: str) -> None:
    with pytest.raises(ValueError):
        RelayConfig.from_url(url)


def test_timeouts_follow_rfc_5321_and_scale() -> None:
    base = SmtpTimeouts()
    assert (base.connect, base.mail, base.rcpt) == (300.0, 300.0, 300.0)
    assert (base.data_init, base.data_block, base.data_end) == (120.0, 180.0, 600.0)
    scaled = SmtpTimeouts.scaled(0.01)
    assert scaled.data_end == pytest.approx(6.0)
    assert scaled.connect == pytest.approx(3.0)
