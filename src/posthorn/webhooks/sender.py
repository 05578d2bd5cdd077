"""One POST to one endpoint, and what came of it, as a value.

Whatever the endpoint does (answers 500, redirects, sends a slow or endless body, never
answers, resolves to a private address) becomes an :class:`HttpAttempt`; nothing remote
raises. The whole attempt, DNS and body included, is bounded by one deadline: httpx's own
timeouts apply per read, so a body trickling in a byte at a time would never trip them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from posthorn import __version__
from posthorn.webhooks.transport import GuardedTransport, HostResolver

USER_AGENT = f"Posthorn-Webhooks/{__version__}"
EXCERPT_CHARS = 500
# Enough bytes for EXCERPT_CHARS characters of UTF-8; the rest of the body is never read.
EXCERPT_BYTES = EXCERPT_CHARS * 4
MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class HttpAttempt:
    status_code: int | None  # None: no HTTP answer at all
    latency_ms: int  # until the answer's headers, or until the failure
    excerpt: str | None  # the start of the response body
    error: str | None  # what went wrong besides the status code
    retry_after: str | None  # the raw Retry-After header


class Sender:
    def __init__(
        self,
        resolver: HostResolver,
        *,
        allow_private: bool,
        timeout: float,
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(
                resolver,
                allow_private=allow_private,
                max_connections=max_connections,
                ssl_context=ssl_context,
            ),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": USER_AGENT},
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpAttempt:
        loop = asyncio.get_running_loop()
        started = loop.time()
        latency: float | None = None
        status_code: int | None = None
        retry_after: str | None = None
        excerpt: str | None = None
        error: str | None = None
        request_headers = {
            "content-type": "application/json",
            # No compression: the excerpt is read raw, and a small compressed body could
            # otherwise expand into a large one in memory.
            "accept-encoding": "identity",
            **headers,
        }
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("POST", url, content=body, headers=request_headers) as answer,
            ):
                latency = loop.time() - started
                status_code = answer.status_code
                retry_after = answer.headers.get("retry-after")
                if answer.is_redirect:
                    location = answer.headers.get("location", "")[:200]
                    error = f"redirect to {location!r} not followed"
                excerpt = await _excerpt(answer)
        except TimeoutError:
            what = "the response body" if status_code is not None else "an answer"
            error = f"timed out after {self._timeout:g} s waiting for {what}"
        except httpx.HTTPError as exc:
            error = _describe(exc)
        if latency is None:
            latency = loop.time() - started
        return HttpAttempt(
            status_code=status_code,
            latency_ms=round(latency * 1000),
            excerpt=excerpt,
            error=error,
            retry_after=retry_after,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


async def _excerpt(answer: httpx.Response) -> str | None:
    data = b""
    async for chunk in answer.aiter_raw():
        data += chunk
        if len(data) >= EXCERPT_BYTES:
            break
    text = data[:EXCERPT_BYTES].decode("utf-8", "replace")[:EXCERPT_CHARS]
    return text or None


def _describe(exc: httpx.HTTPError) -> str:
    detail = str(exc) or exc.__class__.__name__
    if isinstance(exc, httpx.ConnectError) and detail.startswith("refused:"):
        return detail[:MAX_ERROR_CHARS]
    return f"{exc.__class__.__name__}: {detail}"[:MAX_ERROR_CHARS]
