"""``/v1/account`` and ``posthorn admin update-account`` over real HTTP and a real CLI process:
reading the account, setting its default sender and time zone, every refusal, and a MailPass
send without ``from_email`` that goes out from the default sender set through the API."""

from __future__ import annotations

import asyncio
import email
import json
import os
import re
import sys
from collections.abc import Iterator
from email.policy import default as default_policy
from typing import Any

import httpx
import pytest

from posthorn.services.container import Services
from posthorn.settings import Settings
from tests.support.delivery import deliver_due
from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink

ACCOUNT = "/v1/account"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def key(account: dict[str, str], permission: str = "full_access") -> dict[str, str]:
    return {"X-API-KEY": account[permission]}


async def patch(
    http: httpx.AsyncClient, account: dict[str, str], body: dict[str, Any], **headers: str
) -> httpx.Response:
    return await http.patch(ACCOUNT, json=body, headers={**key(account), **headers})


async def current(http: httpx.AsyncClient, account: dict[str, str]) -> dict[str, Any]:
    response = await http.get(ACCOUNT, headers=key(account, "read_only"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# ── reading ──────────────────────────────────────────────────────────────────────────────


async def test_any_key_reads_its_own_account(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    other = await services.accounts.create_account("other")
    for permission in ("full_access", "sending_access", "read_only"):
        response = await http.get(ACCOUNT, headers=key(account, permission))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"id", "name", "default_sender", "timezone", "created_at"}
        assert body["id"] == account["account_id"] != other.id
        assert (body["name"], body["default_sender"], body["timezone"]) == ("acme", None, "UTC")
        assert TIMESTAMP.match(body["created_at"])
    assert (await http.get(ACCOUNT)).status_code == 401
    assert (await http.get(ACCOUNT, headers={"X-API-KEY": "phk_nope"})).status_code == 401


# ── changing ─────────────────────────────────────────────────────────────────────────────


async def test_full_access_sets_and_clears_the_settings(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    response = await patch(
        http,
        account,
        {"default_sender": " Acme Support <support@acme.test> ", "timezone": "asia/ho_chi_minh"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # Stored trimmed, as written; the zone as IANA spells it.
    assert body["default_sender"] == "Acme Support <support@acme.test>"
    assert body["timezone"] == "Asia/Ho_Chi_Minh"
    assert await current(http, account) == body

    # A field left out stays as it is.
    only_zone = await patch(http, account, {"timezone": "Europe/Paris"})
    assert only_zone.json()["default_sender"] == "Acme Support <support@acme.test>"
    assert only_zone.json()["timezone"] == "Europe/Paris"
    assert (await patch(http, account, {})).json() == only_zone.json()

    # null clears the default sender and returns the time zone to UTC.
    cleared = await patch(http, account, {"default_sender": None, "timezone": None})
    assert cleared.status_code == 200
    assert (cleared.json()["default_sender"], cleared.json()["timezone"]) == (None, "UTC")
    assert await current(http, account) == cleared.json()


async def test_only_full_access_changes_the_account(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    for permission in ("sending_access", "read_only"):
        response = await http.patch(
            ACCOUNT, json={"timezone": "Europe/Paris"}, headers=key(account, permission)
        )
        assert response.status_code == 403, response.text
        assert permission in response.json()["detail"]
    assert (await http.patch(ACCOUNT, json={"timezone": "Europe/Paris"})).status_code == 401
    assert (await current(http, account))["timezone"] == "UTC"


async def test_the_default_sender_must_be_an_address_on_one_of_the_accounts_domains(
    http: httpx.AsyncClient, account: dict[str, str], services: Services
) -> None:
    bad_address = await patch(http, account, {"default_sender": "not an address"})
    assert bad_address.status_code == 422
    assert bad_address.json()["detail"] == (
        "default_sender: 'not an address' is not a valid email address"
    )

    elsewhere = await patch(http, account, {"default_sender": "hello@elsewhere.test"})
    assert elsewhere.status_code == 422
    assert elsewhere.json()["detail"] == (
        "default_sender: elsewhere.test is not a domain of this account; "
        "add it with POST /v1/domains"
    )
    # Another account's domain is not this account's, verified or not.
    other = await services.accounts.create_account("other")
    other_key = await services.accounts.create_key(other.id, name="k")
    registered = await http.post(
        "/v1/domains", json={"domain": "other.test"}, headers={"X-API-KEY": other_key.key}
    )
    assert registered.status_code == 200, registered.text
    assert (await patch(http, account, {"default_sender": "a@other.test"})).status_code == 422
    # A subdomain is another domain.
    assert (await patch(http, account, {"default_sender": "a@news.acme.test"})).status_code == 422

    too_long = await patch(http, account, {"default_sender": "N" * 310 + " <a@acme.test>"})
    assert too_long.status_code == 422
    assert too_long.json()["detail"] == "default_sender: at most 320 characters"

    vi = await patch(
        http, account, {"default_sender": "hello@elsewhere.test"}, **{"Content-Language": "vi"}
    )
    assert vi.status_code == 422
    assert vi.json()["detail"].startswith("default_sender: elsewhere.test không phải tên miền")
    assert (await current(http, account))["default_sender"] is None

    # A domain of the account that is still pending is accepted: the records may be published
    # later, and until then a send from it is refused like any From on an unverified domain.
    pending = await http.post("/v1/domains", json={"domain": "later.test"}, headers=key(account))
    assert pending.status_code == 200 and pending.json()["status"] == "pending"
    accepted = await patch(http, account, {"default_sender": "Later@LATER.test"})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["default_sender"] == "Later@LATER.test"


async def test_the_time_zone_must_be_an_iana_name(
    http: httpx.AsyncClient, account: dict[str, str]
) -> None:
    for bad in ("Mars/Olympus", "", "localtime", "../../etc/passwd", "/etc/localtime", "+07:00"):
        response = await patch(http, account, {"timezone": bad})
        assert response.status_code == 422, bad
        assert response.json()["detail"] == (
            f"timezone: '{bad}' is not an IANA time zone name "
            "(e.g. UTC, Europe/Paris, Asia/Ho_Chi_Minh)"
        )
    long_name = await patch(http, account, {"timezone": "Europe/" + "x" * 100})
    assert long_name.status_code == 422 and long_name.json()["detail"].startswith("timezone: ")
    vi = await patch(http, account, {"timezone": "Mars/Olympus"}, **{"Content-Language": "vi"})
    assert vi.json()["detail"].startswith("timezone: 'Mars/Olympus' không phải tên múi giờ IANA")
    wrong_type = await patch(http, account, {"timezone": 7})
    assert wrong_type.status_code == 422 and wrong_type.json()["detail"].startswith("timezone")
    # Nothing else about the account can be changed here.
    renamed = await patch(http, account, {"name": "evil"})
    assert renamed.status_code == 422 and renamed.json()["detail"].startswith("name:")
    after = await current(http, account)
    assert (after["name"], after["timezone"]) == ("acme", "UTC")
    # One bad field refuses the whole change.
    mixed = await patch(
        http, account, {"default_sender": "hello@acme.test", "timezone": "Mars/Olympus"}
    )
    assert mixed.status_code == 422
    assert (await current(http, account))["default_sender"] is None


# ── the settings at work ─────────────────────────────────────────────────────────────────


@pytest.fixture
def sink(dns: DnsServer) -> Iterator[SmtpSink]:
    dns.add("example.com", "MX", "mx.example.com")
    dns.add("mx.example.com", "A", "127.0.0.1")
    with SmtpSink(starttls=False) as server:
        yield server


async def test_a_mailpass_send_without_from_goes_out_from_the_default_sender(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, sink: SmtpSink
) -> None:
    changed = await patch(http, account, {"default_sender": "Acme Support <support@acme.test>"})
    assert changed.status_code == 200, changed.text
    sent = await http.post(
        "/api/v1/mail/send",
        headers={"Authorization": f"Bearer {account['sending_access']}"},
        json={"to": "user@example.com", "subject": "Hello", "text": "Hello from the default"},
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["data"]["from"] == "support@acme.test"

    await deliver_due(services, sink)
    (received,) = sink.messages
    assert received.rcpt_tos == ("user@example.com",)
    message = email.message_from_bytes(received.data, policy=default_policy)
    assert message["From"] == "Acme Support <support@acme.test>"
    assert message["Subject"] == "Hello"
    status = await http.get(f"/v1/emails/{sent.json()['data']['id']}", headers=key(account))
    assert status.json()["status"] == "Delivered"


# ── the command line ─────────────────────────────────────────────────────────────────────


async def posthorn(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTHORN_")},
        "POSTHORN_DATA_DIR": str(settings.data_dir),
        "POSTHORN_DATABASE_URL": settings.database_url,
        "POSTHORN_SECRET_KEY": settings.secret_key,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "posthorn",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_changes_the_same_settings_with_the_same_checks(
    http: httpx.AsyncClient, account: dict[str, str], settings: Settings
) -> None:
    account_id = account["account_id"]
    code, out, err = await posthorn(
        settings,
        "admin",
        "update-account",
        account_id,
        "--default-sender",
        "News <news@acme.test>",
        "--timezone",
        "America/New_York",
        "--json",
    )
    assert code == 0, err
    (line,) = out.strip().splitlines()  # --json: one object, nothing else on stdout
    printed = json.loads(line)
    assert printed["id"] == account_id and printed["name"] == "acme"
    assert printed["default_sender"] == "News <news@acme.test>"
    assert printed["timezone"] == "America/New_York"
    seen = await current(http, account)
    assert (seen["default_sender"], seen["timezone"]) == (
        "News <news@acme.test>",
        "America/New_York",
    )

    code, out, err = await posthorn(
        settings, "admin", "update-account", account_id, "--timezone", "Mars/Olympus"
    )
    assert code == 2 and out == ""
    assert "timezone: 'Mars/Olympus' is not an IANA time zone name" in err
    code, _, err = await posthorn(
        settings, "admin", "update-account", account_id, "--default-sender", "a@elsewhere.test"
    )
    assert code == 2 and "elsewhere.test is not a domain of this account" in err
    code, _, err = await posthorn(settings, "admin", "update-account", "no-such-account")
    assert code == 2 and "account not found" in err

    # "" clears the default sender; the time zone stays.
    code, out, err = await posthorn(
        settings, "admin", "update-account", account_id, "--default-sender", ""
    )
    assert code == 0, err
    assert "default sender (none), time zone America/New_York" in out
    seen = await current(http, account)
    assert (seen["default_sender"], seen["timezone"]) == (None, "America/New_York")
