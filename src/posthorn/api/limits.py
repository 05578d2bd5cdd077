"""Refuse request bodies over the size limit before they are buffered (HTTP 413)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from posthorn.messages import pick_language, render

# The body limit of a /v1 route that does not carry a message (keys, domains, webhooks,
# relays, senders, lists, suppressions...): its largest legitimate body is a few KB.
SMALL_BODY_BYTES = 16 * 1024
# Adding up to 1,000 contacts with their variables in one request.
CONTACTS_BODY_BYTES = 1024 * 1024


class BodySizeLimit:
    """Checks ``Content-Length`` up front and counts streamed (chunked) bodies as they come."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        language = pick_language(headers.get(b"content-language", b"").decode("latin-1"))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, language)
            return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            # Past the limit, answer 413 ourselves and tell the app the client went away:
            # the framework would turn an exception raised here into a 400.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    await self._refuse(send, language)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, send: Send, language: str) -> None:
        body = json.dumps({"detail": render("too_large", language, limit=self.limit)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
