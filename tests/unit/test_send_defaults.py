"""The rule that settles tracking and unsubscribe switches from the request and the domain."""

from __future__ import annotations

import itertools

import pytest

from posthorn.domain.send_defaults import DomainSendDefaults, SendSwitches, resolve

SAID = (None, False, True)


def test_nothing_said_and_no_domain_settings_is_all_off() -> None:
    switches = resolve(DomainSendDefaults(), track_opens=None, track_clicks=None, unsubscribe=None)
    assert switches == SendSwitches(track_opens=False, track_clicks=False, unsubscribe=False)


def test_unsaid_tracking_takes_the_domain_default() -> None:
    domain = DomainSendDefaults(track_opens=True, track_clicks=False)
    switches = resolve(domain, track_opens=None, track_clicks=None, unsubscribe=None)
    assert (switches.track_opens, switches.track_clicks) == (True, False)
    domain = DomainSendDefaults(track_opens=False, track_clicks=True)
    switches = resolve(domain, track_opens=None, track_clicks=None, unsubscribe=None)
    assert (switches.track_opens, switches.track_clicks) == (False, True)


@pytest.mark.parametrize(("default", "said"), list(itertools.product(SAID[1:], SAID[1:])))
def test_an_explicit_tracking_value_wins_over_the_domain(default: bool, said: bool) -> None:
    domain = DomainSendDefaults(track_opens=default, track_clicks=default)
    switches = resolve(domain, track_opens=said, track_clicks=said, unsubscribe=None)
    assert (switches.track_opens, switches.track_clicks) == (said, said)


@pytest.mark.parametrize("said", SAID)
def test_a_forced_unsubscribe_applies_whatever_the_request_said(said: bool | None) -> None:
    domain = DomainSendDefaults(force_unsubscribe=True)
    assert resolve(domain, track_opens=None, track_clicks=None, unsubscribe=said).unsubscribe


@pytest.mark.parametrize("said", SAID)
def test_without_force_the_unsubscribe_is_what_was_said(said: bool | None) -> None:
    switches = resolve(DomainSendDefaults(), track_opens=None, track_clicks=None, unsubscribe=said)
    assert switches.unsubscribe is bool(said)


def test_defaults_are_read_from_a_domain_row() -> None:
    row = {"name": "acme.test", "track_opens": 1, "track_clicks": 0, "force_unsubscribe": 1}
    assert DomainSendDefaults.of(row) == DomainSendDefaults(
        track_opens=True, track_clicks=False, force_unsubscribe=True
    )
    assert DomainSendDefaults.of(None) == DomainSendDefaults()
    assert DomainSendDefaults.of({"name": "old.test"}) == DomainSendDefaults()
