"""pytest fixtures around the test SMTP sink and DNS server.

Import the ones a module needs (``from tests.support.fixtures import sink, dns_server``);
each test gets fresh servers on free loopback ports, stopped afterwards.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """An SMTP sink offering STARTTLS, on 127.0.0.1."""
    with SmtpSink() as server:
        yield server


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """An authoritative DNS server on 127.0.0.1 with an empty table."""
    with DnsServer() as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port with nothing listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
