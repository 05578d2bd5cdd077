"""DKIM signing, checked against the RFC examples and against dkimpy's verifier as an oracle."""

from __future__ import annotations

import base64
import hashlib
import re
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from posthorn.domain.addresses import Address
from posthorn.mime import Attachment, MessageSpec, compose
from posthorn.mime.dkim import (
    SIGNED_HEADERS,
    Algorithm,
    DkimError,
    DkimKey,
    _load_private_key,
    _signature,
    dns_record_value,
    generate_ed25519_key,
    generate_rsa_key,
    sign,
)
from posthorn.mime.dkim_canon import (
    normalize_line_endings,
    relaxed_body,
    relaxed_header,
    simple_body,
    simple_header,
    split_message,
)

NOW = 1_795_000_000  # a fixed past instant: dkimpy refuses a t= in the future

# RFC 8463 Appendix A: the Ed25519 test key, the example message and its signature.
RFC8463_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_PUBLIC = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC8463_MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
)
RFC8463_SIGNATURE_FIELD = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b="
)
RFC8463_B = (
    "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="
)


def _pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


RFC8463_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(RFC8463_SEED))
RFC8463_PEM = _pem(RFC8463_KEY)


# --- canonicalisation (RFC 6376 §3.4) ---------------------------------------------------------


