"""Open pixel, click redirect and one-click unsubscribe over real HTTP, on both backends."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select

from posthorn.domain.tracking_tokens import Kind, TokenData, derive_key, make_token
from posthorn.services.container import Services
from posthorn.services.intake import SendRequest
from posthorn.services.tracking import tracking_for
from posthorn.settings import Settings
from posthorn.store.tables import events, suppressions, utcnow, webhook_messages, webhooks
from posthorn.web.tracking import PIXEL

RECIPIENT = "jane@example.test"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
SHOP = "https://shop.example.test/p/42?utm_source=mail&utm_medium=email"
HTML = (
    "<html><body><p>Hi Jane</p>"
    '<a href="https://shop.example.test/p/42?utm_source=mail&amp;utm_medium=email">Shop</a>'
    '<a href="https://blog.example.test/">Blog</a>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)


async def send(services: Services, account_id: str) -> str:
    accepted = await services.intake.submit(
        SendRequest(
            account_id=account_id,
            source="api",
            from_="Acme <news@acme.test>",
            to=[RECIPIENT],
            subject="Week 48",
            html=HTML,
        )
    )
    return accepted.id


def links(settings: Settings, account_id: str, email_id: str, **kw: Any) -> dict[str, Any]:
    """The recipient's links, taken from the message as personalise() would build it."""
    personal = tracking_for(
        settings,
        account_id=account_id,
        email_id=email_id,
        recipient=RECIPIENT,
        track_opens=True,
        track_clicks=True,
        unsubscribe=True,
        **kw,
    )
    assert personal.html_rewrite is not None and personal.unsubscribe is not None
    html = personal.html_rewrite(HTML)
    clicks = [part.split('"', 1)[0] for part in html.split('href="')[1:]]
    pixel = html.split('<img src="', 1)[1].split('"', 1)[0]
    base = settings.public_url
    return {
        "open": pixel.removeprefix(base),
        "clicks": [c.removeprefix(base) for c in clicks if c.startswith(f"{base}/t/c/")],
        "unsubscribe": personal.unsubscribe[0].removeprefix(base),
        "mailto": personal.unsubscribe[1],
    }


async def rows(services: Services, email_id: str, *types: str) -> list[Any]:
    async with services.db.read() as conn:
        query = select(events).where(events.c.email_id == email_id).order_by(events.c.id)
        if types:
            query = query.where(events.c.type.in_(types))
        return list((await conn.execute(query)).all())


async def suppression_rows(services: Services, account_id: str) -> list[Any]:
    async with services.db.read() as conn:
        return list(
            (
                await conn.execute(
                    select(suppressions).where(suppressions.c.account_id == account_id)
                )
            ).all()
        )


def tampered(path: str) -> str:
    head, token = path.rsplit("/", 1)
    middle = len(token) // 2
    swapped = "A" if token[middle] != "A" else "B"
    return f"{head}/{token[:middle]}{swapped}{token[middle + 1 :]}"


async def test_open_pixel_records_an_opened_event(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)

    response = await http.get(paths["open"], headers={"User-Agent": FIREFOX})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"] == "no-store"
    assert response.content == PIXEL and PIXEL.startswith(b"GIF89a\x01\x00\x01\x00")

    [opened] = await rows(services, email_id, "opened")
    assert opened.recipient == RECIPIENT
    assert opened.account_id == account["account_id"]
    assert (opened.sender, opened.source) == ("news@acme.test", "api")
    assert opened.delivery_id is not None
    assert opened.data == {"ip": "127.0.0.1", "user_agent": FIREFOX, "machine": False}

    detail = await http.get(f"/v1/emails/{email_id}", headers={"X-API-KEY": account["read_only"]})
    assert detail.status_code == 200, detail.text
    shown = [e for e in detail.json()["events"] if e["type"] == "opened"]
    assert shown == [
        {
            "type": "opened",
            "recipient": RECIPIENT,
            "created_at": shown[0]["created_at"],
            "data": {"ip": "127.0.0.1", "user_agent": FIREFOX, "machine": False},
        }
    ]

    # Gmail's image proxy fetches on the reader's behalf: recorded, flagged as a machine.
    await http.get(paths["open"], headers={"User-Agent": GMAIL_PROXY})
    second = (await rows(services, email_id, "opened"))[-1]
    assert second.data["machine"] is True


