"""domains, dkim keys, senders, quotas, log columns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 18:56:27.434483
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import posthorn.store.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_counters",
        sa.Column("scope", sa.String(length=60), nullable=False),
        sa.Column("window", sa.String(length=12), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "window", name=op.f("pk_usage_counters")),
    )
    op.create_table(
        "domains",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("records", sa.JSON(), nullable=False),
        sa.Column("daily_limit", sa.Integer(), nullable=True),
        sa.Column("hourly_limit", sa.Integer(), nullable=True),
        sa.Column("monthly_limit", sa.Integer(), nullable=True),
        sa.Column("plan", sa.String(length=40), nullable=True),
        sa.Column("ed25519", sa.Integer(), nullable=False),
        sa.Column("verified_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("checked_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_domains_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domains")),
        sa.UniqueConstraint("name", name=op.f("uq_domains_name")),
    )
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.create_index("ix_domains_account", ["account_id", "name"], unique=False)

    op.create_table(
        "dkim_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("domain_id", sa.String(length=40), nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("algorithm", sa.String(length=20), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_dkim_keys_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dkim_keys")),
    )
    with op.batch_alter_table("dkim_keys", schema=None) as batch_op:
        batch_op.create_index("ix_dkim_keys_domain", ["domain_id", "state"], unique=False)

    op.create_table(
        "senders",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("domain_id", sa.String(length=40), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        sa.Column("daily_limit", sa.Integer(), nullable=False),
        sa.Column("hourly_limit", sa.Integer(), nullable=False),
        sa.Column("created_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_senders_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_senders_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_senders")),
        sa.UniqueConstraint("address", name=op.f("uq_senders_address")),
    )
    with op.batch_alter_table("senders", schema=None) as batch_op:
        batch_op.create_index("ix_senders_account", ["account_id", "created_at"], unique=False)

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ip_allowlist", sa.JSON(), nullable=True))

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sender", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("source", sa.String(length=10), nullable=True))
        batch_op.create_index(
            "ix_events_account_recipient", ["account_id", "recipient", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_events_account_sender", ["account_id", "sender", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_events_account_type", ["account_id", "type", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_account_type")
        batch_op.drop_index("ix_events_account_sender")
        batch_op.drop_index("ix_events_account_recipient")
        batch_op.drop_column("source")
        batch_op.drop_column("sender")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("ip_allowlist")

    with op.batch_alter_table("senders", schema=None) as batch_op:
        batch_op.drop_index("ix_senders_account")

    op.drop_table("senders")
    with op.batch_alter_table("dkim_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_dkim_keys_domain")

    op.drop_table("dkim_keys")
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.drop_index("ix_domains_account")

    op.drop_table("domains")
    op.drop_table("usage_counters")
