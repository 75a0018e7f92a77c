"""A client's potential: score and category, computed by its segment.

Revision ID: crmkit_0004
Revises: crmkit_0003
Create Date: 2026-11-23 01:00:00.000000

Both columns are nullable; existing cards get their potential when they are
next saved, or at once with ``crmkit segment rescore``. As in crmkit_0003,
the columns are added and dropped in place (no SQLite table rebuild, which
would cascade to the rows that refer to ``clients``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "crmkit_0004"
down_revision: str | Sequence[str] | None = "crmkit_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("clients", sa.Column("potential_score", sa.Float(), nullable=True))
    op.add_column("clients", sa.Column("potential_category", sa.String(length=8), nullable=True))
    op.create_index("ix_clients_potential_category", "clients", ["potential_category"])


def downgrade() -> None:
    op.drop_index("ix_clients_potential_category", table_name="clients")
    for column in ("potential_category", "potential_score"):
        op.execute(sa.text(f'ALTER TABLE "clients" DROP COLUMN "{column}"'))
