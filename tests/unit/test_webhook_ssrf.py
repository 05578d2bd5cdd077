"""Which webhook URLs and addresses are refused (server-side request forgery)."""

from __future__ import annotations

import pytest

from posthorn.domain.ssrf import address_problem, first_refused, literal_ip, parse_url


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("240.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("not-an-ip", "not an IP address"),
    ],
)
def test_non_public_addresses_are_refused(address: str, problem: str) -> None:
    assert address_problem(address) == problem


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


def test_one_bad_address_refuses_the_host() -> None:
    assert first_refused(["93.184.216.34", "10.0.0.1"]) == ("10.0.0.1", "private")
    assert first_refused(["93.184.216.34"]) is None


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port"),
    [
        ("https://Hooks.Example.COM/x?y=1", "https", "hooks.example.com", 443),
        ("http://hooks.example.com:8080", "http", "hooks.example.com", 8080),
        ("http://[2606:4700::1]:81/", "http", "2606:4700::1", 81),
        ("https://bücher.example/", "https", "xn--bcher-kva.example", 443),
        ("  https://example.com./  ", "https", "example.com", 443),
    ],
)
def test_parse_url(url: str, scheme: str, host: str, port: int) -> None:
    parsed = parse_url(url)
    assert (parsed.scheme, parsed.host, parsed.port) == (scheme, host, port)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "empty"),
        ("ftp://example.com/", "http"),
        ("javascript:alert(1)", "http"),
        ("//example.com/", "http"),
        ("http:///path", "no host"),
        ("http://user:pw@example.com/", "user name"),
        ("http://example.com:99999/", "port"),
        ("http://exa mple.com/", "spaces"),
        ("http://example.com/\r\nX-Injected: 1", "spaces"),
        ("https://example.com/" + "a" * 2100, "longer"),
    ],
)
def test_unusable_urls(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_url(url)


def test_literal_ip() -> None:
    assert str(literal_ip("[::1]")) == "::1"
    assert str(literal_ip("10.0.0.1")) == "10.0.0.1"
    assert literal_ip("example.com") is None
    assert literal_ip("2130706433") is None  # a name for the DNS, never 127.0.0.1
