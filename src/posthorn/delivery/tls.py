"""How an outgoing SMTP session uses TLS, and the contexts it uses.

Opportunistic by default (RFC 7435): encrypt when the server offers STARTTLS, without checking
its certificate. A destination's policy, a relay with credentials or an implicit-TLS port make
TLS required; a verifying context also checks the certificate's chain and name.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """How a session uses TLS. ``context=None`` means plain text."""

    context: ssl.SSLContext | None
    implicit: bool = False  # TLS from the first byte (RFC 8314 §3.3)
    required: bool = False  # no TLS, no session: credentials are never sent in clear
    server_name: str | None = None  # SNI and, with a verifying context, the name checked
    # The destination's TLS policy when it is what requires TLS, as the failure reason names
    # it: "policy 'verify' for bank.example". Set together with ``required``.
    policy: str | None = None

    @property
    def verifies(self) -> bool:
        """Whether the certificate must chain to a trusted CA and name ``server_name``."""
        return (
            self.context is not None
            and self.context.verify_mode != ssl.CERT_NONE
            and self.context.check_hostname
        )

    def without_tls(self) -> TlsPolicy:
        return replace(self, context=None, implicit=False)


def opportunistic_tls_context() -> ssl.SSLContext:
    """A client context that encrypts without checking the certificate.

    RFC 7435 opportunistic security and RFC 3207 §4.1: an MX certificate rarely names the
    host we looked up, and encryption without authentication still beats plain text.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def is_tls_error(exc: BaseException) -> bool:
    """Whether ``exc`` or anything it was raised from is an SSL error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
