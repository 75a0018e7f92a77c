"""Add ``deferred_indexes``: the indexes a bulk write dropped, until it creates them again.

Revision ID: crmkit_0011
Revises: crmkit_0010
Create Date: 2026-11-23 09:00:00.000000

A large deal import drops the funnel's four indexes of ``stage_changes``
(inserting 500,000 changes takes 41 s with them, 7.4 s when they are dropped
and created again after) and lists them here, in the same transaction. It
creates them again and deletes its rows at its end, again in one
transaction; if it is killed in between, the next session (or ``crmkit db
upgrade``) finds rows whose process is gone and creates the indexes (see
:mod:`crmkit.core.indexes`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crmkit.core.schema import UTCDateTime

revision: str = "crmkit_0011"
down_revision: str | Sequence[str] | None = "crmkit_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deferred_indexes",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("table_name", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("beat_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_deferred_indexes"),
    )


def downgrade() -> None:
    op.drop_table("deferred_indexes")
