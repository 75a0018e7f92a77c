"""Stays: each stage change knows when the record left the stage, where it went, with what.

Revision ID: crmkit_0007
Revises: crmkit_0006
Create Date: 2026-11-23 06:10:00.000000

A row of ``stage_changes`` is a *stay*: the record entered ``to_stage`` at
``at``. Three columns close the stay when the record moves on: ``left_at``
(the ``at`` of the record's next change), ``next_stage`` (its ``to_stage``)
and ``stay_seconds`` (whole seconds from ``at`` to ``left_at``), and
``lost_reason`` when the move was into ``lost``; all are NULL while the
record is still in the stage. Two more carry what the
funnel adds up, so that it reads the history alone: ``deal_amount`` (the
deal's amount during the stay: at entry, then kept while the stay is open)
and ``deal_opened_at`` (when the deal was opened: its cohort). Both are NULL
on client stays.

The core fills them when it records a change (``crmkit.core.lifecycle``),
the importer when it writes a history, and this revision for the changes
already stored (the amount as the deal has it now). Four covering indexes
serve the funnel: stays by entry, by exit, by length, and the lost ones by reason.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crmkit.core.schema import UTCDateTime

revision: str = "crmkit_0007"
down_revision: str | Sequence[str] | None = "crmkit_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: whole seconds between two stored times, on each database
SECONDS = {
    "postgresql": "floor(extract(epoch from {b}))::bigint - floor(extract(epoch from {a}))::bigint",
    "sqlite": "CAST(strftime('%s', {b}) AS INTEGER) - CAST(strftime('%s', {a}) AS INTEGER)",
}

#: the funnel's covering indexes (see crmkit/plugins/analytics/funnel.py)
INDEXES = {
    "ix_stage_changes_stays_in": [
        *("pipeline", "to_stage", "at", "left_at", "next_stage"),
        *("deal_amount", "deal_opened_at", "entity_id"),
    ],
    "ix_stage_changes_stays_out": ["pipeline", "to_stage", "left_at", "stay_seconds", "at"],
    "ix_stage_changes_stay_seconds": ["pipeline", "to_stage", "stay_seconds", "left_at"],
    "ix_stage_changes_lost": [
        *("pipeline", "next_stage", "to_stage", "lost_reason", "at", "left_at")
    ],
}


def upgrade() -> None:
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("left_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("next_stage", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("stay_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("lost_reason", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("deal_amount", sa.Numeric(16, 2), nullable=True))
        batch_op.add_column(sa.Column("deal_opened_at", UTCDateTime(), nullable=True))
    bind = op.get_bind()
    seconds = SECONDS.get(bind.dialect.name, SECONDS["postgresql"]).format(
        a="stage_changes.at", b="n.left_at"
    )
    op.execute(
        f"""
        UPDATE stage_changes
        SET left_at = n.left_at, next_stage = n.next_stage, stay_seconds = {seconds}
        FROM (
          SELECT id, LEAD(at) OVER w AS left_at, LEAD(to_stage) OVER w AS next_stage
          FROM stage_changes
          WINDOW w AS (PARTITION BY entity, entity_id ORDER BY at, id)
        ) AS n
        WHERE n.id = stage_changes.id AND n.left_at IS NOT NULL
        """
    )
    op.execute(
        """
        UPDATE stage_changes
        SET deal_amount = d.amount, deal_opened_at = d.opened_at,
            lost_reason = CASE WHEN stage_changes.next_stage = 'lost' THEN d.lost_reason END
        FROM deals AS d
        WHERE stage_changes.entity = 'deal' AND d.id = stage_changes.entity_id
        """
    )
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns)
    with op.batch_alter_table("deals", schema=None) as batch_op:
        batch_op.create_index("ix_deals_pipeline_currency", ["pipeline", "currency"])


def downgrade() -> None:
    with op.batch_alter_table("deals", schema=None) as batch_op:
        batch_op.drop_index("ix_deals_pipeline_currency")
    with op.batch_alter_table("stage_changes", schema=None) as batch_op:
        for name in INDEXES:
            batch_op.drop_index(name)
        batch_op.drop_column("deal_opened_at")
        batch_op.drop_column("deal_amount")
        batch_op.drop_column("lost_reason")
        batch_op.drop_column("stay_seconds")
        batch_op.drop_column("next_stage")
        batch_op.drop_column("left_at")