def test_relaxed_header_matches_rfc6376_example() -> None:
    # RFC 6376 §3.4.5.
    fields, _ = split_message(b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\n")
    assert [relaxed_header(f.name, f.value) for f in fields] == [b"a:X\r\n", b"b:Y Z\r\n"]


def test_simple_header_keeps_the_field_as_written() -> None:
    fields, _ = split_message(b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\n")
    assert [simple_header(f.name, f.value) for f in fields] == [
        b"A: X\r\n",
        b"B : Y\t\r\n\tZ  \r\n",
    ]


def test_relaxed_body_matches_rfc6376_example() -> None:
    assert relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"


def test_simple_body_matches_rfc6376_example() -> None:
    assert simple_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C \r\nD \t E\r\n"


@pytest.mark.parametrize(
    ("body", "relaxed", "simple"),
    [
        (b"", b"", b"\r\n"),
        (b"\r\n\r\n\r\n", b"", b"\r\n"),
        (b" \t \r\n", b"", b" \t \r\n"),
        (b"no final line break", b"no final line break\r\n", b"no final line break\r\n"),
        # White space ending an unterminated last line is still line-end white space.
        (b"trailing  \t", b"trailing\r\n", b"trailing  \t\r\n"),
        # A bare CR is content, not part of an empty line.
        (b"a\r\r\n\r\n", b"a\r\r\n", b"a\r\r\n"),
        (b"x\r\n\r\ny\r\n", b"x\r\n\r\ny\r\n", b"x\r\n\r\ny\r\n"),
    ],
)
def test_body_edge_cases(body: bytes, relaxed: bytes, simple: bytes) -> None:
    assert relaxed_body(body) == relaxed
    assert simple_body(body) == simple


def test_split_message_keeps_folding_and_repeated_fields() -> None:
    fields, body = split_message(
        b"Received: a\r\nSubject: one\r\n two\r\nReceived: b\r\n\r\nbody\r\n\r\nmore\r\n"
    )
    assert [(f.name, f.value) for f in fields] == [
        (b"Received", b" a"),
        (b"Subject", b" one\r\n two"),
        (b"Received", b" b"),
    ]
    assert body == b"body\r\n\r\nmore\r\n"


def test_split_message_without_body_or_without_header() -> None:
    assert split_message(b"From: a@example.com\r\n")[1] == b""
    assert split_message(b"\r\nonly a body\r\n") == ([], b"only a body\r\n")


@pytest.mark.parametrize("head", [b"From a@example.com\r\n", b" folded\r\nFrom: a\r\n", b": x\r\n"])
def test_split_message_refuses_malformed_headers(head: bytes) -> None:
    with pytest.raises(DkimError):
        split_message(head + b"\r\nbody\r\n")


def test_normalize_line_endings() -> None:
    assert normalize_line_endings(b"A: b\nC: d\r\n\nx") == b"A: b\r\nC: d\r\n\r\nx\r\n"
    message = b"A: b\r\n\r\nx\r\n"
    assert normalize_line_endings(message) is message


# --- RFC 8463 Appendix A: an independent golden vector for Ed25519-SHA256 ----------------------


def test_rfc8463_body_hash() -> None:
    _, body = split_message(RFC8463_MESSAGE)
    digest = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    assert digest == b"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="


def test_rfc8463_signature_is_reproduced_exactly() -> None:
    # Ed25519 is deterministic, so the RFC's own b= must come out bit for bit; this pins the
    # RFC 8463 §3 construction (Ed25519 over the SHA-256 hash of the header data).
    fields, _ = split_message(RFC8463_MESSAGE)
    by_key = {f.key: f for f in fields}
    data = b"".join(
        relaxed_header(by_key[k].name, by_key[k].value)
        for k in (b"from", b"to", b"subject", b"date", b"message-id")
    )
    name, _, value = RFC8463_SIGNATURE_FIELD.partition(b":")
    data += relaxed_header(name, value)[:-2]
    key = _load_private_key(RFC8463_PEM, "ed25519-sha256")
    assert base64.b64encode(_signature(key, data)).decode() == RFC8463_B


def test_sign_golden_vector() -> None:
    # Our own field for the RFC 8463 message and key: a regression vector, checked by dkimpy.
    key = DkimKey("football.example.com", "brisbane", RFC8463_PEM, "ed25519-sha256")
    signed = sign(RFC8463_MESSAGE, [key], timestamp=1528637909)
    assert signed == (
        b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
        b" d=football.example.com; s=brisbane; t=1528637909; h=From:To:Subject:Date:\r\n"
        b" Message-ID:From; bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=M4BL0BcE5\r\n"
        b" 8Rc2sPht3bGso4A4qfpxb5qav/6nHhI4V2Mk1dvszJOhACKvhfI0gzgJmvfCFF5e11x11OjfYcnAw\r\n"
        b" ==\r\n" + RFC8463_MESSAGE
    )
    records = {
        "brisbane._domainkey.football.example.com.": f"v=DKIM1; k=ed25519; p={RFC8463_PUBLIC}"
    }
    assert dkim.verify(signed, dnsfunc=_dns(records))


# --- dkimpy as the oracle ----------------------------------------------------------------------


class _Ed25519Verifier:
    """The slice of PyNaCl's ``VerifyKey`` that dkimpy calls, on top of ``cryptography``.

    dkimpy checks Ed25519 signatures through PyNaCl. When PyNaCl is not installed this stands
    in for the bare signature check only; what gets hashed (the part under test) is still
    dkimpy's own code.
    """

    def __init__(self, key: bytes, encoder: object = None) -> None:
        self._key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(key))

    def verify(self, message: bytes, signature: bytes) -> bytes:
        try:
            self._key.verify(signature, message)
        except InvalidSignature as exc:
            raise _BadSignatureError from exc
        return message


class _BadSignatureError(Exception):
    pass


@pytest.fixture(autouse=True)
def _ed25519_in_dkimpy(monkeypatch: pytest.MonkeyPatch) -> None:
    if getattr(dkim, "nacl", None) is None:
        shim = types.SimpleNamespace(
            signing=types.SimpleNamespace(VerifyKey=_Ed25519Verifier),
            encoding=types.SimpleNamespace(Base64Encoder=object),
            exceptions=types.SimpleNamespace(
                ValueError=ValueError, BadSignatureError=_BadSignatureError
            ),
        )
        monkeypatch.setattr(dkim, "nacl", shim, raising=False)


def _dns(records: dict[str, str]) -> Callable[..., bytes]:
    """A dkimpy ``dnsfunc``: dkimpy 1.1 calls ``dnsfunc(name: bytes, timeout=...)``."""

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode(), "").encode()

    return lookup


@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, str]:
    return generate_rsa_key()


@pytest.fixture(scope="module")
def ed25519_key() -> tuple[bytes, str]:
    return generate_ed25519_key()


@pytest.fixture(params=["rsa-sha256", "ed25519-sha256"])
def signer(
    request: pytest.FixtureRequest, rsa_key: tuple[bytes, str], ed25519_key: tuple[bytes, str]
) -> tuple[DkimKey, Callable[..., bytes]]:
    """A key and the DNS that publishes it."""
    algorithm: Algorithm = request.param
    pem, public = rsa_key if algorithm == "rsa-sha256" else ed25519_key
    key = DkimKey("mail.acme.example", "pk2026", pem, algorithm)
    record = dns_record_value(algorithm, public)
    return key, _dns({"pk2026._domainkey.mail.acme.example.": record})


