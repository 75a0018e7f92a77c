"""Add ``automation_runs``: what each automation rule did, once per rule and event.

Revision ID: crmkit_0012
Revises: crmkit_0011
Create Date: 2026-11-23 09:30:00.000000

The unique index on ``(rule, event_key)`` is what makes a rule fire at most
once per event, however many times the event is raised again (a rerun, a
retry, a second scheduler).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from crmkit.core.schema import UTCDateTime

revision: str = "crmkit_0012"
down_revision: str | Sequence[str] | None = "crmkit_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "automation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=63), nullable=False),
        sa.Column("event", sa.String(length=63), nullable=False),
        sa.Column("event_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("results", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_automation_runs"),
    )
    op.create_index(
        "uq_automation_runs_rule_event_key", "automation_runs", ["rule", "event_key"], unique=True
    )
    op.create_index("ix_automation_runs_at", "automation_runs", ["at"])


def downgrade() -> None:
    op.drop_index("ix_automation_runs_at", table_name="automation_runs")
    op.drop_index("uq_automation_runs_rule_event_key", table_name="automation_runs")
    op.drop_table("automation_runs")
