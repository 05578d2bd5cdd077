"""Who counts as a client on this machine for ``/metrics``, and the bearer token check."""

from __future__ import annotations

import pytest

from posthorn.api.routes.ops import bearer_matches, is_local


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_a_loopback_peer_without_proxy_headers_is_local(peer: str) -> None:
    assert is_local(peer, {}) is True


@pytest.mark.parametrize("peer", ["10.0.0.5", "203.0.113.7", "::ffff:10.0.0.5", "", "testclient"])
def test_other_peers_are_not_local(peer: str) -> None:
    assert is_local(peer, {}) is False


@pytest.mark.parametrize("header", ["x-forwarded-for", "x-real-ip", "forwarded"])
def test_a_request_through_a_proxy_is_never_local(header: str) -> None:
    assert is_local("127.0.0.1", {header: "127.0.0.1"}) is False


@pytest.mark.parametrize("proxies", [["127.0.0.1"], ["127.0.0.0/8", "10.0.0.0/8"]])
def test_a_trusted_proxy_on_this_machine_is_not_local_even_without_headers(
    proxies: list[str],
) -> None:
    """A reverse proxy that adds no forwarding header (nginx's default) still forwards
    strangers: once the operator names it, its requests need the token."""
    assert is_local("127.0.0.1", {}, proxies) is False
    assert is_local("127.0.0.2", {}, ["127.0.0.1"]) is True


def test_the_bearer_token_must_match_exactly() -> None:
    assert bearer_matches("Bearer s3cret", "s3cret")
    assert bearer_matches("bearer s3cret", "s3cret")  # RFC 7235 §2.1: the scheme is caseless
    assert not bearer_matches("Bearer s3cre", "s3cret")
    assert not bearer_matches("Basic s3cret", "s3cret")
    assert not bearer_matches(None, "s3cret")
    assert not bearer_matches("Bearer ", "")  # no token configured opens nothing