def _composed() -> bytes:
    return compose(
        MessageSpec(
            from_address=Address("billing@mail.acme.example", "Acme Billing"),
            to=(Address("jane@example.com", "Jane Doe"),),
            subject="Votre reçu n° 12345 — merci !",
            message_id="0f6c3b9e@mail.acme.example",
            date=datetime(2026, 11, 23, 18, 41, 30, tzinfo=UTC),
            text="Bonjour Jane,\nvoici votre reçu.\n",
            html="<p>Bonjour Jane,</p><p>voici votre reçu.</p>\n",
            attachments=(
                Attachment(
                    "reçu-12345.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 8, "application/pdf"
                ),
            ),
            headers=(
                ("List-Unsubscribe", "<https://mail.acme.example/u/0f6c3b9e>"),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ),
        )
    )


HEAD = (
    b"From: Acme <billing@mail.acme.example>\r\n"
    b"To: Jane Doe <jane@example.com>\r\n"
    b"Subject: Your receipt\r\n"
    b"Date: Mon, 23 Nov 2026 18:41:30 +0000\r\n"
    b"Message-ID: <0f6c3b9e@mail.acme.example>\r\n"
)

MESSAGES: dict[str, bytes] = {
    "simple ascii": HEAD + b"\r\nHello Jane,\r\nthanks for your order.\r\n",
    "folded headers": (
        b"From: Acme Billing\r\n\t<billing@mail.acme.example>\r\n"
        b"To: Jane Doe <jane@example.com>,\r\n John Roe <john@example.com>,\r\n"
        b"  Max Moe <max@example.com>\r\n"
        b"Subject: A subject long enough that it had to be folded onto\r\n a second line\r\n"
        b"Date: Mon, 23 Nov 2026 18:41:30 +0000\r\n"
        b"\r\nBody.\r\n"
    ),
    "encoded subject": (
        b"From: =?utf-8?q?Caf=C3=A9?= <billing@mail.acme.example>\r\n"
        b"Subject: =?utf-8?b?VGjDqiBow7NhIMSRxqFu?=\r\n =?utf-8?b?IHPhu5EgMTIzNDU=?=\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + "Cảm ơn bạn đã đặt hàng.\r\n".encode()
    ),
    "raw utf-8 header": (
        "From: Café <billing@mail.acme.example>\r\nSubject: Reçu\r\n\r\nMerci.\r\n".encode()
    ),
    "multipart with attachment": _composed(),
    "trailing blank lines": HEAD + b"\r\nHello.  \r\n\r\n\r\n\r\n",
    "no final line break": HEAD + b"\r\nHello, no line break at the end   ",
    "empty body": HEAD + b"\r\n",
    "no body at all": HEAD,
    "bare line feeds": HEAD.replace(b"\r\n", b"\n") + b"\nHello.\nBye.\n",
    "repeated headers": (
        b"Received: from a.example by b.example; Mon, 23 Nov 2026 18:41:30 +0000\r\n"
        b"From: Acme <billing@mail.acme.example>\r\n"
        b"To: Jane <jane@example.com>\r\n"
        b"Cc: One <one@example.com>\r\n"
        b"Received: from c.example by d.example; Mon, 23 Nov 2026 18:41:31 +0000\r\n"
        b"To: John <john@example.com>\r\n"
        b"Cc: Two <two@example.com>\r\n"
        b"Subject: Twice to\r\n"
        b"\r\nBody.\r\n"
    ),
}


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_dkimpy_verifies_the_signature(
    signer: tuple[DkimKey, Callable[..., bytes]], message: bytes
) -> None:
    key, dns = signer
    signed = sign(message, [key], timestamp=NOW)
    assert dkim.verify(signed, dnsfunc=dns)


