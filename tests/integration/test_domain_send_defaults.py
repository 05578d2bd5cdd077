"""A domain's send defaults over real HTTP: ``track_opens`` / ``track_clicks`` for sends that
do not say, and ``force_unsubscribe``, checked on what a real worker delivers into a real sink."""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from posthorn.services.container import Services
from posthorn.settings import Settings
from tests.conftest import make_settings
from tests.support.delivery import deliver_due
from tests.support.dkim_check import dkim_verifies
from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink

PUBLIC_URL = "https://mail.posthorn.test"
LINK = "https://shop.example.test/p/42"
HTML = f'<p>Hi, see <a href="{LINK}">the shop</a>. <a href="{{{{ unsubscribe_url }}}}">Stop</a></p>'
SETTINGS = ("track_opens", "track_clicks", "force_unsubscribe")


def h(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, dns: DnsServer) -> Settings:
    # RFC 8058 §3.1: List-Unsubscribe-Post only goes with an https URL.
    return make_settings(
        tmp_path, database_url, dns_nameservers=[dns.nameserver], public_url=PUBLIC_URL
    )


@pytest.fixture
def sink(dns: DnsServer) -> Iterator[SmtpSink]:
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    with SmtpSink(starttls=False) as server:
        yield server


async def patch(http: httpx.AsyncClient, account: dict[str, str], **changes: Any) -> dict[str, Any]:
    response = await http.patch(
        f"/v1/domains/{account['domain_id']}", json=changes, headers=h(account)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def raw(sink: SmtpSink, subject: str) -> bytes:
    [data] = [m.data for m in sink.messages if f"Subject: {subject}".encode() in m.data]
    return bytes(data)


def received(sink: SmtpSink, subject: str) -> EmailMessage:
    message = email.message_from_bytes(raw(sink, subject), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def send(
    http: httpx.AsyncClient,
    account: dict[str, str],
    services: Services,
    sink: SmtpSink,
    **fields: Any,
) -> EmailMessage:
    """POST one email (``fields`` may set the tracking switches), deliver it, and return it as
    the recipient's server got it."""
    subject = f"Order {uuid.uuid4().hex[:8]}"
    body = {"from": "Acme <news@acme.test>", "to": ["jane@example.test"], "subject": subject}
    response = await http.post(
        "/v1/emails", json={**body, "html": HTML, **fields}, headers=h(account)
    )
    assert response.status_code == 200, response.text
    await deliver_due(services, sink)
    return received(sink, subject)


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def has_pixel(message: EmailMessage) -> bool:
    return f'src="{PUBLIC_URL}/t/o/' in html_of(message)


def links_rewritten(message: EmailMessage) -> bool:
    html = html_of(message)
    rewritten = f'href="{PUBLIC_URL}/t/c/' in html
    assert rewritten is (f'href="{LINK}"' not in html)
    return rewritten


def has_unsubscribe(message: EmailMessage) -> bool:
    header = message["List-Unsubscribe"]
    if header is None:
        assert message["List-Unsubscribe-Post"] is None
        assert "{{ unsubscribe_url }}" in html_of(message)
        return False
    https_url = str(header).split(",")[0].strip(" <>")
    assert https_url.startswith(f"{PUBLIC_URL}/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f'href="{https_url}"' in html_of(message)  # {{ unsubscribe_url }} filled in
    return True


# ── the domain API ───────────────────────────────────────────────────────────────────────


async def test_settings_are_off_until_patched_and_shown_by_get(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    path = f"/v1/domains/{account['domain_id']}"
    shown = (await http.get(path, headers=h(account, "read_only"))).json()
    assert {name: shown[name] for name in SETTINGS} == dict.fromkeys(SETTINGS, False)

    patched = await patch(http, account, track_opens=True, force_unsubscribe=True)
    assert (patched["track_opens"], patched["track_clicks"], patched["force_unsubscribe"]) == (
        True,
        False,
        True,
    )
    shown = (await http.get(path, headers=h(account, "read_only"))).json()
    assert (shown["track_opens"], shown["track_clicks"], shown["force_unsubscribe"]) == (
        True,
        False,
        True,
    )
    # A PATCH that leaves a setting out leaves it as it was.
    patched = await patch(http, account, track_clicks=True)
    assert {name: patched[name] for name in SETTINGS} == dict.fromkeys(SETTINGS, True)
    patched = await patch(http, account, track_opens=False, hourly_limit=40)
    assert (patched["track_opens"], patched["track_clicks"], patched["hourly_limit"]) == (
        False,
        True,
        40,
    )


@pytest.mark.parametrize("name", SETTINGS)
@pytest.mark.parametrize("value", ["true", 1, 0, None, "yes", [], {}])
async def test_only_true_or_false_are_accepted(
    http: httpx.AsyncClient, account: dict[str, str], name: str, value: Any
) -> None:
    path = f"/v1/domains/{account['domain_id']}"
    response = await http.patch(path, json={name: value}, headers=h(account))
    assert response.status_code == 422, response.text
    assert name in response.json()["detail"]
    shown = (await http.get(path, headers=h(account))).json()
    assert shown[name] is False


async def test_only_full_access_changes_them(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    path = f"/v1/domains/{account['domain_id']}"
    for permission in ("sending_access", "read_only"):
        response = await http.patch(
            path, json={"force_unsubscribe": True}, headers=h(account, permission)
        )
        assert response.status_code == 403, response.text
    assert (await http.get(path, headers=h(account))).json()["force_unsubscribe"] is False


async def test_another_accounts_domain_is_404(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    other = await services.accounts.create_account("globex")
    key = {"X-API-KEY": (await services.accounts.create_key(other.id, name="k")).key}
    path = f"/v1/domains/{account['domain_id']}"
    assert (await http.get(path, headers=key)).status_code == 404
    response = await http.patch(path, json={"track_opens": True}, headers=key)
    assert response.status_code == 404, response.text
    assert (await http.get(path, headers=h(account))).json()["track_opens"] is False


# ── what recipients get ──────────────────────────────────────────────────────────────────


async def test_without_settings_nothing_is_tracked_and_no_unsubscribe_is_added(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    message = await send(http, account, services, sink)
    assert not has_pixel(message)
    assert not links_rewritten(message)
    assert not has_unsubscribe(message)


async def test_unsaid_tracking_follows_the_domain_at_once_after_a_patch(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    before = await send(http, account, services, sink)  # the domain is now cached for sends
    assert not has_pixel(before) and not links_rewritten(before)

    await patch(http, account, track_opens=True)
    opens_only = await send(http, account, services, sink)
    assert has_pixel(opens_only) and not links_rewritten(opens_only)

    await patch(http, account, track_opens=False, track_clicks=True)
    clicks_only = await send(http, account, services, sink)
    assert not has_pixel(clicks_only) and links_rewritten(clicks_only)

    await patch(http, account, track_opens=True)
    both = await send(http, account, services, sink)
    assert has_pixel(both) and links_rewritten(both)
    assert not has_unsubscribe(both)

    null = await send(http, account, services, sink, track_opens=None, track_clicks=None)
    assert has_pixel(null) and links_rewritten(null)  # null is "not said"


async def test_an_explicit_request_value_wins(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    on = await send(http, account, services, sink, track_opens=True, track_clicks=True)
    assert has_pixel(on) and links_rewritten(on)

    await patch(http, account, track_opens=True, track_clicks=True)
    off = await send(http, account, services, sink, track_opens=False, track_clicks=False)
    assert not has_pixel(off) and not links_rewritten(off)
    mixed = await send(http, account, services, sink, track_clicks=False)
    assert has_pixel(mixed) and not links_rewritten(mixed)


async def test_forced_unsubscribe_reaches_every_email(
    http: httpx.AsyncClient,
    account: dict[str, str],
    services: Services,
    sink: SmtpSink,
    dns: DnsServer,
) -> None:
    await patch(http, account, force_unsubscribe=True)
    for fields in ({}, {"unsubscribe": False}, {"unsubscribe": True}):
        message = await send(http, account, services, sink, **fields)
        assert has_unsubscribe(message), fields
        assert not has_pixel(message) and not links_rewritten(message)
        assert dkim_verifies(raw(sink, str(message["Subject"])), dns)
        signature = str(message["DKIM-Signature"]).replace("\r\n", "").replace(" ", "")
        assert "List-Unsubscribe:List-Unsubscribe-Post" in signature

    await patch(http, account, force_unsubscribe=False)
    assert not has_unsubscribe(await send(http, account, services, sink))
    assert has_unsubscribe(await send(http, account, services, sink, unsubscribe=True))


async def test_batch_items_follow_the_domain_unless_they_say(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    await patch(http, account, track_opens=True, track_clicks=True, force_unsubscribe=True)
    base = {"from": "news@acme.test", "to": ["jane@example.test"], "html": HTML}
    items = [
        {**base, "subject": "batch unsaid"},
        {**base, "subject": "batch off", "track_opens": False, "track_clicks": False},
    ]
    response = await http.post("/v1/emails/batch", json=items, headers=h(account))
    assert response.status_code == 200, response.text
    assert [item.get("status") for item in response.json()["data"]] == ["queued", "queued"]
    await deliver_due(services, sink)

    unsaid = received(sink, "batch unsaid")
    assert has_pixel(unsaid) and links_rewritten(unsaid) and has_unsubscribe(unsaid)
    off = received(sink, "batch off")
    assert not has_pixel(off) and not links_rewritten(off) and has_unsubscribe(off)


async def test_a_bizmail_form_without_the_fields_follows_the_domain(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    await services.users.create_user(
        account["account_id"], username="portal", password="pw-12345678"
    )
    login = await http.post(
        "/api/1.0/auth/token", json={"username": "portal", "password": "pw-12345678"}
    )
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
    await patch(http, account, track_opens=True, track_clicks=True)
    form = {"from": "news@acme.test", "to": "jane@example.test", "html": HTML}
    for subject, flags in (("form unsaid", {}), ("form off", {"track_opens": "0"})):
        response = await http.post(
            "/api/1.0/mail/store", data={**form, "subject": subject, **flags}, headers=bearer
        )
        assert response.status_code == 200, response.text
    await deliver_due(services, sink)

    unsaid = received(sink, "form unsaid")
    assert has_pixel(unsaid) and links_rewritten(unsaid)
    off = received(sink, "form off")
    assert not has_pixel(off) and links_rewritten(off)
