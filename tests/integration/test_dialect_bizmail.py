"""The BizMail dialect over real HTTP: users, JWT login, refresh rotation, forged tokens, and
``mail/store`` forms delivered by a real worker into a real SMTP sink."""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update

from posthorn.errors import Conflict, InvalidRequest, NotFound
from posthorn.services.container import Services
from posthorn.services.tokens import signing_key
from posthorn.settings import Settings
from posthorn.store.tables import emails, refresh_tokens, users
from posthorn.store.users import UserRow
from tests.conftest import LiveServer
from tests.support.delivery import deliver_due
from tests.support.dns import DnsServer
from tests.support.sink import SmtpSink

PASSWORD = "correct horse battery"
TOKEN = "/api/1.0/auth/token"
REFRESH = "/api/1.0/auth/refresh"
STORE = "/api/1.0/mail/store"
MESSAGE: dict[str, Any] = {
    "from": "hello@acme.test",
    "to": "user@example.test",
    "subject": "Hi",
    "text": "hello",
}


@pytest.fixture
def sink(dns: DnsServer) -> Iterator[SmtpSink]:
    dns.add("example.test", "MX", "mx.example.test")
    dns.add("mx.example.test", "A", "127.0.0.1")
    with SmtpSink(starttls=False) as server:
        yield server


@pytest.fixture
async def user(services: Services, account: dict[str, str]) -> UserRow:
    return await services.users.create_user(
        account["account_id"], username="Portal.User", password=PASSWORD
    )


