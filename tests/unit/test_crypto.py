"""Sealing secrets at rest: round trips, and every way a token must fail to unseal."""

from __future__ import annotations

import base64

import pytest

from posthorn.crypto import SealError, seal, unseal

SECRET = "n0t-a-real-secret-but-long-enough-for-tests"
PEM = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("plaintext", [b"", b"hunter2", PEM, bytes(range(256)) * 40])
def test_round_trip(plaintext: bytes) -> None:
    token = seal(SECRET, plaintext, purpose="dkim")
    assert unseal(SECRET, token, purpose="dkim") == plaintext


def test_token_shape() -> None:
    token = seal(SECRET, b"hunter2", purpose="relay-password")
    assert token.startswith("v1:")
    body = token[3:]
    assert "=" not in body and "+" not in body and "/" not in body
    # nonce (12) + ciphertext (7) + tag (16)
    assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == 12 + 7 + 16
    assert PEM not in token.encode()


def test_each_seal_uses_a_fresh_nonce() -> None:
    assert seal(SECRET, b"same", purpose="dkim") != seal(SECRET, b"same", purpose="dkim")


def test_wrong_secret() -> None:
    token = seal(SECRET, b"hunter2", purpose="dkim")
    with pytest.raises(SealError):
        unseal(SECRET + "x", token, purpose="dkim")


def test_wrong_purpose() -> None:
    token = seal(SECRET, b"hunter2", purpose="dkim")
    with pytest.raises(SealError):
        unseal(SECRET, token, purpose="relay-password")


def _flip(token: str, index: int) -> str:
    body = token[3:]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[index] ^= 0x01
    return "v1:" + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "index", [0, 11, 12, 18, -1], ids=["nonce", "nonce end", "ct", "ct end", "tag"]
)
def test_tampered_token(index: int) -> None:
    token = seal(SECRET, b"hunter2", purpose="dkim")
    with pytest.raises(SealError):
        unseal(SECRET, _flip(token, index), purpose="dkim")


@pytest.mark.parametrize(
    "token",
    ["", "hunter2", "v2:AAAA", "v1:", "v1:AAAA", "v1:!!!!", "v1:" + "A" * 37],
)
def test_not_a_token(token: str) -> None:
    with pytest.raises(SealError):
        unseal(SECRET, token, purpose="dkim")


def test_truncated_token() -> None:
    token = seal(SECRET, b"hunter2", purpose="dkim")
    with pytest.raises(SealError):
        unseal(SECRET, token[:-4], purpose="dkim")


def test_seal_error_is_a_value_error() -> None:
    assert issubclass(SealError, ValueError)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        seal("", b"hunter2", purpose="dkim")
