"""Who is submitting: SMTP credentials (or a trusted network) turned into a credential.

Two kinds of credentials (RFC 4954 AUTH PLAIN or LOGIN):

- a sender's address and password: it may send only as that address;
- the user name ``apikey`` with an API key as the password: it may send from any verified
  domain of its account, if the key has ``sending_access`` or ``full_access``.

Optionally, clients on ``SMTP_TRUSTED_NETWORKS`` may submit without AUTH for
``SMTP_TRUSTED_ACCOUNT`` (a local relay, or the benchmark's load generator).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Literal

from posthorn.domain.network import parse_networks
from posthorn.domain.permissions import Permission, allows
from posthorn.domain.quotas import Limit
from posthorn.errors import AuthenticationFailed, PermissionDenied
from posthorn.services.container import Services
from posthorn.settings import Settings
from posthorn.smtp import replies

log = logging.getLogger("posthorn.smtp")

API_KEY_USER = "apikey"
API_KEY_PREFIX = "phk_"  # a user name that looks like a key is never logged


@dataclass(frozen=True, slots=True)
class Credential:
    """An authenticated submitter."""

    account_id: str
    kind: Literal["sender", "api_key", "user", "trusted"]
    login: str  # what the client logged in as: a sender address, "apikey", or "trusted"
    sender_address: str | None = None  # for a sender: the one address it may send as
    api_key_id: str | None = None
    limits: tuple[Limit, ...] = ()  # a sender's own hourly and daily limits


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # for the log
    reply: str  # for the client


def parse_plain(blob: bytes) -> tuple[str, str] | None:
    """User and password from an RFC 4616 PLAIN message ``[authzid] NUL authcid NUL passwd``.

    An authorization identity other than the user itself is refused: nobody may act for
    someone else.
    """
    parts = blob.split(b"\x00")
    if len(parts) != 3:
        return None
    authzid, user, password = (part.decode("utf-8", "replace") for part in parts)
    if not user or (authzid and authzid != user):
        return None
    return user, password


def loggable_user(user: str) -> str:
    """The user name as it may appear in a log: a key pasted into the wrong field is hidden."""
    if user.startswith(API_KEY_PREFIX):
        return "<redacted>"
    return replies.one_line(user)[:100]


class Authenticator:
    """Checks credentials through the services; never logs a password."""

    def __init__(self, settings: Settings, services: Services) -> None:
        self._services = services
        self._trusted = parse_networks(settings.smtp_trusted_networks)
        self._trusted_account = settings.smtp_trusted_account
        if self._trusted and not self._trusted_account:
            raise ValueError(
                "POSTHORN_SMTP_TRUSTED_NETWORKS is set but POSTHORN_SMTP_TRUSTED_ACCOUNT is not"
            )

    async def check(self, user: str, password: str, *, client_ip: str) -> Credential | Refused:
        if user.lower() == API_KEY_USER:
            return await self._api_key(password, client_ip)
        identity = await self._services.senders.authenticate(user, password)
        if identity is None:
            # A portal login (BizMail's "SMTP with your portal credentials"): any address on
            # the account's verified domains, which intake checks like any other From.
            person = await self._services.users.authenticate(user, password)
            if person is None:
                return Refused("bad_credentials", replies.AUTH_INVALID)
            return Credential(account_id=person.account_id, kind="user", login=person.username)
        return Credential(
            account_id=identity.account_id,
            kind="sender",
            login=identity.address,
            sender_address=identity.address,
            limits=identity.limits,
        )

    async def _api_key(self, key: str, client_ip: str) -> Credential | Refused:
        try:
            principal = await self._services.accounts.authenticate(key, client_ip=client_ip)
        except AuthenticationFailed:
            return Refused("bad_credentials", replies.AUTH_INVALID)
        except PermissionDenied:
            return Refused("ip_not_allowed", replies.AUTH_INVALID)
        if not allows(principal.permission, Permission.SENDING_ACCESS):
            return Refused("read_only_key", replies.AUTH_NO_SEND)
        return Credential(
            account_id=principal.account_id,
            kind="api_key",
            login=API_KEY_USER,
            api_key_id=principal.key_id,
        )

    def trusted(self, client_ip: str) -> Credential | None:
        """The credential of a client on a trusted network, which needs no AUTH."""
        if not self._trusted:
            return None
        try:
            address = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not any(address in network for network in self._trusted):
            return None
        return Credential(account_id=self._trusted_account, kind="trusted", login="trusted")
