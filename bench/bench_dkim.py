"""Signatures per second: posthorn.mime.dkim.sign against dkimpy's dkim.sign, on one core.

Run with ``.venv/bin/python bench/bench_dkim.py``; it takes about 10 seconds. Both sign the
same ~3 KB composed message with relaxed/relaxed canonicalisation and the same header list,
first with an RSA-2048 key, then with Ed25519 (dkimpy needs PyNaCl for that; without it only
our figure is shown). Our signature is checked with dkimpy's verifier before timing.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable
from datetime import UTC, datetime

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from posthorn.domain.addresses import Address
from posthorn.mime import MessageSpec, compose
from posthorn.mime.dkim import (
    SIGNED_HEADERS,
    Algorithm,
    DkimKey,
    dns_record_value,
    generate_ed25519_key,
    generate_rsa_key,
    sign,
)

SECONDS_PER_RUN = 2.0
TIMESTAMP = 1_795_000_000

TEXT = (
    "Hi Jane,\n\nThanks for your order #12345. Here is your receipt.\n\n"
    + "".join(f"  {n} x Widget model {n:03d} ................ $ {n * 3}.00\n" for n in range(1, 19))
    + "\nTotal: $ 234.00\n\nQuestions? Just reply to this email.\n-- \nAcme Billing\n"
)
HTML = (
    '<!doctype html><html><body style="font-family: sans-serif">'
    "<p>Hi Jane,</p><p>Thanks for your order <b>#12345</b>. Here is your receipt.</p><table>"
    + "".join(
        f'<tr><td>{n} x Widget model {n:03d}</td><td align="right">$ {n * 3}.00</td></tr>\n'
        for n in range(1, 19)
    )
    + "</table><p>Total: <b>$ 234.00</b></p><p>Questions? Just reply to this email.</p>"
    "</body></html>\n"
)
MESSAGE = compose(
    MessageSpec(
        from_address=Address("billing@acme.example", "Acme Billing"),
        to=(Address("jane@example.com", "Jane Doe"),),
        subject="Your receipt for order #12345",
        message_id="0f6c3b9e5d2a@mail.acme.example",
        date=datetime(2026, 11, 23, 18, 41, 30, tzinfo=UTC),
        text=TEXT,
        html=HTML,
        reply_to=Address("support@acme.example", "Acme Support"),
        headers=(
            ("List-Unsubscribe", "<https://acme.example/u/0f6c3b9e5d2a>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ),
    )
)
# dkimpy is given the list our h= ends up with, oversigned From included.
INCLUDE = [name.encode() for name in SIGNED_HEADERS] + [b"From"]


def rate(signer: Callable[[], bytes]) -> float:
    signer()
    count = 0
    batch = 20
    start = time.perf_counter()
    deadline = start + SECONDS_PER_RUN
    while True:
        for _ in range(batch):
            signer()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def check(key: DkimKey, public: str) -> None:
    if key.algorithm == "ed25519-sha256" and getattr(dkim, "nacl", None) is None:
        return  # dkimpy verifies Ed25519 only through PyNaCl; tests/unit/test_dkim.py covers it
    record = dns_record_value(key.algorithm, public).encode()
    signed = sign(MESSAGE, [key], timestamp=TIMESTAMP)
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)


def dkimpy_ed25519_key(pem: bytes) -> bytes | None:
    """The private key as dkimpy takes it (base64 of the 32-byte seed), or None without PyNaCl."""
    if getattr(dkim, "nacl", None) is None:
        return None
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(seed)


def main() -> None:
    rsa_pem, rsa_public = generate_rsa_key(2048)
    ed_pem, ed_public = generate_ed25519_key()
    cases: list[tuple[str, Algorithm, bytes, str, bytes | None]] = [
        ("RSA-2048", "rsa-sha256", rsa_pem, rsa_public, rsa_pem),
        ("Ed25519", "ed25519-sha256", ed_pem, ed_public, dkimpy_ed25519_key(ed_pem)),
    ]
    print(f"message: {len(MESSAGE):,} bytes, relaxed/relaxed, the same h= list for both")
    print(f"{'key':<10}{'posthorn/s':>12}{'dkimpy/s':>12}{'ratio':>9}")
    for label, algorithm, pem, public, dkimpy_key in cases:
        key = DkimKey("acme.example", "bench", pem, algorithm)
        check(key, public)
        ours = rate(functools.partial(sign, MESSAGE, [key], timestamp=TIMESTAMP))
        if dkimpy_key is None:
            print(f"{label:<10}{ours:>12,.0f}{'n/a':>12}{'':>9}  (dkimpy needs PyNaCl)")
            continue
        theirs = rate(
            functools.partial(
                dkim.sign,
                MESSAGE,
                b"bench",
                b"acme.example",
                dkimpy_key,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=algorithm.encode(),
                include_headers=INCLUDE,
            )
        )
        print(f"{label:<10}{ours:>12,.0f}{theirs:>12,.0f}{ours / theirs:>8.1f}x")


if __name__ == "__main__":
    main()
