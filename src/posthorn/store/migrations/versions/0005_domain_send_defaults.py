"""domain send defaults

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:12:41.503117
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("track_opens", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("track_clicks", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("force_unsubscribe", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.drop_column("force_unsubscribe")
        batch_op.drop_column("track_clicks")
        batch_op.drop_column("track_opens")
