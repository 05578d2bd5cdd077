"""Signed tracking tokens: round trips, and ``None`` for every altered or foreign token."""

from __future__ import annotations

import base64
import random
import string

import pytest

from posthorn.domain.tracking_tokens import (
    MAC_BYTES,
    MAX_TOKEN_CHARS,
    Kind,
    TokenData,
    derive_key,
    make_token,
    read_token,
)

KEY = derive_key("test-secret")
ACCOUNT = "8f14e45f-ceea-467f-a0e6-7a2b1c9d0e11"
EMAIL = "c9f0f895-fb98-4b91-9f2c-3a1e5d7b8c22"
# RFC 4648 §5, in value order.
ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"

SAMPLES = [
    TokenData(Kind.OPEN, ACCOUNT, EMAIL, "jane@example.com"),
    TokenData(
        Kind.CLICK,
        ACCOUNT,
        EMAIL,
        "jane@example.com",
        url="https://shop.example.com/p/42?utm_source=mail&utm_medium=email&x=%20y#frag",
    ),
    TokenData(
        Kind.CLICK, "acct-legacy", "not-a-uuid", "Ünïcode@例え.jp", url="http://例え.jp/パス"
    ),
    TokenData(Kind.UNSUBSCRIBE, ACCOUNT, EMAIL, "jane@example.com"),
    TokenData(Kind.UNSUBSCRIBE, ACCOUNT, EMAIL, "jane@example.com", list_id="newsletter-weekly"),
]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: f"{d.kind.name}-{d.recipient}")
def test_round_trip(data: TokenData) -> None:
    token = make_token(KEY, data)
    assert set(token) <= set(ALPHABET)
    assert read_token(KEY, token, kind=data.kind) == data


def test_uuids_are_packed_and_the_mac_is_128_bits() -> None:
    token = make_token(KEY, SAMPLES[0])
    # version, kind, two 17-byte UUID fields, recipient (1 + 1 + 16), no list, 16-byte MAC.
    assert len(_raw(token)) == 2 + 17 + 17 + 18 + 1 + MAC_BYTES
    assert MAC_BYTES * 8 >= 128


def test_long_query_strings_are_deflated() -> None:
    url = "https://example.com/a?" + "&".join(f"utm_{n}=newsletter-{n}" for n in range(12))
    data = TokenData(Kind.CLICK, ACCOUNT, EMAIL, "jane@example.com", url=url)
    token = make_token(KEY, data)
    assert len(_raw(token)) < len(url)
    assert read_token(KEY, token, kind=Kind.CLICK) == data


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: f"{d.kind.name}-{d.recipient}")
def test_changing_any_character_invalidates(data: TokenData) -> None:
    token = make_token(KEY, data)
    for index, char in enumerate(token):
        for other in (ALPHABET[(ALPHABET.index(char) + 1) % 64], "A" if char != "A" else "B"):
            tampered = token[:index] + other + token[index + 1 :]
            assert read_token(KEY, tampered, kind=data.kind) is None, (index, other)


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: f"{d.kind.name}-{d.recipient}")
def test_flipping_any_bit_invalidates(data: TokenData) -> None:
    raw = _raw(make_token(KEY, data))
    for index in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[index] ^= 1 << bit
            assert read_token(KEY, _b64(bytes(flipped)), kind=data.kind) is None


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: f"{d.kind.name}-{d.recipient}")
def test_truncated_or_extended_tokens_are_refused(data: TokenData) -> None:
    token = make_token(KEY, data)
    for length in range(len(token)):
        assert read_token(KEY, token[:length], kind=data.kind) is None
    for suffix in ("A", "AA", "AAAA", "=", "==", " ", "\n", "%3D"):
        assert read_token(KEY, token + suffix, kind=data.kind) is None
    assert read_token(KEY, " " + token, kind=data.kind) is None


