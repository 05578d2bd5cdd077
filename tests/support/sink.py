"""An SMTP sink for tests: a real aiosmtpd server on loopback that records what it receives.

It runs in its own thread with its own event loop (``aiosmtpd.controller.Controller``), so the
API is synchronous and works from sync and async tests alike. It can be told to answer with
scripted codes, to drop the connection mid-DATA or after the final dot, to break the TLS
handshake, or to answer slowly. STARTTLS (or implicit TLS) uses a certificate from a
throwaway CA made with trustme, issued for ``hostnames`` (by default the greeting name,
localhost and the loopback addresses); AUTH PLAIN/LOGIN is offered when ``auth`` is given.

Independent of the product: nothing here imports posthorn.

Also a small program for manual runs and benchmarks::

    python -m tests.support.sink --port 2525 [--no-starttls] [--auth user:password]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import signal
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, AnyStr, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

FailStage = Literal["connect", "starttls", "mail", "rcpt", "data"]
DropStage = Literal["data", "after_dot"]

_READY_TIMEOUT = 10.0
_HANG_SECONDS = 30.0  # how long a "dropped" session waits to be cancelled by its own close


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str  # "" for the null reverse-path
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly as received, dot-unstuffed, without the final ".\r\n"
    peer: str  # "ip:port"
    tls: bool
    authenticated_as: str | None
    mail_options: tuple[str, ...] = ()


@dataclass
class _Script:
    """Scripted behaviour, shared between the test thread and the server thread."""

    failures: dict[str, deque[str]]
    drops: dict[str, int]
    recipient_failures: dict[str, deque[str]] = field(default_factory=dict)  # by address
    broken_tls: int = 0
    delay: float = 0.0


@functools.cache
def _certificate_authority() -> trustme.CA:
    # Key generation costs tens of milliseconds: one CA and one server certificate per process.
    return trustme.CA()


@functools.cache
def _server_certificate(names: tuple[str, ...]) -> trustme.LeafCert:
    return _certificate_authority().issue_cert(*names)


class SmtpSink:
    """A recording SMTP server on ``host:port`` (a free port unless ``port`` is given)."""

    def __init__(
        self,
        *,
        starttls: bool = True,
        auth: dict[str, str] | None = None,
        hostname: str = "mx.sink.test",
        host: str = "127.0.0.1",
        port: int = 0,
        implicit_tls: bool = False,
        keep_messages: int | None = None,
        on_message: Callable[[ReceivedMessage], None] | None = None,
        hostnames: Sequence[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        # The names the certificate is issued for, e.g. the MX names a verifying client checks.
        self.hostnames = (
            tuple(hostnames)
            if hostnames is not None
            else (hostname, "localhost", "127.0.0.1", "::1")
        )
        self._starttls = starttls
        self._implicit_tls = implicit_tls
        self._auth = dict(auth) if auth is not None else None
        self._on_message = on_message
        self._lock = threading.Condition()
        self.messages: list[ReceivedMessage] = []
        self._keep = keep_messages
        self.received = 0  # every accepted message, also those no longer kept
        self.connections = 0
        self._script = _Script(failures={}, drops={})
        self._controller: _Controller | None = None
        self._live: set[_SinkSMTP] = set()  # touched only in the server thread

    # Life cycle.

    def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("sink already started")
        server_context = self._server_context()
        smtp_kwargs: dict[str, Any] = {
            "server_hostname": self.hostname,
            "tls_context": server_context if self._starttls and not self._implicit_tls else None,
            "require_starttls": False,
            "enable_SMTPUTF8": True,
            "data_size_limit": 64 * 1024 * 1024,
        }
        if self._auth is not None:
            # Loopback tests may authenticate before STARTTLS; real servers must not.
            smtp_kwargs["authenticator"] = self._authenticate
            smtp_kwargs["auth_require_tls"] = False
        controller = _Controller(
            self,
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=server_context if self._implicit_tls else None,
            ready_timeout=_READY_TIMEOUT,
            **smtp_kwargs,
        )
        controller.start()
        self._controller = controller
        self.port = controller.port
        with self._lock:
            self.connections = 0  # the controller's own start-up probe is not a session

    def stop(self) -> None:
        controller = self._controller
        if controller is None:
            return
        # Close the sessions still open first: the controller stops its loop with them, and
        # their transports would then be collected on a closed loop (ResourceWarnings).
        future = asyncio.run_coroutine_threadsafe(self._close_sessions(), controller.loop)
        try:
            future.result(timeout=_READY_TIMEOUT)
        finally:
            controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # What tests look at.

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were accepted; TimeoutError otherwise.

        From an async test, call it once the delivery returned (the message is recorded
        before the 250 reply is sent), or run it in a thread.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.received < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.received} of {count} messages within {timeout} s")
                self._lock.wait(remaining)
            return list(self.messages)

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this sink's certificate (for verifying clients)."""
        context = ssl.create_default_context()
        _certificate_authority().configure_trust(context)
        return context

    @property
    def ca_pem(self) -> bytes:
        return _certificate_authority().cert_pem.bytes()

    # Scripting.

    def fail_next(
        self,
        *,
        stage: FailStage,
        code: int,
        message: str = "scripted failure",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` sessions/commands at ``stage`` with ``code message``.

        "connect" replaces the greeting and closes the connection; "starttls" answers the
        STARTTLS command; "data" answers the final dot (the message is then not recorded).
        """
        with self._lock:
            queue = self._script.failures.setdefault(stage, deque())
            queue.extend([f"{code} {message}"] * times)

    def refuse_recipient(
        self, address: str, *, code: int, message: str = "scripted failure", times: int = 1
    ) -> None:
        """Answer the next ``times`` RCPT TO commands for ``address`` (case-insensitive) with
        ``code message``; other recipients of the same transaction are answered as usual."""
        with self._lock:
            queue = self._script.recipient_failures.setdefault(address.lower(), deque())
            queue.extend([f"{code} {message}"] * times)

    def drop_next(self, *, stage: DropStage, times: int = 1) -> None:
        """Close the socket without a reply: after the first line of data ("data"), or
        after the final dot ("after_dot"; the message is then not recorded)."""
        with self._lock:
            self._script.drops[stage] = self._script.drops.get(stage, 0) + times

    def break_tls_next(self, times: int = 1) -> None:
        """Answer 220 to STARTTLS, then send garbage instead of a TLS handshake."""
        with self._lock:
            self._script.broken_tls += times

    def slow(self, seconds: float) -> None:
        """Delay every reply (the greeting included) by ``seconds``."""
        with self._lock:
            self._script.delay = seconds

    def reset(self) -> None:
        """Forget received messages, counters and scripted behaviour."""
        with self._lock:
            self.messages.clear()
            self.received = 0
            self.connections = 0
            self._script = _Script(failures={}, drops={})

    # Used from the server thread.

    def _take_failure(self, stage: str) -> str | None:
        with self._lock:
            queue = self._script.failures.get(stage)
            return queue.popleft() if queue else None

    def _take_recipient_failure(self, address: str) -> str | None:
        with self._lock:
            queue = self._script.recipient_failures.get(address.lower())
            return queue.popleft() if queue else None

    def _take_drop(self, stage: str) -> bool:
        with self._lock:
            left = self._script.drops.get(stage, 0)
            if left:
                self._script.drops[stage] = left - 1
            return bool(left)

    def _take_broken_tls(self) -> bool:
        with self._lock:
            if self._script.broken_tls:
                self._script.broken_tls -= 1
                return True
            return False

    def _delay(self) -> float:
        with self._lock:
            return self._script.delay

    def _opened(self, session: _SinkSMTP) -> None:
        self._live.add(session)
        with self._lock:
            self.connections += 1

    def _closed(self, session: _SinkSMTP) -> None:
        self._live.discard(session)

    async def _close_sessions(self) -> None:
        for session in list(self._live):
            session.close_now()
        for _ in range(3):  # let connection_lost run
            await asyncio.sleep(0)

    def _record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self.messages.append(message)
            if self._keep is not None and len(self.messages) > self._keep:
                del self.messages[: len(self.messages) - self._keep]
            self.received += 1
            self._lock.notify_all()
        if self._on_message is not None:
            self._on_message(message)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self._auth is not None
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if self._auth.get(login) == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        _server_certificate(self.hostnames).configure_cert(context)
        return context


class _SinkSMTP(SMTP):
    """aiosmtpd's server with the sink's scripted misbehaviour."""

    def __init__(self, sink: SmtpSink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink
        self._greeted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the STARTTLS re-entry
            self._sink._opened(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink._closed(self)
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        delay = self._sink._delay()
        if delay:
            await asyncio.sleep(delay)
        if not self._greeted:
            self._greeted = True
            failure = self._sink._take_failure("connect")
            if failure is not None:
                await super().push(failure)
                self.close_now()
                return
        await super().push(status)

    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's hook name
        failure = self._sink._take_failure("starttls")
        if failure is not None:
            await self.push(failure)
            return
        if self._sink._take_broken_tls():
            await self.push("220 Ready to start TLS")
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(b"this is not a TLS handshake\r\n")
            self.close_now()
            await self._hang()
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's hook name
        if self.envelope is not None and self.envelope.rcpt_tos and self._sink._take_drop("data"):
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readline()
            self.close_now()
            await self._hang()
            return
        await super().smtp_DATA(arg)

    def close_now(self) -> None:
        # abort(), not close(): nothing queued afterwards may reach the client.
        if isinstance(self.transport, asyncio.Transport):
            self.transport.abort()

    @staticmethod
    async def _hang() -> None:
        # The closed connection cancels this session's task; until then, say nothing.
        await asyncio.sleep(_HANG_SECONDS)


class _Handler:
    """aiosmtpd handler hooks: scripted replies and recording."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        failure = self._sink._take_failure("mail")
        if failure is not None:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        failure = self._sink._take_recipient_failure(address) or self._sink._take_failure("rcpt")
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        if self._sink._take_drop("after_dot"):
            if isinstance(server.transport, asyncio.Transport):
                server.transport.abort()
            await asyncio.sleep(_HANG_SECONDS)
            return "451 4.3.0 not reached"
        failure = self._sink._take_failure("data")
        if failure is not None:
            return failure
        transport = server.transport
        peer = session.peer if isinstance(session.peer, tuple) else ("?", 0)
        mail_from = envelope.mail_from or ""
        self._sink._record(
            ReceivedMessage(
                mail_from="" if mail_from == "<>" else mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                peer=f"{peer[0]}:{peer[1]}",
                tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
                authenticated_as=session.auth_data if session.authenticated else None,
                mail_options=tuple(envelope.mail_options),
            )
        )
        return "250 2.0.0 OK: queued"


class _Controller(Controller):
    """aiosmtpd's threaded controller, on a port chosen by the kernel when given 0."""

    def __init__(self, sink: SmtpSink, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink

    def factory(self) -> SMTP:
        return _SinkSMTP(self._sink, self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        create = super()._create_server()

        async def bind() -> asyncio.AbstractServer:
            server = await create
            sockets: list[Any] = list(getattr(server, "sockets", None) or [])
            self.port = int(sockets[0].getsockname()[1])
            return server

        return bind()


@contextmanager
def running_sink(**kwargs: Any) -> Iterator[SmtpSink]:
    """``with running_sink(starttls=False) as sink:`` — started and always stopped."""
    sink = SmtpSink(**kwargs)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the test SMTP sink and log each message.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525, help="0 picks a free port")
    parser.add_argument("--hostname", default="mx.sink.test", help="name in the greeting")
    parser.add_argument("--no-starttls", action="store_true", help="do not offer STARTTLS")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD")
    parser.add_argument("--quiet", action="store_true", help="log a count every 1000 messages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command log
    log = logging.getLogger("sink")
    auth = dict(entry.split(":", 1) for entry in args.auth) or None

    def report(message: ReceivedMessage) -> None:
        if args.quiet:
            if sink.received % 1000 == 0:
                log.info("%d messages", sink.received)
            return
        log.info(
            "from=<%s> to=%s size=%d tls=%s auth=%s peer=%s",
            message.mail_from,
            ",".join(message.rcpt_tos),
            len(message.data),
            message.tls,
            message.authenticated_as,
            message.peer,
        )

    sink = SmtpSink(
        starttls=not args.no_starttls,
        auth=auth,
        hostname=args.hostname,
        host=args.host,
        port=args.port,
        keep_messages=0,
        on_message=report,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with sink:
        log.info("SMTP sink listening on %s:%d", sink.host, sink.port)
        stop.wait()
    log.info("stopped after %d messages", sink.received)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
