"""The SSRF rule where private addresses are allowed: cloud metadata endpoints stay refused."""

from __future__ import annotations

import pytest

from posthorn.domain.ssrf import address_problem, first_refused


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",  # IPv4-mapped, RFC 4291 §2.5.5.2
        "64:ff9b::a9fe:a9fe",  # NAT64, RFC 6052
        "2002:a9fe:a9fe::1",  # 6to4, RFC 3056
        "169.254.170.2",
        "100.100.100.200",
        "168.63.129.16",
    ],
)
def test_metadata_addresses_are_refused_even_when_private_is_allowed(address: str) -> None:
    assert address_problem(address, allow_private=True) == "cloud metadata"
    assert address_problem(address) is not None


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.0.0.5", "192.168.1.1", "fd00::1"])
def test_private_addresses_pass_only_when_allowed(address: str) -> None:
    assert address_problem(address, allow_private=True) is None
    assert address_problem(address) is not None


def test_one_metadata_address_among_private_ones_refuses_the_host() -> None:
    addresses = ["127.0.0.1", "169.254.169.254"]
    assert first_refused(addresses, allow_private=True) == ("169.254.169.254", "cloud metadata")
    assert first_refused(["127.0.0.1"], allow_private=True) is None
