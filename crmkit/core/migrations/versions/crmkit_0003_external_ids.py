"""External ids of deals and interactions (for idempotent imports from other systems).

Revision ID: crmkit_0003
Revises: crmkit_0002
Create Date: 2026-11-22 22:45:00.000000

Both columns are nullable and unique (a unique index, named like a unique
constraint by the naming convention). On SQLite, ``batch_alter_table`` adds
the column and the index in place: no table is rebuilt. A rebuild would drop
and recreate ``deals`` and ``interactions``, and with foreign keys on, dropping
them cascades to invoices, tasks and respondents. The downgrade drops the
column in place too (``ALTER TABLE ... DROP COLUMN``, SQLite 3.35+), for the
same reason.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "crmkit_0003"
down_revision: str | Sequence[str] | None = "crmkit_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("deals", "interactions")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("external_id", sa.String(length=200), nullable=True))
            batch_op.create_index(f"uq_{table}_external_id", ["external_id"], unique=True)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"uq_{table}_external_id")
        if sqlite:  # in place: a batch rebuild would cascade to the rows that refer to the table
            op.execute(sa.text(f'ALTER TABLE "{table}" DROP COLUMN "external_id"'))
        else:
            op.drop_column(table, "external_id")