def _tamperings() -> Iterator[tuple[str, Callable[[bytes], bytes]]]:
    yield "subject", lambda m: m.replace(b"Subject: Your receipt", b"Subject: Your receipt!")
    yield "to", lambda m: m.replace(b"jane@example.com", b"jane@evil.example")
    yield "body", lambda m: m.replace(b"thanks for", b"thanks 4")
    yield "appended body", lambda m: m + b"Click here.\r\n"
    yield "dropped line", lambda m: m.replace(b"Hello Jane,\r\n", b"")
    # Oversigning: a From added above or below the signed one breaks the signature.
    yield "extra From at top", lambda m: b"From: evil@evil.example\r\n" + m
    yield (
        "extra From below",
        lambda m: m.replace(b"To: ", b"From: evil@evil.example\r\nTo: ", 1),
    )
    # Only From is oversigned: a second Subject counts only below the signed one, where the
    # verifier's bottom-up selection picks it instead (RFC 6376 §5.4.2).
    yield "extra Subject below", lambda m: m.replace(b"Date:", b"Subject: Refund\r\nDate:", 1)
    yield "removed To", lambda m: re.sub(rb"To: [^\r]*\r\n", b"", m, count=1)


@pytest.mark.parametrize("tamper", [t for _, t in _tamperings()], ids=[n for n, _ in _tamperings()])
def test_tampering_breaks_the_signature(
    signer: tuple[DkimKey, Callable[..., bytes]], tamper: Callable[[bytes], bytes]
) -> None:
    key, dns = signer
    signed = sign(MESSAGES["simple ascii"], [key], timestamp=NOW)
    # The DKIM-Signature field itself comes first; tamper only below it.
    cut = signed.index(b"\r\nFrom: Acme") + 2
    tampered = signed[:cut] + tamper(signed[cut:])
    assert tampered != signed
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_relaxed_canonicalisation_survives_refolding(
    signer: tuple[DkimKey, Callable[..., bytes]],
) -> None:
    key, dns = signer
    signed = sign(MESSAGES["simple ascii"], [key], timestamp=NOW)
    refolded = signed.replace(b"Subject: Your receipt", b"SUBJECT:\tYour\r\n   receipt  ").replace(
        b"thanks for your order.", b"thanks   for your order.\t"
    )
    assert dkim.verify(refolded, dnsfunc=dns)


def test_every_key_adds_its_own_signature(
    rsa_key: tuple[bytes, str], ed25519_key: tuple[bytes, str]
) -> None:
    keys = [
        DkimKey("mail.acme.example", "rsa1", rsa_key[0], "rsa-sha256"),
        DkimKey("acme.example", "ed1", ed25519_key[0], "ed25519-sha256"),
    ]
    dns = _dns(
        {
            "rsa1._domainkey.mail.acme.example.": dns_record_value("rsa-sha256", rsa_key[1]),
            "ed1._domainkey.acme.example.": dns_record_value("ed25519-sha256", ed25519_key[1]),
        }
    )
    signed = sign(MESSAGES["multipart with attachment"], keys, timestamp=NOW)
    assert signed.count(b"DKIM-Signature:") == 2
    assert signed.index(b"a=rsa-sha256") < signed.index(b"a=ed25519-sha256")
    verifier = dkim.DKIM(signed)
    assert verifier.verify(idx=0, dnsfunc=dns)
    assert verifier.verify(idx=1, dnsfunc=dns)


# --- the shape of the field --------------------------------------------------------------------


def _tags(signed: bytes) -> dict[str, str]:
    fields, _ = split_message(signed)
    value = b"".join(f.value for f in fields if f.key == b"dkim-signature").decode()
    unfolded = re.sub(r"\s+", "", value)
    return dict(tag.split("=", 1) for tag in unfolded.split(";") if tag)


def test_h_lists_present_headers_in_order_and_oversigns_from(
    signer: tuple[DkimKey, Callable[..., bytes]],
) -> None:
    key, _ = signer
    tags = _tags(sign(MESSAGES["multipart with attachment"], [key], timestamp=NOW))
    assert tags["h"].split(":") == [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "From",
    ]
    assert all(name in SIGNED_HEADERS for name in tags["h"].split(":"))


def test_h_names_a_repeated_header_once_per_instance(
    signer: tuple[DkimKey, Callable[..., bytes]],
) -> None:
    key, _ = signer
    tags = _tags(sign(MESSAGES["repeated headers"], [key], timestamp=NOW))
    assert tags["h"] == "From:To:To:Cc:Cc:Subject:From"