async def login(http: httpx.AsyncClient, username: str = "portal.user") -> dict[str, Any]:
    response = await http.post(TOKEN, json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def store(http: httpx.AsyncClient, token: str, **fields: Any) -> httpx.Response:
    return await http.post(STORE, data={**MESSAGE, **fields}, headers=bearer(token))


# ── users ────────────────────────────────────────────────────────────────────────────────


async def test_users_are_unique_in_any_case_and_checked_with_argon2id(
    services: Services, account: dict[str, str], user: UserRow
) -> None:
    assert user.username == "portal.user" and user.account_id == account["account_id"]
    async with services.db.read() as conn:
        stored = (await conn.execute(select(users.c.password_hash))).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    with pytest.raises(Conflict):
        await services.users.create_user(
            account["account_id"], username="PORTAL.USER", password=PASSWORD
        )
    with pytest.raises(InvalidRequest) as short:
        await services.users.create_user(account["account_id"], username="b", password="short")
    assert short.value.field == "password"
    for bad in ("", "apikey", "APIKEY", "has space", "-dash", "x" * 201, "nguyễn"):
        with pytest.raises(InvalidRequest) as caught:
            await services.users.create_user(account["account_id"], username=bad, password=PASSWORD)
        assert caught.value.field == "username", bad
    with pytest.raises(NotFound):
        await services.users.create_user("no-such-account", username="c", password=PASSWORD)

    identity = await services.users.authenticate(" Portal.USER ", PASSWORD)
    assert identity is not None
    assert (identity.user_id, identity.account_id) == (user.id, account["account_id"])
    assert await services.users.authenticate("portal.user", PASSWORD + "!") is None
    assert await services.users.authenticate("nobody", PASSWORD) is None
    assert await services.users.authenticate("apikey", PASSWORD) is None


# ── tokens ───────────────────────────────────────────────────────────────────────────────


async def test_login_issues_a_pinned_jwt_and_an_opaque_refresh_token(
    http: httpx.AsyncClient, services: Services, account: dict[str, str], user: UserRow
) -> None:
    response = await http.post(TOKEN, json={"username": "PORTAL.user", "password": PASSWORD})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["refresh_token"].startswith("phr_")
    assert jwt.get_unverified_header(body["access_token"]) == {"alg": "HS256", "typ": "at+jwt"}
    claims = jwt.decode(
        body["access_token"],
        signing_key(services.settings.secret_key),
        algorithms=["HS256"],
        audience="posthorn:bizmail",
    )
    assert claims["iss"] == services.settings.public_url.rstrip("/")
    assert claims["sub"] == user.id and claims["account_id"] == account["account_id"]
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"] and claims["sid"]
    async with services.db.read() as conn:
        stored = (await conn.execute(select(refresh_tokens.c.jti))).scalars().all()
    assert stored == [hashlib.sha256(body["refresh_token"].encode()).hexdigest()]


async def test_bad_logins(http: httpx.AsyncClient, user: UserRow) -> None:
    wrong = await http.post(TOKEN, json={"username": "portal.user", "password": "nope-nope"})
    unknown = await http.post(TOKEN, json={"username": "nobody", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Invalid username or password"}
    vi = await http.post(
        TOKEN, json={"username": "nobody", "password": "x"}, headers={"Content-Language": "vi"}
    )
    assert vi.status_code == 401 and vi.json()["detail"].startswith("Tên đăng nhập")
    missing = await http.post(TOKEN, json={"username": "portal.user"})
    assert missing.status_code == 422 and "password" in missing.json()["detail"]
    broken = await http.post(
        TOKEN, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400


async def test_refresh_rotates_and_a_reused_token_revokes_the_family(
    http: httpx.AsyncClient, services: Services, user: UserRow
) -> None:
    first = await login(http)
    second_response = await http.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert second_response.status_code == 200, second_response.text
    assert second_response.headers["cache-control"] == "no-store"
    second = second_response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    third = (await http.post(REFRESH, json={"refresh_token": second["refresh_token"]})).json()
    assert (await store(http, third["access_token"])).status_code == 200
    other_session = await login(http)

    # The first token again: someone holds a copy. Every token of its family dies with it.
    reused = await http.post(REFRESH, json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401 and "refresh token" in reused.json()["detail"]
    assert (
        await http.post(REFRESH, json={"refresh_token": third["refresh_token"]})
    ).status_code == 401
    for pair in (first, second, third):
        refused = await store(http, pair["access_token"])
        assert refused.status_code == 401, refused.text
    async with services.db.read() as conn:
        rows = (
            await conn.execute(select(refresh_tokens.c.family, refresh_tokens.c.revoked_at))
        ).all()
    family = jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    assert all(r.revoked_at is not None for r in rows if r.family == family)
    assert len([r for r in rows if r.family == family]) == 3

    # Another login's family is untouched.
    assert (await store(http, other_session["access_token"])).status_code == 200
    renewed = await http.post(REFRESH, json={"refresh_token": other_session["refresh_token"]})
    assert renewed.status_code == 200


async def test_refresh_refusals(http: httpx.AsyncClient, services: Services, user: UserRow) -> None:
    pair = await login(http)
    async with services.db.write() as conn:
        await conn.execute(
            update(refresh_tokens).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    expired = await http.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
    assert expired.status_code == 401
    for token in ("phr_unknown", "garbage", pair["access_token"], ""):
        response = await http.post(REFRESH, json={"refresh_token": token})
        assert response.status_code == 401, token
    assert (await http.post(REFRESH, json={})).status_code == 422


async def test_deleting_a_user_ends_its_tokens(
    http: httpx.AsyncClient, services: Services, user: UserRow
) -> None:
    pair = await login(http)
    assert (await store(http, pair["access_token"])).status_code == 200
    async with services.db.write() as conn:
        await conn.execute(users.delete().where(users.c.id == user.id))
    assert (await store(http, pair["access_token"])).status_code == 401
    assert (
        await http.post(REFRESH, json={"refresh_token": pair["refresh_token"]})
    ).status_code == 401


# ── forged tokens ────────────────────────────────────────────────────────────────────────


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(claims: dict[str, Any], key: bytes, header: dict[str, Any] | None = None) -> str:
    head = header or {"alg": "HS256", "typ": "at+jwt"}
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def attacks(claims: dict[str, Any], settings: Settings) -> dict[str, str]:
    key = signing_key(settings.secret_key)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    past = int((datetime.now(UTC) - timedelta(hours=2)).timestamp())
    none_head = b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    return {
        "alg none": f"{none_head}.{b64(json.dumps(claims).encode())}.",
        "HS256 signed with another key": forge(claims, b"another-installation-key-32-bytes!"),
        "HS256 signed with the raw secret": forge(claims, settings.secret_key.encode()),
        "RS256 (key confusion: an asymmetric alg)": jwt.encode(
            claims, private, algorithm="RS256", headers={"typ": "at+jwt"}
        ),
        "HS256 keyed with an RSA public key": forge(claims, public_pem),
        "expired": forge({**claims, "iat": past - 900, "exp": past}, key),
        "wrong audience": forge({**claims, "aud": "posthorn:dashboard"}, key),
        "wrong issuer": forge({**claims, "iss": "https://elsewhere.test"}, key),
        "unknown session": forge({**claims, "sid": "0" * 32}, key),
    }


async def test_forged_and_expired_tokens_are_401(
    http: httpx.AsyncClient, services: Services, user: UserRow
) -> None:
    real = await login(http)
    claims = jwt.decode(real["access_token"], options={"verify_signature": False})
    # The forging itself is sound: with the right key and claims the server accepts it.
    control = forge(claims, signing_key(services.settings.secret_key))
    assert (await store(http, control)).status_code == 200
    for name, token in attacks(claims, services.settings).items():
        response = await store(http, token)
        assert response.status_code == 401, (name, response.text)
        assert response.json() == {"detail": "Invalid, expired or revoked access token"}, name
        assert 'error="invalid_token"' in response.headers["www-authenticate"], name


async def test_missing_or_malformed_bearer_is_401(http: httpx.AsyncClient, user: UserRow) -> None:
    missing = await http.post(STORE, data=MESSAGE)
    assert missing.status_code == 401
    assert missing.json()["detail"].startswith("Missing access token")
    assert missing.headers["www-authenticate"] == 'Bearer realm="posthorn"'
    basic = await http.post(STORE, data=MESSAGE, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401
    garbage = await http.post(STORE, data=MESSAGE, headers=bearer("a.b.c"))
    assert garbage.status_code == 401 and "invalid_token" in garbage.headers["www-authenticate"]
    vi = await http.post(STORE, data=MESSAGE, headers={"Content-Language": "vi"})
    assert vi.status_code == 401 and vi.json()["detail"].startswith("Thiếu access token")


# ── mail/store ───────────────────────────────────────────────────────────────────────────


def parts(message: EmailMessage) -> dict[str, tuple[str, bytes]]:
    found: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found[str(part.get_filename())] = (part.get_content_type(), payload)
    return found


async def test_store_with_files_and_repeated_recipients_is_delivered_intact(
    http: httpx.AsyncClient,
    services: Services,
    account: dict[str, str],
    user: UserRow,
    sink: SmtpSink,
) -> None:
    token = (await login(http))["access_token"]
    pdf = bytes(range(256)) * 64  # every byte value, 16 KB
    csv = "tên,số tiền\nAn,1\n".encode()
    response = await http.post(
        STORE,
        data={
            "from": "billing@acme.test",
            "from_name": "Acme Billing",
            "to": ["first@example.test", 'second@example.test, "Third, T" <third@example.test>'],
            "cc": "copy@example.test",
            "reply_to": "help@acme.test",
            "subject": "Hoá đơn 42",
            "html": "<p>Xin chào</p>",
            "text": "Xin chào",
            "tags": ["invoice,monthly", "vip"],
            "track_opens": "1",
            "track_clicks": "false",
        },
        files=[
            ("attachments", ("invoice.pdf", pdf, "application/pdf")),
            ("attachments", ("báo cáo.csv", csv, "text/csv")),
        ],
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id", "status"} and response.json()["status"] == "queued"
    email_id = response.json()["id"]

    await deliver_due(services, sink)
    received = {rcpt for message in sink.messages for rcpt in message.rcpt_tos}
    assert received == {
        "first@example.test",
        "second@example.test",
        "third@example.test",
        "copy@example.test",
    }
    message = email.message_from_bytes(sink.messages[0].data, policy=default_policy)
    assert isinstance(message, EmailMessage)
    assert message["From"] == "Acme Billing <billing@acme.test>"
    assert message["Reply-To"] == "help@acme.test"
    assert message["Subject"] == "Hoá đơn 42"
    assert "Third, T" in str(message["To"]) and message["Cc"] == "copy@example.test"
    assert "Bcc" not in message
    assert parts(message) == {
        "invoice.pdf": ("application/pdf", pdf),
        "báo cáo.csv": ("text/csv", csv),
    }

    detail = (
        await http.get(f"/v1/emails/{email_id}", headers={"X-API-KEY": account["read_only"]})
    ).json()
    assert detail["source"] == "bizmail" and detail["status"] == "Delivered"
    assert [t["name"] for t in detail["tags"]] == ["invoice", "monthly", "vip"]
    assert [a["size"] for a in detail["attachments"]] == [len(pdf), len(csv)]
    async with services.db.read() as conn:
        flags = (
            await conn.execute(
                select(emails.c.track_opens, emails.c.track_clicks).where(emails.c.id == email_id)
            )
        ).one()
    assert tuple(flags) == (1, 0)


async def test_php_style_names_and_files_for_text_fields(
    http: httpx.AsyncClient, user: UserRow, services: Services, sink: SmtpSink
) -> None:
    token = (await login(http))["access_token"]
    response = await http.post(
        STORE,
        data={
            "from": "hello@acme.test",
            "to[]": ["a@example.test", "b@example.test"],
            "subject": "S",
        },
        files=[
            ("html", ("page.html", "<p>từ file</p>".encode(), "text/html")),
            ("attachments[]", ("a.txt", b"A", "text/plain")),
        ],
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    await deliver_due(services, sink)
    # Both recipients are at example.test: one transaction carries the message to both.
    assert [sorted(m.rcpt_tos) for m in sink.messages] == [["a@example.test", "b@example.test"]]
    message = email.message_from_bytes(sink.messages[0].data, policy=default_policy)
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("html",))
    assert body is not None and "từ file" in body.get_content()
    assert parts(message) == {"a.txt": ("text/plain", b"A")}


async def test_validation_errors_name_the_field(
    http: httpx.AsyncClient, account: dict[str, str], user: UserRow
) -> None:
    token = (await login(http))["access_token"]

    async def detail(expected: int, **fields: Any) -> str:
        response = await store(http, token, **fields)
        assert response.status_code == expected, (fields, response.text)
        text: str = response.json()["detail"]
        return text

    assert "html" in await detail(422, text="", html="")
    assert "to[0]" in await detail(422, to="not-an-address")
    assert "'x@@example.test'" in await detail(422, to="ok@example.test, x@@example.test")
    assert "unverified.test" in await detail(403, **{"from": "me@unverified.test"})
    assert "from" in await detail(422, **{"from": ""})
    assert "to" in await detail(422, to="")
    assert "track_opens" in await detail(422, track_opens="maybe")
    no_subject = await http.post(
        STORE, data={k: v for k, v in MESSAGE.items() if k != "subject"}, headers=bearer(token)
    )
    assert no_subject.status_code == 422 and "subject" in no_subject.json()["detail"]

    as_text = await http.post(
        STORE, data={**MESSAGE, "attachments": "not a file"}, headers=bearer(token)
    )
    assert as_text.status_code == 422 and "attachments[0]" in as_text.json()["detail"]
    bad_type = await http.post(
        STORE,
        data=MESSAGE,
        files=[("attachments", ("a.bin", b"x", "no type"))],
        headers=bearer(token),
    )
    assert bad_type.status_code == 422 and "attachments[0]" in bad_type.json()["detail"]
    as_json = await http.post(STORE, json=MESSAGE, headers=bearer(token))
    assert as_json.status_code == 400 and "multipart/form-data" in as_json.json()["detail"]

    vi = await http.post(
        STORE, data={**MESSAGE, "text": ""}, headers={**bearer(token), "Content-Language": "vi"}
    )
    assert vi.status_code == 422 and vi.json()["detail"].startswith("Cần ít nhất một")
    assert vi.headers["content-language"] == "vi"


async def test_a_body_over_the_limit_is_413(
    settings: Settings, services: Services, account: dict[str, str], user: UserRow
) -> None:
    small = settings.model_copy(update={"max_message_bytes": 50_000})
    server = LiveServer(small, services)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            token = (await login(http))["access_token"]
            response = await http.post(
                STORE,
                data=MESSAGE,
                files=[("attachments", ("big.bin", b"\0" * 80_000, "application/octet-stream"))],
                headers=bearer(token),
            )
            assert response.status_code == 413
            assert "50000" in response.json()["detail"]
    finally:
        await server.stop()
