"""The segment_b2b plugin's first table: b2b_needs, the needs-and-expectations cards.

Revision ID: segment_b2b_0001
Revises:
Depends on: crmkit_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "segment_b2b_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("segment_b2b",)
depends_on: str | Sequence[str] | None = "crmkit_0001"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "b2b_needs",
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_b2b_needs_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["updated_by"],
            ["users.id"],
            name=op.f("fk_b2b_needs_updated_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_b2b_needs")),
    )


def downgrade() -> None:
    op.drop_table("b2b_needs")