def test_tags(signer: tuple[DkimKey, Callable[..., bytes]]) -> None:
    key, _ = signer
    tags = _tags(sign(MESSAGES["simple ascii"], [key], timestamp=NOW))
    assert tags["v"] == "1"
    assert tags["a"] == key.algorithm
    assert tags["c"] == "relaxed/relaxed"
    assert (tags["d"], tags["s"], tags["t"]) == ("mail.acme.example", "pk2026", str(NOW))
    assert set(tags) == {"v", "a", "c", "d", "s", "t", "h", "bh", "b"}  # never l=
    assert "t" not in _tags(sign(MESSAGES["simple ascii"], [key]))


def test_field_is_folded_within_78_characters(
    signer: tuple[DkimKey, Callable[..., bytes]],
) -> None:
    key, _ = signer
    signed = sign(MESSAGES["multipart with attachment"], [key], timestamp=NOW)
    field = signed[: signed.index(b"\r\nFrom: ") + 2]
    lines = field.split(b"\r\n")[:-1]
    assert lines[0].startswith(b"DKIM-Signature: v=1;")
    assert all(len(line) <= 78 for line in lines)
    assert all(line[:1] == b" " for line in lines[1:])


# --- keys and errors ---------------------------------------------------------------------------


def test_dns_record_values() -> None:
    assert dns_record_value("ed25519-sha256", RFC8463_PUBLIC) == (
        f"v=DKIM1; k=ed25519; p={RFC8463_PUBLIC}"
    )
    pem, public = generate_rsa_key()
    assert dns_record_value("rsa-sha256", public) == f"v=DKIM1; k=rsa; p={public}"
    assert public.startswith("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A")  # SubjectPublicKeyInfo, 2048
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    with pytest.raises(DkimError):
        dns_record_value("rsa-sha256", "not; base64")


def test_generated_ed25519_key() -> None:
    pem, public = generate_ed25519_key()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(base64.b64decode(public)) == 32


def test_generate_rsa_key_refuses_short_keys() -> None:
    with pytest.raises(ValueError, match="1024"):
        generate_rsa_key(512)


def test_private_key_is_parsed_once(ed25519_key: tuple[bytes, str]) -> None:
    key = DkimKey("acme.example", "s1", ed25519_key[0], "ed25519-sha256")
    sign(MESSAGES["simple ascii"], [key])
    before = _load_private_key.cache_info()
    for _ in range(5):
        sign(MESSAGES["simple ascii"], [key])
    after = _load_private_key.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (5, 0)


def test_key_repr_hides_the_private_key(ed25519_key: tuple[bytes, str]) -> None:
    key = DkimKey("acme.example", "s1", ed25519_key[0], "ed25519-sha256")
    assert "PRIVATE" not in repr(key)


@pytest.mark.parametrize(
    ("domain", "selector"),
    [("acme.example.", "s1"), ("exämple.com", "s1"), ("acme.example", "s_1"), ("", "s1")],
)
def test_key_refuses_bad_names(domain: str, selector: str, ed25519_key: tuple[bytes, str]) -> None:
    with pytest.raises(DkimError):
        DkimKey(domain, selector, ed25519_key[0], "ed25519-sha256")


def test_unusable_keys_are_refused(
    rsa_key: tuple[bytes, str], ed25519_key: tuple[bytes, str]
) -> None:
    for pem, algorithm in (
        (b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", "rsa-sha256"),
        (ed25519_key[0], "rsa-sha256"),
        (rsa_key[0], "ed25519-sha256"),
    ):
        key = DkimKey("acme.example", "s1", pem, algorithm)  # type: ignore[arg-type]
        with pytest.raises(DkimError):
            key.check()
        with pytest.raises(DkimError):
            sign(MESSAGES["simple ascii"], [key])


def test_a_message_without_from_cannot_be_signed(ed25519_key: tuple[bytes, str]) -> None:
    key = DkimKey("acme.example", "s1", ed25519_key[0], "ed25519-sha256")
    with pytest.raises(DkimError, match="From"):
        sign(b"To: a@example.com\r\nSubject: x\r\n\r\nbody\r\n", [key])


def test_no_keys_leaves_the_message_as_sent() -> None:
    assert sign(b"From: a@example.com\n\nbody", []) == b"From: a@example.com\r\n\r\nbody\r\n"
