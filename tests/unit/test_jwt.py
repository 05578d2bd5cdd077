"""Access tokens: what the codec signs, and the forged tokens of RFC 8725 §2 it refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from posthorn.errors import AuthenticationFailed
from posthorn.services.tokens import AccessTokenCodec, signing_key

SECRET = "unit-test-secret-" + "0123456789" * 4
ISSUER = "https://mail.example.test"


def now() -> datetime:
    """The current instant, read when a test runs (not when the module is collected)."""
    return datetime.now(UTC)


def codec(secret: str = SECRET, **changes: Any) -> AccessTokenCodec:
    options: dict[str, Any] = {"issuer": ISSUER, "ttl_seconds": 900, **changes}
    return AccessTokenCodec(secret, **options)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    payload: dict[str, Any],
    *,
    key: bytes,
    header: dict[str, Any] | None = None,
    digest: Callable[[], Any] = hashlib.sha256,
) -> str:
    """A token signed by hand, so that any header at all can be written."""
    head = header if header is not None else {"alg": "HS256", "typ": "at+jwt"}
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    issued = int(now().timestamp())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "posthorn:bizmail",
        "sub": "user-1",
        "account_id": "account-1",
        "sid": "family-1",
        "iat": issued,
        "exp": issued + 900,
        "jti": "jti-1",
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def test_round_trip_carries_the_claims_and_an_explicit_type() -> None:
    issued = now()
    token = codec().encode(user_id="u1", account_id="a1", session="f1", now=issued)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "at+jwt"}
    decoded = codec().decode(token)
    assert (decoded.user_id, decoded.account_id, decoded.session) == ("u1", "a1", "f1")
    assert decoded.expires_at == datetime.fromtimestamp(int(issued.timestamp()) + 900, UTC)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["iss"] == ISSUER and payload["aud"] == "posthorn:bizmail"
    assert payload["exp"] - payload["iat"] == 900 and len(payload["jti"]) == 32


def test_the_key_is_derived_not_the_raw_secret() -> None:
    key = signing_key(SECRET)
    assert len(key) == 32 and key != SECRET.encode() and key == signing_key(SECRET)
    assert signing_key(SECRET + "x") != key
    token = codec().encode(user_id="u1", account_id="a1", session="f1", now=now())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET, algorithms=["HS256"], audience="posthorn:bizmail")
    with pytest.raises(ValueError, match="empty"):
        signing_key("")


def test_a_hand_forged_token_with_the_right_key_is_accepted() -> None:
    # The forging helper itself is sound: the refusals below are about what was changed.
    decoded = codec().decode(forge(claims(), key=signing_key(SECRET)))
    assert decoded.user_id == "user-1" and decoded.token_id == "jti-1"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(private: rsa.RSAPrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _alg_none() -> str:
    head = b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    return f"{head}.{b64(json.dumps(claims()).encode())}."


def _rs256_with_embedded_jwk() -> str:
    private = _rsa()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return jwt.encode(claims(), private, algorithm="RS256", headers={"typ": "at+jwt", "jwk": jwk})


def _hs256_keyed_with_a_public_key() -> str:
    # The RS/HS confusion: an RSA public key used as the HMAC secret (RFC 8725 §2.1).
    return forge(claims(), key=_public_pem(_rsa()))


def _tampered() -> str:
    head, _, signature = forge(claims(), key=signing_key(SECRET)).split(".")
    body = b64(json.dumps(claims(account_id="someone-else")).encode())
    return f"{head}.{body}.{signature}"


FORGERIES: dict[str, Callable[[], str]] = {
    "alg none": _alg_none,
    "alg None, signed": lambda: forge(
        claims(), key=signing_key(SECRET), header={"alg": "None", "typ": "at+jwt"}
    ),
    "another HS256 key": lambda: forge(claims(), key=b"k" * 32),
    "the raw server secret": lambda: forge(claims(), key=SECRET.encode()),
    "RS256 with an embedded jwk": _rs256_with_embedded_jwk,
    "HS256 keyed with an RSA public key": _hs256_keyed_with_a_public_key,
    "HS512 with the right key": lambda: forge(
        claims(),
        key=signing_key(SECRET),
        header={"alg": "HS512", "typ": "at+jwt"},
        digest=hashlib.sha512,
    ),
    "expired": lambda: forge(
        claims(exp=int((now() - timedelta(hours=1)).timestamp())), key=signing_key(SECRET)
    ),
    "another audience": lambda: forge(claims(aud="someone-else"), key=signing_key(SECRET)),
    "another issuer": lambda: forge(claims(iss="https://evil.test"), key=signing_key(SECRET)),
    "no exp": lambda: forge(claims(exp=None), key=signing_key(SECRET)),
    "no aud": lambda: forge(claims(aud=None), key=signing_key(SECRET)),
    "no sub": lambda: forge(claims(sub=None), key=signing_key(SECRET)),
    "no account": lambda: forge(claims(account_id=None), key=signing_key(SECRET)),
    "no session": lambda: forge(claims(sid=None), key=signing_key(SECRET)),
    "numeric sub": lambda: forge(claims(sub=7), key=signing_key(SECRET)),
    "not yet valid": lambda: forge(
        claims(nbf=int((now() + timedelta(hours=1)).timestamp())), key=signing_key(SECRET)
    ),
    "issued in the future": lambda: forge(
        claims(iat=int((now() + timedelta(hours=1)).timestamp())), key=signing_key(SECRET)
    ),
    "typ JWT (not an access token)": lambda: forge(
        claims(), key=signing_key(SECRET), header={"alg": "HS256", "typ": "JWT"}
    ),
    "no typ": lambda: forge(claims(), key=signing_key(SECRET), header={"alg": "HS256"}),
    "tampered payload": _tampered,
    "empty": lambda: "",
    "garbage": lambda: "not.a.jwt",
    "too long": lambda: forge(claims(pad="x" * 5000), key=signing_key(SECRET)),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_and_unacceptable_tokens_are_refused(name: str) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        codec().decode(FORGERIES[name]())
    assert caught.value.code == "token_invalid"


def test_a_small_clock_skew_is_tolerated() -> None:
    skewed = claims(iat=int((now() + timedelta(seconds=10)).timestamp()))
    assert codec().decode(forge(skewed, key=signing_key(SECRET))).user_id == "user-1"


def test_another_installation_cannot_verify() -> None:
    token = codec().encode(user_id="u1", account_id="a1", session="f1", now=now())
    with pytest.raises(AuthenticationFailed):
        codec("another-installation-secret").decode(token)
