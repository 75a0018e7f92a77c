"""What each marketing channel cost per period (``crmkit channel cost``).

Revision ID: crmkit_0006
Revises: crmkit_0005
Create Date: 2026-11-23 04:10:00.000000

One row per channel, period and currency: recording the same period again
replaces its amount. The channels report spreads a period's cost over its
days to charge the part that falls in the period asked for.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crmkit.core.schema import UTCDateTime

revision: str = "crmkit_0006"
down_revision: str | Sequence[str] | None = "crmkit_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_costs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("period", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.Numeric(16, 2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name="fk_channel_costs_created_by_users",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_channel_costs"),
    )
    op.create_index(
        "uq_channel_costs_channel",
        "channel_costs",
        ["channel", "period_start", "period_end", "currency"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_channel_costs_channel", table_name="channel_costs")
    op.drop_table("channel_costs")
