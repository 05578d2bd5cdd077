"""Which way a delivery leaves: the account's default relay, the configured global relay, or
straight to the recipient's MX hosts. One transport per route, each with its own connection
pool; an account's choice is looked up at most every 30 seconds. An account's relay is built
``checked``: the transport connects only to addresses that pass the SSRF rule."""

from __future__ import annotations

import time
from typing import Protocol

from posthorn.delivery.envelope import Batch, Envelope
from posthorn.delivery.transport import RelayConfig
from posthorn.domain.results import DeliveryResult
from posthorn.services.relays import Relays
from posthorn.settings import Settings

CACHE_SECONDS = 30.0


class Deliverer(Protocol):
    """Sends one message to one recipient, or to several in one transaction per next hop, and
    says how it went for each (``delivery/transport.py``)."""

    async def deliver(self, envelope: Envelope) -> DeliveryResult: ...

    async def deliver_many(self, batch: Batch) -> list[DeliveryResult]: ...

    async def aclose(self) -> None: ...


class DelivererFactory(Protocol):
    """Builds a transport; with ``relay``, one that sends everything through it
    (``SmtpDeliverer``)."""

    def __call__(self, settings: Settings, /, *, relay: RelayConfig | None = None) -> Deliverer: ...


class Routes:
    def __init__(
        self,
        settings: Settings,
        default: Deliverer,
        relays: Relays | None = None,
        *,
        make: DelivererFactory | None = None,
    ) -> None:
        self._settings = settings
        self._default = default
        self._relays = relays
        self._make = make
        self._by_url: dict[str, Deliverer] = {}
        self._choice: dict[str, tuple[float, str | None]] = {}

    async def for_account(self, account_id: str) -> Deliverer:
        if self._relays is None or self._make is None:
            return self._default
        now = time.monotonic()
        cached = self._choice.get(account_id)
        if cached is None or cached[0] <= now:
            found = await self._relays.default_url(account_id)
            cached = (now + CACHE_SECONDS, found[1] if found else None)
            self._choice[account_id] = cached
        url = cached[1]
        if url is None:
            return self._default
        if url not in self._by_url:
            relay = RelayConfig.from_url(url, checked=True)
            self._by_url[url] = self._make(self._settings, relay=relay)
        return self._by_url[url]

    async def aclose(self) -> None:
        for deliverer in [self._default, *self._by_url.values()]:
            await deliverer.aclose()
