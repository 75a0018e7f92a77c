"""Plans: a KPI's target for a user or a team over a period (``crmkit plan set``).

Revision ID: crmkit_0008
Revises: crmkit_0007
Create Date: 2026-11-23 06:40:00.000000

One row per KPI, period and scope (a user or a team): setting the same plan
again replaces its target. ``split_from`` links a member's plan to the team
plan it was split from; ``user_id`` and ``team_id`` are what the access
policies read (the planned user, and the team of the plan or of that user).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crmkit.core.schema import UTCDateTime

revision: str = "crmkit_0008"
down_revision: str | Sequence[str] | None = "crmkit_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kpi", sa.String(length=63), nullable=False),
        sa.Column("period", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("scope_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.Numeric(16, 2), nullable=False),
        sa.Column("split_from", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_plans_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_plans_team_id_teams", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["split_from"], ["plans.id"], name="fk_plans_split_from_plans", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name="fk_plans_created_by_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
    )
    op.create_index(
        "uq_plans_kpi",
        "plans",
        ["kpi", "period_start", "period_end", "scope", "scope_id"],
        unique=True,
    )
    op.create_index("ix_plans_period_start", "plans", ["period_start", "period_end"])
    op.create_index("ix_plans_team_id", "plans", ["team_id"])
    op.create_index("ix_plans_user_id", "plans", ["user_id"])
    op.create_index("ix_plans_split_from", "plans", ["split_from"])


def downgrade() -> None:
    for name in ("ix_plans_split_from", "ix_plans_user_id", "ix_plans_team_id"):
        op.drop_index(name, table_name="plans")
    op.drop_index("ix_plans_period_start", table_name="plans")
    op.drop_index("uq_plans_kpi", table_name="plans")
    op.drop_table("plans")
