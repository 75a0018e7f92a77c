"""The per-user index of interactions covers what KPIs count.

Revision ID: crmkit_0009
Revises: crmkit_0008
Create Date: 2026-11-23 07:00:00.000000

``ix_interactions_user_at`` (user, time) becomes (user, time, kind,
direction, topic, outcome, client): the KPI run and the activity report
read an interaction's kind and outcome from the index instead of the table
(on 1,000,000 interactions, the KPI statement over interactions went from
about 5 s to 0.5 s on SQLite). Queries by user and time use it as before.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "crmkit_0009"
down_revision: str | Sequence[str] | None = "crmkit_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COVERED = ["user_id", "occurred_at", "kind", "direction", "topic", "outcome", "client_id"]


def upgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_interactions_user_at")
        batch_op.create_index("ix_interactions_user_at", COVERED, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("interactions", schema=None) as batch_op:
        batch_op.drop_index("ix_interactions_user_at")
        batch_op.create_index("ix_interactions_user_at", ["user_id", "occurred_at"], unique=False)
