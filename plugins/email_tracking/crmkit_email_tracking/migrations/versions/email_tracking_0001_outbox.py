"""The email_tracking plugin's first tables: email_outbox and email_events.

Revision ID: email_tracking_0001
Revises:
Depends on: crmkit_0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "email_tracking_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("email_tracking",)
depends_on: str | Sequence[str] | None = "crmkit_0001"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "email_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(998), nullable=False),
        sa.Column("to_address", sa.String(254), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("send_at", TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_email_outbox_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_email_outbox_contact_id_contacts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_outbox_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_outbox")),
        sa.UniqueConstraint("token", name=op.f("uq_email_outbox_token")),
    )
    op.create_index(op.f("ix_email_outbox_client_id"), "email_outbox", ["client_id"])
    op.create_index("ix_email_outbox_status_send_at", "email_outbox", ["status", "send_at"])
    op.create_table(
        "email_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["email_outbox.id"],
            name=op.f("fk_email_events_message_id_email_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_events")),
    )
    op.create_index(op.f("ix_email_events_message_id"), "email_events", ["message_id"])


def downgrade() -> None:
    op.drop_table("email_events")
    op.drop_table("email_outbox")
