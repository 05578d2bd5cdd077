"""login failures shared by every process

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 21:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "client", "bucket", name=op.f("pk_login_failures")),
    )
    op.create_index("ix_login_failures_bucket", "login_failures", ["scope", "bucket"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_login_failures_bucket", table_name="login_failures")
    op.drop_table("login_failures")
