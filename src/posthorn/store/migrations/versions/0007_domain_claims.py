"""domain claims: several accounts may claim a name, one verified owner

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 21:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_VERIFIED = sa.text("status = 'verified'")


def upgrade() -> None:
    # A name was unique across all accounts, so whoever registered it first (without proving
    # anything) held it. Now each account claims a name once, and at most one claim of a
    # name is verified: the partial unique index is what settles two verifications at once.
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.drop_constraint("uq_domains_name", type_="unique")
        batch_op.drop_index("ix_domains_account")
        batch_op.create_index("ix_domains_account", ["account_id", "name"], unique=True)
    op.create_index(
        "uq_domains_verified_name",
        "domains",
        ["name"],
        unique=True,
        sqlite_where=_VERIFIED,
        postgresql_where=_VERIFIED,
    )


def downgrade() -> None:
    # Fails while two accounts claim the same name, as it must: one of them has to go first.
    op.drop_index("uq_domains_verified_name", table_name="domains")
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.drop_index("ix_domains_account")
        batch_op.create_index("ix_domains_account", ["account_id", "name"], unique=False)
        batch_op.create_unique_constraint("uq_domains_name", ["name"])
