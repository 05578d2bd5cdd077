"""Sending a message over SMTP, ending in a :data:`DeliveryResult` per recipient.

A message for several recipients (a :class:`Batch`) goes in one transaction per next hop: one
MAIL FROM, an RCPT TO each, one DATA (:mod:`posthorn.delivery.transaction`). Direct mode reads
like RFC 5321 §5.1: resolve the recipients' domain, then try its hosts in order until each
recipient's message is taken or refused for good. How much TLS each host must offer is
the recipient domain's entry in ``TLS_POLICY`` (:mod:`posthorn.domain.tls_policy`). Relay mode
(``RELAY_URL``, or an account's relay) hands every message to one upstream server instead. Both
reuse connections through a :class:`~posthorn.delivery.pool.ConnectionPool`.

The operator's ``RELAY_URL`` is trusted: it may be a Postfix on loopback. An account's relay
is not: its host is resolved here and every address must pass the SSRF rule
(``domain/ssrf.py``; ``RELAY_ALLOW_PRIVATE`` widens it, never to cloud metadata), and the
connection goes to the address checked, so a DNS answer that changed since the relay was
saved (DNS rebinding) cannot move it.

Remote problems (DNS, refused connections, timeouts, TLS, 4xx/5xx) come back as results;
only local bugs raise.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from posthorn.delivery import transaction
from posthorn.delivery.envelope import (
    Batch,
    Envelope,
    EnvelopeError,
    OutgoingMessage,
    prepare_batch,
)
from posthorn.delivery.hosts import DnsHostResolver
from posthorn.delivery.mx import DnsFailure, MxResolver, to_a_label
from posthorn.delivery.peer import Peer, StepFailed, TlsFailed, seen_by
from posthorn.delivery.pool import ConnectionPool, Lease, PoolTimeout
from posthorn.delivery.session import SmtpSession, SmtpTimeouts
from posthorn.delivery.tls import TlsPolicy, opportunistic_tls_context
from posthorn.delivery.transcript import Transcript
from posthorn.domain.results import Attempt, Delivered, DeliveryResult, HardFail, SoftFail
from posthorn.domain.ssrf import first_refused
from posthorn.domain.tls_policy import TlsLevel, normalise_table, policy_for, requires_tls
from posthorn.settings import Settings

__all__ = ["Batch", "Envelope", "RelayConfig", "SmtpDeliverer"]

logger = logging.getLogger(__name__)

# RFC 5321 §5.1 wants at least two addresses tried and a configurable limit; Postfix's
# smtp_mx_address_limit is 5.
MAX_ADDRESSES: Final = 5
# Receivers count concurrent sessions per client and answer 421 past a handful.
PER_DESTINATION_CONNECTIONS: Final = 10
TOTAL_CONNECTIONS: Final = 100
IDLE_SECONDS: Final = 30.0
# A stale pooled connection is replaced; if the next one is stale too, open a fresh one.
_REUSE_TRIES: Final = 2

PoolKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """``smtp://user:pass@host:port`` (STARTTLS when offered) or ``smtps://…`` (implicit TLS).

    ``checked``: an account's relay, whose addresses must pass the SSRF rule when connecting;
    the operator's ``RELAY_URL`` is not checked."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    checked: bool = False

    @classmethod
    def from_url(cls, url: str, *, checked: bool = False) -> RelayConfig:
        """Parse the relay URL; user and password are URL-encoded. Raises ValueError."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("the relay URL must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("the relay URL has no host")
        implicit = parts.scheme == "smtps"
        # RFC 8314 §3.3 (465, implicit TLS) and RFC 6409 §3.1 (587, submission).
        port = parts.port or (465 if implicit else 587)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password or "") if username is not None else None
        return cls(parts.hostname, port, implicit, username, password, checked=checked)

    @property
    def credentials(self) -> tuple[str, str] | None:
        if self.username is None:
            return None
        return self.username, self.password or ""

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class _Target:
    """One server address to try, and how to talk to it."""

    host: str
    address: str
    port: int
    tls: TlsPolicy
    credentials: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def key(self) -> PoolKey:
        return (self.address, self.port)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One recipient's result at one host, and whether it stands (no other host may do
    better)."""

    result: DeliveryResult
    final: bool


