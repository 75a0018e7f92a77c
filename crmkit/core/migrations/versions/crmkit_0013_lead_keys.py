"""Add ``lead_keys``: the API keys of web lead forms (``POST /api/leads``), stored hashed.

Revision ID: crmkit_0013
Revises: crmkit_0012
Create Date: 2026-11-23 10:00:00.000000

A key is shown once, when ``crmkit lead key create`` makes it; the table
keeps only its SHA-256 (``key_hash``, unique), so a copy of the database
does not hand out working keys.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crmkit.core.schema import UTCDateTime

revision: str = "crmkit_0013"
down_revision: str | Sequence[str] | None = "crmkit_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lead_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name="fk_lead_keys_created_by_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_lead_keys"),
        sa.UniqueConstraint("key_hash", name="uq_lead_keys_key_hash"),
    )


def downgrade() -> None:
    op.drop_table("lead_keys")
