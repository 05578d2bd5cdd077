"""An httpx transport that connects only to checked addresses.

httpx hands the host name to its network backend, which would resolve it again: a DNS
answer that changed since the check (DNS rebinding) would then decide where the request
goes. :class:`GuardedBackend` resolves the host itself, refuses it when any address is not
public (``domain/ssrf.py``), and connects to the checked IP. The TLS handshake and the
``Host`` header still use the URL's host name, since httpcore takes both from the URL, not
from the socket: certificates are verified against the name, and SNI carries it.

No proxies (a proxy would connect on our behalf, unchecked) and no redirects (the client is
built with ``follow_redirects=False``; a 3xx is a failed attempt).
"""

from __future__ import annotations

import ssl
import typing
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import httpcore
import httpx

from posthorn.domain.ssrf import first_refused


class HostResolver(Protocol):
    """Resolves a host to its addresses, [] when it has none (``webhooks/resolver.py``)."""

    async def addresses(self, host: str) -> list[str]: ...


class RefusedDestination(httpcore.ConnectError):
    """The host resolves to an address webhooks must not go to."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(
        self,
        resolver: HostResolver,
        *,
        allow_private: bool,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._resolver = resolver
        self._allow_private = allow_private
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolver.addresses(host)
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        refused = first_refused(addresses, allow_private=self._allow_private)
        if refused is not None:
            address, problem = refused
            raise RefusedDestination(
                f"refused: {host} resolves to {address}, a {problem} address "
                "(webhooks only go to public addresses)"
            )
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks do not go to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore's errors as httpx's, most specific first (httpx's own transport does the same).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


def _translate(exc: Exception) -> Exception | None:
    for source, target in _ERRORS:
        if isinstance(exc, source):
            return target(str(exc))
    return None


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            mapped = _translate(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over :class:`GuardedBackend`, with a connection pool."""

    def __init__(
        self,
        resolver: HostResolver,
        *,
        allow_private: bool,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or ssl.create_default_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
            http1=True,
            http2=False,
            network_backend=GuardedBackend(resolver, allow_private=allow_private),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = typing.cast(typing.AsyncIterable[bytes], request.stream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=content,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except Exception as exc:
            mapped = _translate(exc)
            if mapped is None:
                raise
            raise mapped from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(typing.cast(typing.AsyncIterable[bytes], response.stream)),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
