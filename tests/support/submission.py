"""Running Posthorn's SMTP submission server in a test's event loop, and talking to it.

``SubmissionServer`` starts ``run_smtp`` as a task on free loopback ports and stops it with its
own ``stop`` event. Clients are real: Python's ``smtplib`` (blocking, so tests call it through
``asyncio.to_thread``) and, for what smtplib refuses to send (bare line endings), a raw line
client on asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import smtplib
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from sqlalchemy import func, select

from posthorn.delivery.transport import SmtpDeliverer
from posthorn.services.container import Services
from posthorn.services.signing import DkimSigner
from posthorn.settings import Settings
from posthorn.smtp.server import run_smtp
from posthorn.store.database import Database
from posthorn.store.tables import emails
from posthorn.worker import Worker
from tests.support.dns import DnsServer

PASSWORD = "correct horse battery"
SENDER = "hello@acme.test"
RECIPIENT = "user@example.test"
_START_ATTEMPTS = 200
_START_PAUSE = 0.02
_CLIENT_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@functools.cache
def certificate_authority() -> trustme.CA:
    return trustme.CA()


def tls_files(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 from the test CA, written to ``directory``."""
    leaf = certificate_authority().issue_cert("localhost", "127.0.0.1", "::1")
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return cert, key


def client_context() -> ssl.SSLContext:
    """A verifying client context that trusts the test CA."""
    context = ssl.create_default_context()
    certificate_authority().configure_trust(context)
    return context


def smtp_settings(settings: Settings, tmp: Path, **overrides: Any) -> Settings:
    """``settings`` with the submission server on free ports and the test certificate."""
    cert, key = tls_files(tmp)
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": free_port(),
        "tls_cert": cert,
        "tls_key": key,
    }
    values.update(overrides)
    return settings.model_copy(update=values)


class SubmissionServer:
    """``run_smtp`` as a task in the running loop."""

    def __init__(self, settings: Settings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.port = settings.smtp_port
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(
            run_smtp(self.settings, self.services, stop=self._stop), name="smtp-under-test"
        )
        for _ in range(_START_ATTEMPTS):
            if self._task.done():
                self._task.result()  # raises what made it fail
                raise RuntimeError("run_smtp returned before it was stopped")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(_START_PAUSE)
                continue
            await reader.readline()  # the greeting
            writer.write(b"QUIT\r\n")
            await writer.drain()
            await reader.readline()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise RuntimeError("the SMTP server did not start listening")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 60)

    async def __aenter__(self) -> SubmissionServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def submit(
    port: int,
    *,
    user: str | None,
    password: str | None,
    mail_from: str,
    recipients: list[str],
    message: bytes,
    mechanism: str = "PLAIN",
    implicit_tls: bool = False,
    mail_options: tuple[str, ...] = (),
) -> tuple[int, str]:
    """One submission with smtplib (blocking): STARTTLS (or implicit TLS), AUTH, MAIL, RCPT,
    DATA. Returns the reply to the final dot, or the first refusal on the way."""
    context = client_context()
    client: smtplib.SMTP
    if implicit_tls:
        client = smtplib.SMTP_SSL("127.0.0.1", port, timeout=_CLIENT_TIMEOUT, context=context)
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=_CLIENT_TIMEOUT)
    with client:
        client.ehlo("client.test")
        if not implicit_tls:
            client.starttls(context=context)
            client.ehlo("client.test")
        if user is not None and password is not None:
            code, reply = authenticate(client, mechanism, user, password)
            if code != 235:
                return code, reply
        code, text = client.mail(mail_from, list(mail_options))
        if code != 250:
            return code, text.decode()
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            if code not in (250, 251):
                return code, text.decode()
        code, text = client.data(message)
        return code, text.decode()


def authenticate(client: smtplib.SMTP, mechanism: str, user: str, password: str) -> tuple[int, str]:
    """AUTH with one mechanism (``smtplib.login`` would try the next one after a refusal)."""
    client.user, client.password = user, password
    methods = {"PLAIN": client.auth_plain, "LOGIN": client.auth_login}
    try:
        code, reply = client.auth(mechanism, methods[mechanism])
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code, exc.smtp_error.decode()
    return code, reply.decode()


class RawClient:
    """SMTP line by line over asyncio streams, sending exactly the bytes it is given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, *, implicit_tls: bool = False, source: str = "127.0.0.1"
    ) -> RawClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=client_context() if implicit_tls else None,
            local_addr=(source, 0),
        )
        client = cls(reader, writer)
        await client.reply()  # the greeting
        return client

    async def reply(self) -> tuple[int, list[str]]:
        """One (possibly multi-line) reply: its code and its lines of text."""
        lines: list[str] = []
        while True:  # bounded: a reply has few lines, each read within the timeout
            raw = await asyncio.wait_for(self.reader.readline(), _CLIENT_TIMEOUT)
            if not raw:
                raise ConnectionError("the server closed the connection")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line[4:])
            if line[3:4] != "-" or len(lines) > 50:
                return int(line[:3]), lines

    async def command(self, line: str) -> tuple[int, list[str]]:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def starttls(self) -> None:
        code, _ = await self.command("STARTTLS")
        assert code == 220
        await self.writer.start_tls(client_context(), server_hostname="127.0.0.1")

    async def closed(self) -> bool:
        """Whether the server has closed the connection (reads what is left first)."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), _CLIENT_TIMEOUT)
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False
        return rest == b"" or self.reader.at_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


@contextmanager
def dns_with_mx() -> Iterator[DnsServer]:
    """A DNS server where example.test has its MX on 127.0.0.1."""
    with DnsServer() as server:
        server.add("example.test", "MX", "mx.example.test", priority=10)
        server.add("mx.example.test", "A", "127.0.0.1")
        yield server


@dataclass(frozen=True)
class Tenant:
    account_id: str
    sender_id: int
    keys: dict[str, str]  # permission → API key


Start = Callable[..., Awaitable[SubmissionServer]]


async def email_count(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(emails))).scalar_one())


async def stored_message(db: Database, email_id: str) -> bytes:
    async with db.read() as conn:
        raw = (await conn.execute(select(emails.c.raw).where(emails.c.id == email_id))).scalar_one()
    return bytes(raw)


async def deliver(server: SubmissionServer, db: Database) -> None:
    """Run the real worker until nothing is due: queued mail goes to the sink."""
    settings = server.settings
    worker = Worker(db, settings, SmtpDeliverer(settings), DkimSigner(db, settings))
    await worker.run_until_idle(within=30)
    await worker.close()


def queued_id(reply: str) -> str:
    """The email id in ``2.0.0 Ok: queued as <id>``."""
    assert reply.startswith("2.0.0 Ok: queued as "), reply
    return reply.rsplit(" ", 1)[1]
