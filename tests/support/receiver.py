"""A recording HTTP/1.1 server on 127.0.0.1 for webhook tests, on ``asyncio.start_server``.

It answers 200 unless told otherwise, per path and in order::

    async with Receiver() as hooks:
        hooks.script("/hook", Reply(500), Reply(429, headers={"Retry-After": "120"}))
        hooks.default("/slow", Reply(delay=2.0))
        url = hooks.url("/hook")
        ...
        [request] = await hooks.wait_for(1)

With ``tls_hostname`` it speaks TLS with a certificate for that name from a test CA
(trustme); :meth:`client_context` trusts it, and :attr:`sni_names` records the names clients
asked for. Only what webhooks use is implemented: requests with a Content-Length body,
keep-alive. Independent of the product.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType

import trustme

MAX_HEAD = 64 * 1024
MAX_BODY = 10 * 1024 * 1024
MAX_REQUESTS_PER_CONNECTION = 1000
IDLE_SECONDS = 30.0


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # the event loop's clock when the request arrived


@functools.cache
def _authority() -> trustme.CA:
    return trustme.CA()


class Receiver:
    def __init__(self, *, tls_hostname: str | None = None) -> None:
        self.tls_hostname = tls_hostname
        self.requests: list[Received] = []
        self.sni_names: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._scripts: dict[str, deque[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        context = self._server_context() if self.tls_hostname else None
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        if self.tls_hostname:
            return f"https://{self.tls_hostname}:{self.port}{path}"
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with these replies, in order."""
        self._scripts.setdefault(path, deque()).extend(replies)

    def default(self, path: str, reply: Reply) -> None:
        """Answer requests to ``path`` with ``reply`` once its script is used up."""
        self._defaults[path] = reply

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        _authority().configure_trust(context)
        return context

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` requests, waiting at most ``timeout`` seconds for them."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests[:count]

    def _server_context(self) -> ssl.SSLContext:
        assert self.tls_hostname is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        _authority().issue_cert(self.tls_hostname).configure_cert(context)

        def remember(_sock: object, name: str | None, _ctx: object) -> None:
            self.sni_names.append(name)

        context.sni_callback = remember
        return context

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                if not await self._one(reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        async with asyncio.timeout(IDLE_SECONDS):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return False  # the client closed the connection between requests
        if len(head) > MAX_HEAD:
            return False
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, path, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY:
            return False
        async with asyncio.timeout(IDLE_SECONDS):
            body = await reader.readexactly(length)
        async with self._arrived:
            self.requests.append(
                Received(method, path, headers, body, asyncio.get_running_loop().time())
            )
            self._arrived.notify_all()
        reply = self._next_reply(path)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            writer.write(_response(reply))
            await writer.drain()
        finally:
            self.in_flight -= 1
        return True

    def _next_reply(self, path: str) -> Reply:
        queued = self._scripts.get(path)
        if queued:
            return queued.popleft()
        return self._defaults.get(path, Reply())


def _response(reply: Reply) -> bytes:
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = "Status"
    head = [f"HTTP/1.1 {reply.status} {reason}", f"Content-Length: {len(reply.body)}"]
    head += ["Content-Type: text/plain; charset=utf-8", "Connection: keep-alive"]
    head += [f"{name}: {value}" for name, value in reply.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body
