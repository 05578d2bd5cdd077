"""Standard Webhooks signatures, checked by the ``standardwebhooks`` reference package."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from posthorn.domain.webhook_signing import (
    format_secret,
    secret_key,
    sign,
    signature_header,
    signed_headers,
)

KEY = bytes(range(32))
SECRET = format_secret(KEY)
BODY = b'{"type":"email.delivered","data":{"email_id":"e1","recipient":"b\xc3\xa9@x.test"}}'


def test_secret_is_whsec_and_base64_of_the_key() -> None:
    assert SECRET.startswith("whsec_")
    assert base64.b64decode(SECRET.removeprefix("whsec_")) == KEY
    assert secret_key(SECRET) == KEY


@pytest.mark.parametrize("size", [0, 23, 65])
def test_keys_outside_the_specified_sizes_are_refused(size: int) -> None:
    with pytest.raises(ValueError):
        format_secret(b"k" * size)


@pytest.mark.parametrize("bad", ["", "abc", "whsec_", "whsec_***", "sk_" + "A" * 44])
def test_malformed_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        secret_key(bad)


def test_the_reference_implementation_verifies_our_signature() -> None:
    now = int(time.time())
    headers = signed_headers([SECRET], msg_id="msg_1", timestamp=now, body=BODY)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(now)
    assert Webhook(SECRET).verify(BODY, headers)["data"]["email_id"] == "e1"


def test_a_known_vector() -> None:
    # The reference package's Webhook.sign gives the same value for this key, id, time and body.
    body = b'{"test": 2432232314}'
    got = sign(SECRET, msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330, body=body)
    assert got == "v1,O4Gjv1HqPqsMrjmczoggs/sWA8gZD0VyHG+fLh4+ktI="


def test_any_change_breaks_the_signature() -> None:
    now = int(time.time())
    headers = signed_headers([SECRET], msg_id="msg_1", timestamp=now, body=BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.replace(b"e1", b"e2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, {**headers, "webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(format_secret(b"x" * 32)).verify(BODY, headers)


def test_two_secrets_give_two_signatures_each_verifiable() -> None:
    old, new = format_secret(b"o" * 24), format_secret(b"n" * 48)
    now = int(time.time())
    header = signature_header([new, old], msg_id="msg_9", timestamp=now, body=BODY)
    assert len(header.split(" ")) == 2 and all(p.startswith("v1,") for p in header.split(" "))
    headers = {"webhook-id": "msg_9", "webhook-timestamp": str(now), "webhook-signature": header}
    for secret in (old, new):
        Webhook(secret).verify(BODY, headers)
    with pytest.raises(ValueError):
        signature_header([], msg_id="m", timestamp=now, body=BODY)