class SmtpDeliverer:
    """Delivers envelopes directly to recipient MX hosts, or through the configured relay.

    Safe for concurrent ``deliver()`` and ``deliver_many()`` calls on one event loop; call
    :meth:`aclose` at the end.

    TLS to the relay checks its certificate (the system's CAs plus ``RELAY_CA_FILE``) unless
    ``RELAY_TLS_VERIFY`` is off, in which case it is only encrypted (Postfix's
    ``smtp_tls_security_level = may``), for a test relay with a self-signed certificate.
    Credentials are never sent in clear except to a loopback relay.

    Direct delivery follows ``TLS_POLICY``: ``may`` (opportunistic, the default), ``encrypt``
    or ``verify`` per recipient domain. A policy that cannot be met is a SoftFail that names
    it, never a message in clear. Raises ValueError for a policy table that does not parse.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        relay: RelayConfig | None = None,
        relay_tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not settings.hostname or any(char.isspace() for char in settings.hostname):
            # RFC 5321 §4.1.1.1: EHLO takes one domain name (or address literal).
            raise ValueError(f"HOSTNAME {settings.hostname!r} cannot be an EHLO name")
        self._helo_name = settings.hostname
        self._mx_port = settings.mx_port
        self._timeouts = SmtpTimeouts.scaled(settings.smtp_timeout_scale)
        if relay is None and settings.relay_url:
            relay = RelayConfig.from_url(settings.relay_url)
        self._relay = relay
        self._resolver = MxResolver(settings) if relay is None else None
        # Answers kept for their TTL: the connection goes to the address checked, whatever
        # the DNS says later.
        self._relay_hosts = (
            DnsHostResolver(settings, cache=True) if relay is not None and relay.checked else None
        )
        self._relay_allow_private = settings.relay_allow_private
        self._opportunistic = opportunistic_tls_context()
        self._relay_tls = relay_tls_context or _relay_context(settings) or self._opportunistic
        self._tls_policies = _policy_table(settings.tls_policy)
        self._verifying: ssl.SSLContext | None = None
        if "verify" in self._tls_policies.values() or settings.tls_ca_file is not None:
            self._verifying = _verifying_context(settings.tls_ca_file)
        self._pool: ConnectionPool[SmtpSession] = ConnectionPool(
            per_destination=PER_DESTINATION_CONNECTIONS,
            total=TOTAL_CONNECTIONS,
            idle_seconds=IDLE_SECONDS,
        )

    async def deliver(self, envelope: Envelope) -> DeliveryResult:
        """Try to hand ``envelope`` to the next hop; never raises for a remote problem."""
        (result,) = await self.deliver_many(
            Batch(envelope.mail_from, (envelope.recipient,), envelope.data)
        )
        return result

    async def deliver_many(self, batch: Batch) -> list[DeliveryResult]:
        """Hand one message to the next hop for every recipient of ``batch``: one transaction
        per recipient domain (one for all through a relay), one result per recipient, in
        order. Never raises for a remote problem."""
        prepared = prepare_batch(batch, by_domain=self._relay is None)
        results: dict[int, DeliveryResult] = {
            position: _unsendable(error) for position, error in prepared.refused.items()
        }
        for positions, message in prepared.messages:
            transcript = Transcript()
            if self._relay is not None:
                outcomes = await self._via_relay(self._relay, message, transcript)
            else:
                outcomes = await self._direct(message, transcript)
            results.update(zip(positions, outcomes, strict=True))
        for result in results.values():
            logger.debug(
                "delivery attempt finished",
                extra={
                    "action": "smtp_deliver",
                    "outcome": type(result).__name__,
                    "remote_host": result.attempt.remote_host,
                    "code": result.attempt.code,
                    "recipients": len(batch.recipients),
                },
            )
        return [results[position] for position in range(len(batch.recipients))]

    async def aclose(self) -> None:
        """Close idle connections (QUIT); later ``deliver()`` calls are an error."""
        await self._pool.aclose()

    # The two modes.

    async def _direct(
        self, message: OutgoingMessage, transcript: Transcript
    ) -> list[DeliveryResult]:
        """RFC 5321 §5.1: the domain's hosts in order; a recipient whose outcome another host
        might better (a temporary refusal, a failed connection) tries the next one, with the
        others in the same situation."""
        assert self._resolver is not None
        route = await self._resolver.resolve_destinations(message.recipient_domain)
        if isinstance(route, DnsFailure):
            transcript.note(route.reason)
            attempt = Attempt(
                enhanced_code=route.enhanced_code,
                message=route.reason,
                transcript=transcript.lines(),
            )
            failure: DeliveryResult
            if route.permanent:
                failure = HardFail(attempt, reason=route.reason, suppress=route.suppress)
            else:
                failure = SoftFail(attempt, reason=route.reason)
            return [failure] * len(message.recipients)
        domain = message.recipient_domain
        level = policy_for(domain, self._tls_policies)
        if requires_tls(level):
            transcript.note(f"TLS policy '{level}' for {domain}")
        targets = [
            _Target(
                host=destination.host,
                address=address,
                port=self._mx_port,
                tls=self._mx_tls(level, domain, destination.host),
            )
            for destination in route.destinations
            for address in destination.addresses
        ][:MAX_ADDRESSES]
        assert targets, "a Route always has an address"
        return await self._try_targets(targets, message, transcript, via_relay=False)

    async def _try_targets(
        self,
        targets: list[_Target],
        message: OutgoingMessage,
        transcript: Transcript,
        *,
        via_relay: bool,
    ) -> list[DeliveryResult]:
        """Each target in turn, for the recipients whose outcome another might better."""
        results: list[DeliveryResult | None] = [None] * len(message.recipients)
        pending = list(range(len(message.recipients)))
        for target in targets:
            outcomes = await self._attempt(
                target, message.only(pending), transcript, via_relay=via_relay
            )
            still: list[int] = []
            for position, outcome in zip(pending, outcomes, strict=True):
                results[position] = outcome.result
                if not outcome.final:
                    still.append(position)
            pending = still
            if not pending:
                break
        settled = [result for result in results if result is not None]
        assert len(settled) == len(results), "every recipient has a result"
        return settled

    def _mx_tls(self, level: TlsLevel, domain: str, mx_host: str) -> TlsPolicy:
        """TLS towards one MX host of ``domain`` under ``level``; SNI is the MX host name."""
        if not requires_tls(level):
            return TlsPolicy(self._opportunistic, server_name=mx_host)
        # RFC 7672 §3.2 / RFC 8461 §4.2: the certificate must name the MX host we looked up.
        context = self._verifying if level == "verify" else self._opportunistic
        assert context is not None, "a verifying context exists whenever a policy says verify"
        return TlsPolicy(
            context,
            required=True,
            server_name=mx_host,
            policy=f"policy '{level}' for {domain}",
        )

    async def _via_relay(
        self, relay: RelayConfig, message: OutgoingMessage, transcript: Transcript
    ) -> list[DeliveryResult]:
        credentials = relay.credentials
        tls = TlsPolicy(
            self._relay_tls,
            implicit=relay.implicit_tls,
            # RFC 4954 §4: no password in clear; a relay on this machine is exempt.
            required=credentials is not None and not relay.is_loopback,
            server_name=relay.host,
        )
        if self._relay_hosts is None:
            addresses = [relay.host]  # the operator's: resolved by the system when connecting
        else:
            checked = await self._checked_addresses(relay, self._relay_hosts, transcript)
            if isinstance(checked, SoftFail):
                return [seen_by(checked, transcript, r) for r in message.recipients]
            addresses = checked
        targets = [
            _Target(
                host=relay.host, address=address, port=relay.port, tls=tls, credentials=credentials
            )
            for address in addresses[:MAX_ADDRESSES]
        ]
        return await self._try_targets(targets, message, transcript, via_relay=True)

    async def _checked_addresses(
        self, relay: RelayConfig, hosts: DnsHostResolver, transcript: Transcript
    ) -> list[str] | SoftFail:
        """The addresses of an account's relay host, every one allowed; else why not.

        A refusal is temporary: the account may correct its relay, and nothing it queued is
        lost meanwhile."""
        addresses = await hosts.addresses(relay.host)
        refused = first_refused(addresses, allow_private=self._relay_allow_private)
        if addresses and refused is None:
            return addresses
        if not addresses:
            # RFC 3463 X.4.3: directory server failure.
            code, reason = "4.4.3", f"cannot resolve the relay host {relay.host}"
        else:
            address, problem = refused or ("", "")
            # RFC 3463 X.4.4: unable to route.
            code = "4.4.4"
            reason = (
                f"refused: the relay host {relay.host} resolves to {address}, a {problem} "
                "address; relays only go to public addresses"
            )
            logger.warning(
                "relay refused",
                extra={"action": "relay_refused", "remote_host": relay.host, "address": address},
            )
        transcript.note(reason)
        attempt = Attempt(
            remote_host=relay.host,
            enhanced_code=code,
            message=reason,
            transcript=transcript.lines(),
        )
        return SoftFail(attempt, reason=reason)

    # One server address.

    async def _attempt(
        self,
        target: _Target,
        message: OutgoingMessage,
        transcript: Transcript,
        *,
        via_relay: bool,
    ) -> list[_Outcome]:
        """One transaction on a connection to ``target``; an outcome per recipient."""
        try:
            async with self._pool.lease(target.key, within=self._timeouts.connect) as lease:
                session = await self._session(lease, target, transcript)
                try:
                    replies = await transaction.send(session, message, transcript)
                finally:
                    if session.reusable:
                        lease.keep(session)
                    else:
                        session.abort()
        except StepFailed as failed:
            # The connection could not be had: the same for every recipient.
            return [
                _Outcome(seen_by(failed.result, transcript, recipient), final=not failed.next_host)
                for recipient in message.recipients
            ]
        except PoolTimeout as exc:
            reason = f"too many connections to {target.host} in use here: {exc}"
            transcript.note(reason)
            busy = SoftFail(Attempt(remote_host=target.host, message=reason), reason=reason)
            return [
                _Outcome(seen_by(busy, transcript, recipient), final=False)
                for recipient in message.recipients
            ]
        return [
            _Outcome(Delivered(reply, via_relay=via_relay), final=True)
            if isinstance(reply, Attempt)
            else _Outcome(reply.result, final=not reply.next_host)
            for reply in replies
        ]

    async def _session(
        self, lease: Lease[SmtpSession], target: _Target, transcript: Transcript
    ) -> SmtpSession:
        """A reused connection that still answers and is as safe as the target asks, or a new one.

        Slots are per address, not per policy, so that mixed policies do not multiply the
        connections one receiver sees; each reuse is checked against the target's policy.
        """
        for _ in range(_REUSE_TRIES):
            idle = lease.take_idle(accept=lambda session: session.secure_enough(target.tls))
            if idle is None:
                break
            try:
                usable = await idle.reset(transcript)
            except BaseException:
                idle.abort()  # cancelled mid-RSET: the dialogue is out of step
                raise
            if usable:
                return idle
        return await self._open(target, transcript)

    async def _open(self, target: _Target, transcript: Transcript) -> SmtpSession:
        try:
            return await SmtpSession.open(
                Peer(target.host, target.address, target.port),
                helo_name=self._helo_name,
                tls=target.tls,
                credentials=target.credentials,
                timeouts=self._timeouts,
                transcript=transcript,
            )
        except TlsFailed as failed:
            # Never in clear when credentials would follow, nor on an implicit-TLS port; a
            # destination's TLS policy fails inside the session and never gets here.
            if target.tls.required or target.tls.implicit:
                result = failed.peer.soft(transcript, failed.reason)
                raise StepFailed(result, next_host=True) from failed
        # Opportunistic TLS (RFC 7435): a broken handshake must not stop the mail, so the
        # host gets one more connection, in plain text.
        transcript.note("reconnecting without TLS")
        return await SmtpSession.open(
            Peer(target.host, target.address, target.port),
            helo_name=self._helo_name,
            tls=target.tls.without_tls(),
            credentials=target.credentials,
            timeouts=self._timeouts,
            transcript=transcript,
        )


def _unsendable(error: EnvelopeError) -> HardFail:
    reason = f"cannot send this envelope: {error}"
    return HardFail(Attempt(enhanced_code=error.enhanced_code, message=reason), reason=reason)


def _policy_table(table: Mapping[str, str]) -> dict[str, TlsLevel]:
    """``TLS_POLICY`` with its domains in A-labels, as recipient domains go on the wire."""
    policies: dict[str, TlsLevel] = {}
    for key, level in normalise_table(table).items():
        dot = "." if key.startswith(".") else ""
        name = dot + to_a_label(key.removeprefix("."))
        if name in policies:
            raise ValueError(f"TLS policy domain {key!r} is listed twice")
        policies[name] = level
    return policies


def _verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's CAs plus ``ca_file``; checks the chain and the host name (RFC 6125)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def _relay_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.relay_tls_verify:
        return None
    context = ssl.create_default_context()
    if settings.relay_ca_file is not None:
        context.load_verify_locations(cafile=str(settings.relay_ca_file))
    return context
