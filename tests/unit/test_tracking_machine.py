"""Machine opens and clicks: proxy and scanner user agents, prefetch timing, click bursts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from posthorn.domain.machine_activity import is_machine_click, is_machine_open

T0 = datetime(2026, 11, 23, 18, 0, 0, tzinfo=UTC)
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)"
LINKS = ["https://a.test/", "https://b.test/", "https://c.test/"]


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0",  # Apple Mail Privacy Protection's proxy
        " Mozilla/5.0 ",
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        "Mozilla/5.0 (compatible; bingbot/2.0) BingPreview/1.0b",
        "",
        None,
    ],
)
def test_proxy_opens_are_machine_opens(agent: str | None) -> None:
    assert is_machine_open(user_agent=agent, at=T0, delivered_at=None)


@pytest.mark.parametrize("agent", [IPHONE_MAIL, FIREFOX, OUTLOOK, "Thunderbird/128.0"])
def test_mail_clients_are_people(agent: str) -> None:
    later = T0 + timedelta(minutes=5)
    assert not is_machine_open(user_agent=agent, at=later, delivered_at=T0)
    assert not is_machine_open(user_agent=agent, at=later, delivered_at=None)


def test_an_open_right_after_delivery_is_a_prefetch() -> None:
    assert is_machine_open(user_agent=FIREFOX, at=T0 + timedelta(seconds=3), delivered_at=T0)
    assert is_machine_open(user_agent=FIREFOX, at=T0 + timedelta(seconds=10), delivered_at=T0)
    assert not is_machine_open(user_agent=FIREFOX, at=T0 + timedelta(seconds=11), delivered_at=T0)
    # An open before the recorded delivery (clock skew between hosts) proves nothing.
    assert not is_machine_open(user_agent=FIREFOX, at=T0 - timedelta(seconds=1), delivered_at=T0)
    assert not is_machine_open(
        user_agent=FIREFOX,
        at=T0 + timedelta(seconds=3),
        delivered_at=T0,
        prefetch_window=timedelta(seconds=2),
    )


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.0.0 Safari/537.36",
        "Barracuda Sentinel (EE)",
        "Mimecast URL Protect",
        "Proofpoint URL Defense",
        "Mozilla/4.0 (compatible; ms-office; MSOffice 16) Microsoft Office Existence Discovery",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "TelegramBot (like TwitterBot)",
        "SkypeUriPreview Preview/0.5",
        "python-requests/2.31.0",
        "curl/8.5.0",
        "Go-http-client/1.1",
        "Mozilla/5.0",
        "",
        None,
    ],
)
def test_scanner_clicks_are_machine_clicks(agent: str | None) -> None:
    assert is_machine_click(user_agent=agent, url=LINKS[0], at=T0, links=LINKS, recent_clicks=[])


@pytest.mark.parametrize("agent", [IPHONE_MAIL, FIREFOX, OUTLOOK])
def test_a_person_clicking_one_link_is_a_person(agent: str) -> None:
    assert not is_machine_click(
        user_agent=agent, url=LINKS[0], at=T0, links=LINKS, recent_clicks=[]
    )


def test_clicking_every_link_within_a_second_is_a_scanner() -> None:
    recent = [(LINKS[0], T0), (LINKS[1], T0 + timedelta(milliseconds=300))]
    at = T0 + timedelta(milliseconds=900)
    assert is_machine_click(
        user_agent=FIREFOX, url=LINKS[2], at=at, links=LINKS, recent_clicks=recent
    )
    # The same three clicks spread over seconds are a person reading.
    slow = [(LINKS[0], T0), (LINKS[1], T0 + timedelta(seconds=4))]
    later = T0 + timedelta(seconds=9)
    assert not is_machine_click(
        user_agent=FIREFOX, url=LINKS[2], at=later, links=LINKS, recent_clicks=slow
    )
    # Two of three links, however fast, are not every link.
    assert not is_machine_click(
        user_agent=FIREFOX, url=LINKS[1], at=at, links=LINKS, recent_clicks=[(LINKS[0], T0)]
    )
    # Repeated clicks on one link are not every link.
    again = [(LINKS[0], T0), (LINKS[0], T0)]
    assert not is_machine_click(
        user_agent=FIREFOX, url=LINKS[0], at=at, links=LINKS, recent_clicks=again
    )


def test_an_email_with_one_link_cannot_be_clicked_on_every_link_by_accident() -> None:
    one = ["https://only.test/"]
    assert not is_machine_click(
        user_agent=FIREFOX, url=one[0], at=T0, links=one + one, recent_clicks=[]
    )
    assert not is_machine_click(user_agent=FIREFOX, url=one[0], at=T0, links=[], recent_clicks=[])
