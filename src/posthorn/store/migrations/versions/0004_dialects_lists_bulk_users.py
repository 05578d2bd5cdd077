"""dialects lists bulk users

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 19:16:55.090889
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import posthorn.store.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "numeric_ids",
        sa.Column(
            "num_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("ref_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("num_id", name=op.f("pk_numeric_ids")),
        sa.UniqueConstraint("kind", "ref_id", name="uq_numeric_ids_ref"),
    )
    op.create_table(
        "bulk_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("list_id", sa.String(length=40), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("next_run_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.String(length=36), nullable=True),
        sa.Column("created_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_bulk_jobs_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_jobs")),
    )
    with op.batch_alter_table("bulk_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_bulk_jobs_account", ["account_id", "created_at"], unique=False)
        batch_op.create_index("ix_bulk_jobs_due", ["next_run_at"], unique=False)

    op.create_table(
        "lists",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_lists_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lists")),
    )
    with op.batch_alter_table("lists", schema=None) as batch_op:
        batch_op.create_index("ix_lists_account", ["account_id", "created_at"], unique=False)

    op.create_table(
        "send_configs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("display", sa.String(length=40), nullable=False),
        sa.Column("template_id", sa.String(length=40), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("addresser", sa.String(length=320), nullable=True),
        sa.Column("ip_allowlist", sa.JSON(), nullable=True),
        sa.Column("track_opens", sa.Integer(), nullable=False),
        sa.Column("track_clicks", sa.Integer(), nullable=False),
        sa.Column("unsubscribe", sa.Integer(), nullable=False),
        sa.Column("created_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_send_configs_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_send_configs")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_send_configs_key_hash")),
    )
    with op.batch_alter_table("send_configs", schema=None) as batch_op:
        batch_op.create_index("ix_send_configs_account", ["account_id"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_users_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "bulk_recipients",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("email_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["bulk_jobs.id"],
            name=op.f("fk_bulk_recipients_job_id_bulk_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_recipients")),
    )
    with op.batch_alter_table("bulk_recipients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bulk_recipients_job", ["job_id", "status", "position"], unique=False
        )

    op.create_table(
        "contacts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("list_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["lists.id"], name=op.f("fk_contacts_list_id_lists"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("list_id", "email", name="uq_contacts_list_email"),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index("ix_contacts_account_email", ["account_id", "email"], unique=False)

    op.create_table(
        "refresh_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("expires_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("used_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", posthorn.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_refresh_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_refresh_tokens")),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_refresh_tokens_family", ["family"], unique=False)

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("default_sender", sa.String(length=320), nullable=True))
        batch_op.add_column(
            sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("timezone")
        batch_op.drop_column("default_sender")

    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_refresh_tokens_family")

    op.drop_table("refresh_tokens")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_account_email")

    op.drop_table("contacts")
    with op.batch_alter_table("bulk_recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_bulk_recipients_job")

    op.drop_table("bulk_recipients")
    op.drop_table("users")
    with op.batch_alter_table("send_configs", schema=None) as batch_op:
        batch_op.drop_index("ix_send_configs_account")

    op.drop_table("send_configs")
    with op.batch_alter_table("lists", schema=None) as batch_op:
        batch_op.drop_index("ix_lists_account")

    op.drop_table("lists")
    with op.batch_alter_table("bulk_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_bulk_jobs_due")
        batch_op.drop_index("ix_bulk_jobs_account")

    op.drop_table("bulk_jobs")
    op.drop_table("numeric_ids")