async def test_bad_open_tokens_still_get_the_pixel_but_no_event(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)
    foreign = links(
        settings.model_copy(update={"secret_key": "another-server"}),
        account["account_id"],
        email_id,
    )
    unknown = links(settings, account["account_id"], str(uuid.uuid4()))
    for path in (
        tampered(paths["open"]),
        foreign["open"],
        unknown["open"],
        "/t/o/" + paths["clicks"][0].rsplit("/", 1)[1],  # a click token is not an open token
        "/t/o/not-a-token",
    ):
        response = await http.get(path)
        assert response.status_code == 200, path
        assert response.content == PIXEL
    assert await rows(services, email_id, "opened", "clicked") == []


async def test_click_redirects_to_the_signed_url_and_records_it(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)
    assert len(paths["clicks"]) == 2  # shop and blog; the unsubscribe link is not tracked

    response = await http.get(paths["clicks"][0], headers={"User-Agent": FIREFOX})
    assert response.status_code == 302
    assert response.headers["location"] == SHOP
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers

    [clicked] = await rows(services, email_id, "clicked")
    assert clicked.recipient == RECIPIENT
    assert (clicked.sender, clicked.source) == ("news@acme.test", "api")
    assert clicked.data == {
        "url": SHOP,
        "ip": "127.0.0.1",
        "user_agent": FIREFOX,
        "machine": False,
    }


async def test_a_scanner_following_every_link_at_once_is_flagged(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)
    for path in paths["clicks"]:
        assert (await http.get(path, headers={"User-Agent": FIREFOX})).status_code == 302
    first, second = await rows(services, email_id, "clicked")
    assert first.data["machine"] is False
    assert second.data["machine"] is True  # both links within the same second

    await http.get(paths["clicks"][0], headers={"User-Agent": "python-requests/2.31"})
    assert (await rows(services, email_id, "clicked"))[-1].data["machine"] is True


async def test_bad_click_tokens_are_404_without_location_or_event(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)
    key = derive_key(settings.secret_key)
    other_account = make_token(
        key,
        TokenData(Kind.CLICK, str(uuid.uuid4()), email_id, RECIPIENT, url="https://evil.test/"),
    )
    foreign = links(
        settings.model_copy(update={"secret_key": "another-server"}),
        account["account_id"],
        email_id,
    )
    not_web = make_token(
        key,
        TokenData(Kind.CLICK, account["account_id"], email_id, RECIPIENT, url="javascript:x()"),
    )
    for path in (
        tampered(paths["clicks"][0]),
        foreign["clicks"][0],
        links(settings, account["account_id"], str(uuid.uuid4()))["clicks"][0],
        f"/t/c/{other_account}",
        f"/t/c/{not_web}",
        "/t/c/" + paths["open"].rsplit("/", 1)[1],
        "/t/c/x",
        "/t/c/" + "A" * 9000,
    ):
        response = await http.get(path)
        assert response.status_code == 404, path
        assert "location" not in response.headers
        assert "text/html" in response.headers["content-type"]
    assert await rows(services, email_id, "clicked") == []


