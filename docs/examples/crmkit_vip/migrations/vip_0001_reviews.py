"""crmkit-vip: the vip_reviews table.

Revision ID: vip_0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "vip_0001"
down_revision: str | Sequence[str] | None = None  # the first revision of its own branch
branch_labels: str | Sequence[str] | None = ("vip",)
depends_on: str | Sequence[str] | None = "crmkit_0001"  # the core revision that creates clients


def upgrade() -> None:
    op.create_table(
        "vip_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_vip_reviews_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vip_reviews")),
    )
    op.create_index(op.f("ix_vip_reviews_client_id"), "vip_reviews", ["client_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_vip_reviews_client_id"), table_name="vip_reviews")
    op.drop_table("vip_reviews")
