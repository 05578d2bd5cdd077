"""Setting up an aiosmtpd session object cheaply: once per class, not once per connection.

aiosmtpd's ``SMTP.__init__`` finds the session's ``smtp_*`` commands, ``auth_*`` mechanisms
and the handler's ``handle_*`` hooks by introspection (``inspect.getmembers`` and ``dir``) on
every connection. That costs about half a millisecond, more than the rest of a one-message
session, and it is the same answer every time. :func:`init_session` sets the same attributes
as aiosmtpd 1.4.6's constructor, with the introspection done once per class and per handler;
the command and hook tables are mappings that bind a method when it is looked up.

It relies on that constructor's layout, so it is used only with the aiosmtpd versions it was
checked against (``tests/unit/test_smtp_parts.py`` compares both ways); with any other
version the caller runs aiosmtpd's own constructor.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiosmtpd
from aiosmtpd.smtp import SMTP, _AuthMechAttr, login_always_fail

KNOWN_VERSIONS = frozenset({"1.4.6"})


def supported() -> bool:
    return aiosmtpd.__version__ in KNOWN_VERSIONS


@dataclass(frozen=True, slots=True)
class _HandlerTables:
    hooks: dict[str, str]  # hook name → handle_* attribute name
    mechanisms: tuple[tuple[str, str], ...]  # (mechanism, auth_* attribute name)
    ehlo_hook_version: str | None


_class_tables: dict[type[SMTP], tuple[dict[str, str], tuple[tuple[str, str], ...]]] = {}
_handler_tables: weakref.WeakKeyDictionary[Any, _HandlerTables] = weakref.WeakKeyDictionary()


class _Bound(Mapping[str, Any]):
    """``{key: getattr(owner, attribute)}`` over a fixed table, bound when looked up: a
    session uses a handful of its thirty-odd commands, so binding them all costs more."""

    __slots__ = ("_attributes", "_owner")

    def __init__(self, owner: Any, attributes: dict[str, str]) -> None:
        self._owner = owner
        self._attributes = attributes

    def __getitem__(self, key: str) -> Any:
        return getattr(self._owner, self._attributes[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._attributes)

    def __len__(self) -> int:
        return len(self._attributes)


def _mechanisms(obj: Any) -> tuple[tuple[str, str], ...]:
    # As aiosmtpd names them: an explicit __auth_mechanism_name__, else auth_X__Y → "X-Y".
    return tuple(
        (getattr(member, "__auth_mechanism_name__", name[5:].replace("__", "-")), name)
        for name, member in inspect.getmembers(obj)
        if name.startswith("auth_")
    )


def _for_class(cls: type[SMTP]) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    tables = _class_tables.get(cls)
    if tables is None:
        commands = {name[5:]: name for name in dir(cls) if name.startswith("smtp_")}
        tables = (commands, _mechanisms(cls))
        _class_tables[cls] = tables
    return tables


def _for_handler(handler: Any) -> _HandlerTables:
    tables = _handler_tables.get(handler)
    if tables is None:
        hooks = {name[7:]: name for name in dir(handler) if name.startswith("handle_")}
        ehlo = getattr(handler, "handle_EHLO", None)
        version = None
        if ehlo is not None:
            version = "new" if len(inspect.signature(ehlo).parameters) == 5 else "old"
        tables = _HandlerTables(hooks, _mechanisms(handler), version)
        _handler_tables[handler] = tables
    return tables


def init_session(
    session: SMTP,
    handler: Any,
    *,
    data_size_limit: int,
    hostname: str,
    ident: str,
    tls_context: ssl.SSLContext | None,
    timeout: float,
    auth_require_tls: bool,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """What ``SMTP.__init__`` does for these options (SMTPUTF8 on, bytes content, no AUTH
    requirement, no PROXY protocol, no call limits), without the per-connection look-ups."""
    commands, own_mechanisms = _for_class(type(session))
    tables = _for_handler(handler)
    session.__ident__ = ident
    session.loop = loop
    asyncio.StreamReaderProtocol.__init__(
        session,
        asyncio.StreamReader(loop=loop, limit=session.line_length_limit),
        client_connected_cb=session._cb_client_connected,
        loop=loop,
    )
    session.event_handler = handler
    session.data_size_limit = data_size_limit
    session.enable_SMTPUTF8 = True
    session._decode_data = False
    session.command_size_limits.clear()
    session.hostname = hostname
    session.tls_context = tls_context
    session.require_starttls = tls_context and False  # falsy, of the type aiosmtpd leaves
    session._timeout_duration = timeout
    session._timeout_handle = None
    session._tls_handshake_okay = True
    session._tls_protocol = None
    session._original_transport = None
    session.session = None
    session.envelope = None
    session.transport = None
    session._handler_coroutine = None
    session._auth_require_tls = auth_require_tls
    session._proxy_timeout = None
    session._auth_callback = login_always_fail
    session._authenticator = None
    session._auth_required = False
    methods = {mech: _AuthMechAttr(getattr(session, name), True) for mech, name in own_mechanisms}
    methods.update(
        {mech: _AuthMechAttr(getattr(handler, name), False) for mech, name in tables.mechanisms}
    )
    session._auth_methods = methods
    session._handle_hooks = _Bound(handler, tables.hooks)  # type: ignore[assignment]
    session._ehlo_hook_ver = tables.ehlo_hook_version
    session._smtp_methods = _Bound(session, commands)  # type: ignore[assignment]
    session._enforce_call_limit = False