async def test_international_urls_become_valid_locations(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    token = make_token(
        derive_key(settings.secret_key),
        TokenData(
            Kind.CLICK,
            account["account_id"],
            email_id,
            RECIPIENT,
            url="https://bücher.example/straße?q=ä ö&x=%20#top",
        ),
    )
    response = await http.get(f"/t/c/{token}")
    assert response.status_code == 302
    assert response.headers["location"] == (
        "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A4%20%C3%B6&x=%20#top"
    )


async def test_unsubscribe_page_shows_a_form_and_changes_nothing(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)
    before = await rows(services, email_id)

    page = await http.get(paths["unsubscribe"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "set-cookie" not in page.headers
    assert '<form method="post">' in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert RECIPIENT in page.text
    assert await rows(services, email_id) == before
    assert await suppression_rows(services, account["account_id"]) == []

    # Whatever a token carries is escaped on the page.
    hostile = make_token(
        derive_key(settings.secret_key),
        TokenData(Kind.UNSUBSCRIBE, account["account_id"], email_id, '"<script>x</script>"@a.test'),
    )
    escaped = await http.get(f"/u/{hostile}")
    assert escaped.status_code == 200
    assert "<script>" not in escaped.text and "&lt;script&gt;" in escaped.text

    for bad in (tampered(paths["unsubscribe"]), "/u/nope", "/u/" + paths["open"][5:]):
        missing = await http.get(bad)
        assert missing.status_code == 404 and "location" not in missing.headers


async def test_one_click_unsubscribe_suppresses_once(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)
    token = paths["unsubscribe"].rsplit("/", 1)[1]
    assert paths["mailto"] == f"mailto:unsubscribe+{token}@posthorn.test"

    # RFC 8058 §3.2: what a mail client sends, form-encoded.
    for _ in range(3):
        response = await http.post(
            paths["unsubscribe"],
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": FIREFOX},
        )
        assert response.status_code == 200, response.text
        assert "set-cookie" not in response.headers
        assert "location" not in response.headers

    [row] = await suppression_rows(services, account["account_id"])
    assert (row.address, row.reason, row.scope, row.email_id) == (
        RECIPIENT,
        "unsubscribe",
        "",
        email_id,
    )
    [unsubscribed] = await rows(services, email_id, "unsubscribed")
    assert unsubscribed.recipient == RECIPIENT
    assert (unsubscribed.sender, unsubscribed.source) == ("news@acme.test", "api")
    assert unsubscribed.data == {"ip": "127.0.0.1", "user_agent": FIREFOX, "list_id": None}
    [created] = await rows(services, email_id, "suppression.created")
    assert created.recipient == RECIPIENT
    assert created.data["reason"] == "unsubscribe"

    listed = await http.get("/v1/suppressions", headers={"X-API-KEY": account["read_only"]})
    assert listed.status_code == 200, listed.text
    assert RECIPIENT in listed.text and "unsubscribe" in listed.text


async def test_multipart_one_click_and_list_scope(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id, list_id="weekly-news")
    response = await http.post(
        paths["unsubscribe"], files={"List-Unsubscribe": (None, "One-Click")}
    )
    assert response.status_code == 200, response.text
    [row] = await suppression_rows(services, account["account_id"])
    assert (row.reason, row.scope) == ("unsubscribe", "weekly-news")
    [unsubscribed] = await rows(services, email_id, "unsubscribed")
    assert unsubscribed.data["list_id"] == "weekly-news"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/x-www-form-urlencoded"),
        (b"List-Unsubscribe=Maybe", "application/x-www-form-urlencoded"),
        (b'{"List-Unsubscribe": "One-Click"}', "application/json"),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
    ],
)
async def test_unsubscribe_needs_the_one_click_body(
    http: httpx.AsyncClient,
    account: dict[str, str],
    services: Services,
    settings: Settings,
    body: bytes,
    content_type: str,
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)
    response = await http.post(
        paths["unsubscribe"], content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400
    assert await suppression_rows(services, account["account_id"]) == []
    assert await rows(services, email_id, "unsubscribed", "suppression.created") == []


async def test_bad_unsubscribe_tokens_change_nothing(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)
    foreign = links(
        settings.model_copy(update={"secret_key": "another-server"}),
        account["account_id"],
        email_id,
    )
    for path in (tampered(paths["unsubscribe"]), foreign["unsubscribe"], "/u/" + paths["open"][5:]):
        response = await http.post(path, data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 404, path
        assert "location" not in response.headers
    assert await suppression_rows(services, account["account_id"]) == []
    assert await rows(services, email_id, "unsubscribed", "suppression.created") == []


async def test_tracking_events_reach_the_webhook_outbox(
    http: httpx.AsyncClient, account: dict[str, str], services: Services, settings: Settings
) -> None:
    now = utcnow()
    async with services.db.write() as conn:
        await conn.execute(
            insert(webhooks).values(
                id="wh_" + uuid.uuid4().hex,
                account_id=account["account_id"],
                url="https://hooks.example.test/",
                events=["email.opened", "email.clicked", "email.unsubscribed"],
                enabled=1,
                secret="sealed",
                created_at=now,
                updated_at=now,
            )
        )
    email_id = await send(services, account["account_id"])
    paths = links(settings, account["account_id"], email_id)
    await http.get(paths["open"], headers={"User-Agent": FIREFOX})
    await http.get(paths["clicks"][0], headers={"User-Agent": FIREFOX})
    await http.post(paths["unsubscribe"], data={"List-Unsubscribe": "One-Click"})
    async with services.db.read() as conn:
        outbox = (
            await conn.execute(select(webhook_messages).order_by(webhook_messages.c.created_at))
        ).all()
    by_type = {m.event_type: m.payload for m in outbox}
    assert set(by_type) == {"opened", "clicked", "unsubscribed"}
    assert by_type["clicked"]["type"] == "email.clicked"
    assert by_type["clicked"]["data"]["email_id"] == email_id
    assert by_type["clicked"]["data"]["recipient"] == RECIPIENT
    assert by_type["clicked"]["data"]["url"] == SHOP
