"""deliveries queue index, for /metrics

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 21:30:00.000000

Counting deliveries by status over the whole table cost a scan of every delivery ever made
at each scrape. This partial index holds only the unfinished ones (``next_attempt_at`` set),
so ``/metrics`` counts the queue with an index-only scan as long as the backlog.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

QUEUED = sa.text("next_attempt_at IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_queue",
        "deliveries",
        ["status", "next_attempt_at"],
        sqlite_where=QUEUED,
        postgresql_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_queue", table_name="deliveries")
