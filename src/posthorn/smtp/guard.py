"""Connection rules of an SMTP listener, around aiosmtpd's session; the submission server and
the inbound bounce listener both use them.

- **Per-client cap**: at most ``cap`` open connections per client network (an IPv4 address,
  an IPv6 /64, as the login throttle counts them); one more is told 421 (RFC 5321 §3.8) and
  closed before a session starts, so one host cannot hold every slot of the listener.
  Addresses the operator trusts (``SMTP_TRUSTED_NETWORKS``) are not capped.
- **Commands before the greeting**: RFC 5321 §3.1 and §4.3.1 have the client wait for the
  220. A client that sends anything first (after an optional short delay, which is what makes
  the check see a client that does not wait) gets 554 instead of the greeting and is closed:
  it has broken the protocol before it started, and is most likely a spam tool.
- **Time to authenticate** (submission only): a session that has not authenticated within
  ``auth_deadline`` seconds of connecting is told 421 and closed, so idle connections that
  will never send mail do not hold slots for the five minutes of the command timeout.

This module is the one place that reaches into aiosmtpd's internals for these rules: the
session coroutine ``_handle_client`` (which starts by sending the greeting) is wrapped, and the
stream protocol's ``data_received`` is watched. Both are checked against aiosmtpd 1.4.6 (see
``construction.KNOWN_VERSIONS``) by ``tests/integration/test_smtp_guard.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiosmtpd.smtp import SMTP

from posthorn.domain.throttle import client_key

log = logging.getLogger("posthorn.smtp")

BUSY = b"421 4.7.0 Too many connections, try again later\r\n"
CLIENT_BUSY = b"421 4.7.0 Too many connections from your network, try again later\r\n"
AUTH_TOO_SLOW = b"421 4.7.0 Authentication not completed in time, closing connection\r\n"


def _write_and_close(transport: asyncio.BaseTransport, reply: bytes) -> None:
    # A cast, not isinstance: uvloop's transports do not register with asyncio's ABCs.
    if not transport.is_closing():
        cast(asyncio.WriteTransport, transport).write(reply)
        transport.close()


class ClientSlots:
    """Open connections per client network, at most ``cap`` each, in this process."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[str, int] = {}

    def take(self, key: str) -> bool:
        count = self._open.get(key, 0)
        if count >= self.cap:
            return False
        self._open[key] = count + 1
        return True

    def give_back(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def open(self, key: str) -> int:
        return self._open.get(key, 0)


@dataclass(frozen=True, eq=False)
class Rules:
    """What a listener enforces; shared by its sessions."""

    slots: ClientSlots
    greeting_delay: float = 0.0  # seconds before the greeting, to see who does not wait
    auth_deadline: float | None = None  # seconds to authenticate; None: no AUTH here
    # Addresses the cap does not apply to (SMTP_TRUSTED_NETWORKS: a local relay funnels every
    # client of its own through one address).
    uncapped: Callable[[str], bool] = lambda _: False


class Busy(asyncio.Protocol):
    """The answer to a connection over a listener's total cap: 421 and close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _write_and_close(transport, BUSY)


class GuardedSMTP(SMTP):
    """aiosmtpd's session with :class:`Rules` enforced; call :meth:`guard` in ``__init__``."""

    def guard(self, rules: Rules, hostname: str) -> None:
        self._rules = rules
        self._guard_hostname = hostname
        self._slot: str | None = None  # the client network, as the cap counts it
        self._slot_free = False  # an uncapped address: nothing to give back
        self._refused = False
        self._greeting_sent = False
        self._talked_first = False
        self._auth_timer: asyncio.TimerHandle | None = None

    def authorised(self) -> bool:
        """Whether the session may go on past the authentication deadline."""
        return False

    def authentication_done(self) -> None:
        """The client has authenticated: the deadline no longer applies."""
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    # ── aiosmtpd's protocol, wrapped ────────────────────────────────────────────────────

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # a new connection, not the switch to TLS
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            key = client_key(ip)
            if self._rules.uncapped(ip):
                self._slot_free = True
            elif not self._rules.slots.take(key):
                self._refused = True
                log.warning(
                    "smtp connection refused: %d open from peer=%s",
                    self._rules.slots.cap,
                    key,
                    extra={"action": "smtp_client_busy", "peer": key},
                )
                _write_and_close(transport, CLIENT_BUSY)
                return
            self._slot = key
            if self._rules.auth_deadline is not None:
                self._auth_timer = self.loop.call_later(
                    self._rules.auth_deadline, self._auth_expired
                )
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return  # aiosmtpd never saw this connection
        if self._slot is not None and not self._slot_free:
            self._rules.slots.give_back(self._slot)
        self._slot = None
        self.authentication_done()
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._greeting_sent:
            self._talked_first = True
        super().data_received(data)

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        result: bool | None = super().eof_received()
        return result

    async def _handle_client(self) -> None:
        # aiosmtpd's session loop: it sends the greeting first, then reads commands.
        if self._rules.greeting_delay > 0:
            await asyncio.sleep(self._rules.greeting_delay)
        if self._talked_first:
            peer = self._slot or "unknown"
            log.warning(
                "smtp client talked before the greeting peer=%s",
                peer,
                extra={"action": "smtp_pregreet", "peer": peer},
            )
            if self.transport is not None:
                _write_and_close(
                    self.transport,
                    f"554 {self._guard_hostname} Commands sent before the greeting "
                    "(RFC 5321 section 3.1)\r\n".encode(),
                )
            return
        # No await between here and the greeting's write: data from now on is not early.
        self._greeting_sent = True
        await super()._handle_client()

    def _auth_expired(self) -> None:
        self._auth_timer = None
        if self.authorised() or self.transport is None:
            return
        log.info(
            "smtp session closed: no authentication within %g s peer=%s",
            self._rules.auth_deadline,
            self._slot,
            extra={"action": "smtp_auth_timeout", "peer": self._slot},
        )
        _write_and_close(self.transport, AUTH_TOO_SLOW)
