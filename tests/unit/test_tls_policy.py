"""The per-destination TLS policy table: look-up, validation, the setting, and the pool's check
that keeps a weaker connection from serving a stricter delivery. No sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from posthorn.delivery.pool import ConnectionPool
from posthorn.domain.tls_policy import (
    DEFAULT_LEVEL,
    LEVELS,
    normalise_table,
    parse_level,
    policy_for,
    requires_tls,
)
from posthorn.settings import Settings

TABLE = normalise_table(
    {
        "bank.example": "verify",
        ".bank.example": "encrypt",
        ".eu.bank.example": "verify",
        "partner.example": "encrypt",
        "open.example": "may",
    }
)

# Look-up.


@pytest.mark.parametrize(
    ("domain", "level"),
    [
        ("bank.example", "verify"),  # the exact entry
        ("mail.bank.example", "encrypt"),  # ".bank.example"
        ("a.b.bank.example", "encrypt"),  # any depth below
        ("eu.bank.example", "encrypt"),  # ".eu.bank.example" is for the names below it
        ("x.eu.bank.example", "verify"),  # the nearest parent wins
        ("partner.example", "encrypt"),
        ("sub.partner.example", "may"),  # without a dot the key matches only itself
        ("open.example", "may"),
        ("other.example", "may"),  # no entry
        ("example", "may"),
        ("notbank.example", "may"),  # a suffix that is not a label boundary
    ],
)
def test_policy_for(domain: str, level: str) -> None:
    assert policy_for(domain, TABLE) == level


def test_a_dotted_key_does_not_match_the_domain_itself() -> None:
    table = normalise_table({".bank.example": "verify"})

    assert policy_for("bank.example", table) == "may"
    assert policy_for("eu.bank.example", table) == "verify"


def test_the_exact_entry_wins_over_a_parent_one() -> None:
    table = normalise_table({".bank.example": "verify", "eu.bank.example": "may"})

    assert policy_for("eu.bank.example", table) == "may"
    assert policy_for("us.bank.example", table) == "verify"


def test_look_up_ignores_case_and_the_final_dot() -> None:
    assert policy_for("BANK.Example.", TABLE) == "verify"
    assert policy_for("Mail.Bank.Example", TABLE) == "encrypt"


def test_an_empty_table_means_may_everywhere() -> None:
    assert DEFAULT_LEVEL == "may"
    assert policy_for("bank.example", {}) == "may"
    assert policy_for("", {}) == "may"


def test_a_raw_table_is_read_too() -> None:
    assert policy_for("bank.example", {"bank.example": " Verify "}) == "verify"
    with pytest.raises(ValueError, match="unknown TLS policy"):
        policy_for("bank.example", {"bank.example": "secure"})


# Levels and validation.


def test_levels_weakest_first() -> None:
    assert LEVELS == ("may", "encrypt", "verify")
    assert [requires_tls(level) for level in LEVELS] == [False, True, True]
    assert parse_level(" ENCRYPT ") == "encrypt"


@pytest.mark.parametrize("value", ["", "none", "secure", "dane", "verify,encrypt"])
def test_unknown_levels_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="unknown TLS policy"):
        parse_level(value)


def test_normalise_table_lowers_keys_and_drops_the_final_dot() -> None:
    assert normalise_table({"Bank.Example.": "VERIFY", ".Partner.Example": "encrypt"}) == {
        "bank.example": "verify",
        ".partner.example": "encrypt",
    }


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"bank.example": "secure"}, "TLS policy for 'bank.example'"),
        ({"": "verify"}, "invalid TLS policy domain"),
        ({".": "verify"}, "invalid TLS policy domain"),
        ({"bank .example": "verify"}, "invalid TLS policy domain"),
        ({"bank..example": "verify"}, "invalid TLS policy domain"),
        ({"bank.example": "verify", "BANK.example.": "may"}, "listed twice"),
    ],
)
def test_normalise_table_refuses_mistakes(table: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_table(table)


# The setting.


def test_the_setting_is_json_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "POSTHORN_TLS_POLICY", '{"bank.example": "verify", ".partner.example": "encrypt"}'
    )
    monkeypatch.setenv("POSTHORN_TLS_CA_FILE", str(tmp_path / "ca.pem"))

    settings = Settings(secret_key="x", data_dir=tmp_path)

    assert settings.tls_policy == {"bank.example": "verify", ".partner.example": "encrypt"}
    assert settings.tls_ca_file == tmp_path / "ca.pem"
    assert Settings.model_fields["tls_policy"].default_factory is not None
    assert Settings.model_fields["tls_ca_file"].default is None


# The pool's check on reuse.


class FakeConnection:
    def __init__(self, name: str, *, encrypted: bool) -> None:
        self.name = name
        self.encrypted = encrypted
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def test_an_idle_connection_is_handed_out_only_when_accepted() -> None:
    pool: ConnectionPool[FakeConnection] = ConnectionPool(per_destination=2, idle_seconds=60)
    plain = FakeConnection("plain", encrypted=False)
    encrypted = FakeConnection("encrypted", encrypted=True)
    for connection in (encrypted, plain):  # "plain" is the most recently used
        async with pool.lease("mx", within=1) as lease:
            lease.keep(connection)

    async with pool.lease("mx", within=1) as lease:
        taken = lease.take_idle(accept=lambda connection: connection.encrypted)
    assert taken is encrypted
    assert pool.idle_count == 1

    async with pool.lease("mx", within=1) as lease:
        assert lease.take_idle() is plain


async def test_a_refused_idle_connection_makes_room_for_the_new_one() -> None:
    pool: ConnectionPool[FakeConnection] = ConnectionPool(per_destination=2, idle_seconds=60)
    plain = FakeConnection("plain", encrypted=False)
    async with pool.lease("mx", within=1) as lease:
        lease.keep(plain)

    async with pool.lease("mx", within=1) as lease:
        assert lease.take_idle(accept=lambda connection: connection.encrypted) is None
        assert pool.idle_count == 0

    await pool.aclose()
    assert plain.closed