def test_spare_base64_bits_cannot_respell_a_token() -> None:
    """The last character's unused bits would decode to the same bytes; such a spelling is
    not the token we issued."""
    for data in SAMPLES:
        token = make_token(KEY, data)
        if len(token) % 4 == 0:
            continue
        last = ALPHABET.index(token[-1])
        spare = 0b1111 if len(token) % 4 == 2 else 0b11
        for other in range(64):
            if other != last and other & ~spare == last & ~spare:
                respelled = token[:-1] + ALPHABET[other]
                assert _raw(respelled) == _raw(token)
                assert read_token(KEY, respelled, kind=data.kind) is None


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: f"{d.kind.name}-{d.recipient}")
def test_a_token_of_one_kind_is_not_a_token_of_another(data: TokenData) -> None:
    token = make_token(KEY, data)
    for kind in Kind:
        if kind is not data.kind:
            assert read_token(KEY, token, kind=kind) is None


def test_a_token_from_another_server_is_refused() -> None:
    other = derive_key("another-secret")
    for data in SAMPLES:
        assert read_token(other, make_token(KEY, data), kind=data.kind) is None


def test_swapping_the_mac_between_tokens_fails() -> None:
    first = _raw(make_token(KEY, SAMPLES[0]))
    second = _raw(make_token(KEY, SAMPLES[3]))
    mixed = first[:-MAC_BYTES] + second[-MAC_BYTES:]
    assert read_token(KEY, _b64(mixed), kind=Kind.OPEN) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "A",
        "!!!!",
        "é" * 20,
        "AAAA====",
        "A" * (MAX_TOKEN_CHARS + 1),
        "\x00" * 30,
        "../../etc/passwd",
        "AQE" + "A" * 60,
    ],
)
def test_malformed_input_reads_as_none(token: str) -> None:
    for kind in Kind:
        assert read_token(KEY, token, kind=kind) is None


def test_random_garbage_never_raises() -> None:
    rng = random.Random(8058)
    for _ in range(3000):
        length = rng.randrange(0, 120)
        token = "".join(rng.choice(ALPHABET + "=+/ .é") for _ in range(length))
        assert read_token(KEY, token, kind=rng.choice(list(Kind))) is None


def test_correctly_signed_but_malformed_payloads_read_as_none() -> None:
    """A MAC only proves who wrote the bytes; a payload of another layout still fails softly."""
    import hmac

    def signed(payload: bytes) -> str:
        return _b64(payload + hmac.digest(KEY, payload, "sha256")[:MAC_BYTES])

    for payload in (
        b"\x01\x01",  # no fields
        b"\x01\x01\x07",  # unknown field form
        b"\x01\x01\x00\xff\xff\xff\xff\xff\x01",  # endless varint
        b"\x01\x01\x00\x05ab",  # text shorter than its length
        b"\x01\x02\x02\x02\x02\x02",  # click without URL, missing ids
        b"\x02\x01\x02\x02\x02\x02",  # another version
        b"\x01\x02\x00\x01a\x00\x01b\x00\x01c\x02\x09\x00x",  # unknown URL prefix
        b"\x01\x02\x00\x01a\x00\x01b\x00\x01c\x02\x00\x01garbage",  # bad deflate stream
        b"\x01\x01\x00\x01a\x00\x01b\x00\x01c\x02trailing",  # bytes after an open token
        b"\x01\x01\x00\x02\xff\xfe\x00\x01b\x00\x01c\x02",  # invalid UTF-8
    ):
        for kind in Kind:
            assert read_token(KEY, signed(payload), kind=kind) is None


def test_values_are_checked() -> None:
    with pytest.raises(ValueError):
        TokenData(Kind.CLICK, ACCOUNT, EMAIL, "a@b.c")
    with pytest.raises(ValueError):
        TokenData(Kind.OPEN, ACCOUNT, EMAIL, "a@b.c", url="https://x")
    with pytest.raises(ValueError):
        TokenData(Kind.OPEN, ACCOUNT, EMAIL, "a@b.c", list_id="news")
    with pytest.raises(ValueError):
        derive_key("")
    rng = random.Random(1)
    huge = "https://example.com/" + "".join(rng.choice(ALPHABET) for _ in range(6000))
    with pytest.raises(ValueError):
        make_token(KEY, TokenData(Kind.CLICK, ACCOUNT, EMAIL, "a@b.c", url=huge))


def test_uppercase_uuids_are_kept_as_written() -> None:
    data = TokenData(Kind.OPEN, ACCOUNT.upper(), EMAIL, "a@b.c")
    assert read_token(KEY, make_token(KEY, data), kind=Kind.OPEN) == data
