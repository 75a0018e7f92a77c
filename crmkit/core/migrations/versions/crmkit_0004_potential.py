"""A client's potential: score and category, computed by its segment.

Revision ID: crmkit_0004
Revises: crmkit_0003
Create Date: 2026-11-23 01:00:00.000000

Both columns are nullable; existing cards get their potential when they are
next saved, or at once with ``crmkit segment rescore``. As in crmkit_0003,
the columns are added and dropped in place (no SQLite table rebuild, which
would cascade to the rows that refer to ``clients``). The category has no
index: three values do not narrow a search, and every bulk import would pay
for it (16% of the 1M-client benchmark).
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


def downgrade() -> None:
    for column in ("potential_category", "potential_score"):
        op.execute(sa.text(f'ALTER TABLE "clients" DROP COLUMN "{column}"'))
