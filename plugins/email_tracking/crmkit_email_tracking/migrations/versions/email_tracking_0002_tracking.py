"""Sending and tracking: the deal, links and claims of a message, classified events,
reading sessions with the time per page, hosted documents and signing keys.

Revision ID: email_tracking_0002
Revises: email_tracking_0001
Depends on: crmkit_0002 (deals, interactions)
Create Date: 2026-11-23
"""

import datetime as dt
import secrets
import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "email_tracking_0002"
down_revision: str | Sequence[str] | None = "email_tracking_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "crmkit_0002"

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # The batch copies of email_outbox and email_events (SQLite alters constraints no
    # other way) reflect the tables they refer to; clients' expression index is beyond
    # SQLAlchemy's reflection, which would warn at every crmkit init.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
        _upgrade()


def _upgrade() -> None:
    op.create_table(
        "email_views",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_beat_at", TIMESTAMP, nullable=True),
        sa.Column("classification", sa.String(20), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["email_outbox.id"],
            name=op.f("fk_email_views_message_id_email_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_views")),
    )
    op.create_index(op.f("ix_email_views_message_id"), "email_views", ["message_id"])
    op.create_table(
        "email_page_time",
        sa.Column("view_id", sa.Integer(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("beats", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["view_id"],
            ["email_views.id"],
            name=op.f("fk_email_page_time_view_id_email_views"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["email_outbox.id"],
            name=op.f("fk_email_page_time_message_id_email_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("view_id", "page", name=op.f("pk_email_page_time")),
    )
    op.create_index(op.f("ix_email_page_time_message_id"), "email_page_time", ["message_id"])
    op.create_table(
        "email_documents",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["email_outbox.id"],
            name=op.f("fk_email_documents_message_id_email_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_email_documents")),
    )
    keys = op.create_table(
        "email_keys",
        sa.Column("kid", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_email_keys")),
    )
    # The deployment's first signing key: made here, so that signing never has to write.
    op.bulk_insert(
        keys,
        [
            {
                "kid": 1,
                "secret": secrets.token_hex(32),
                "created_at": dt.datetime.now(dt.UTC),
            }
        ],
    )
    with op.batch_alter_table("email_outbox") as batch:
        batch.add_column(sa.Column("deal_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("from_address", sa.String(254), nullable=True))
        batch.add_column(sa.Column("links", JSON, nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("document", sa.String(100), nullable=True))
        batch.add_column(sa.Column("rfc_message_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("claimed_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("interaction_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("opened_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("notified_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("read_at", TIMESTAMP, nullable=True))
        batch.create_foreign_key(
            op.f("fk_email_outbox_deal_id_deals"),
            "deals",
            ["deal_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_foreign_key(
            op.f("fk_email_outbox_interaction_id_interactions"),
            "interactions",
            ["interaction_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("email_events") as batch:
        batch.add_column(
            sa.Column("classification", sa.String(20), nullable=False, server_default="human")
        )
        batch.add_column(
            sa.Column("counted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("link", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("page", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("view_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_email_events_view_id_email_views"),
            "email_views",
            ["view_id"],
            ["id"],
            ondelete="CASCADE",
        )
    # Events before this revision were opens and clicks nobody classified: count them.
    op.execute("UPDATE email_events SET counted = TRUE")


def downgrade() -> None:
    with warnings.catch_warnings():  # as in upgrade()
        warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
        _downgrade()


def _downgrade() -> None:
    with op.batch_alter_table("email_events") as batch:
        batch.drop_constraint(op.f("fk_email_events_view_id_email_views"), type_="foreignkey")
        for name in ("view_id", "page", "link", "counted", "classification"):
            batch.drop_column(name)
    with op.batch_alter_table("email_outbox") as batch:
        batch.drop_constraint(
            op.f("fk_email_outbox_interaction_id_interactions"), type_="foreignkey"
        )
        batch.drop_constraint(op.f("fk_email_outbox_deal_id_deals"), type_="foreignkey")
        for name in (
            "read_at",
            "notified_at",
            "opened_at",
            "interaction_id",
            "claimed_at",
            "claimed_by",
            "rfc_message_id",
            "document",
            "links",
            "from_address",
            "deal_id",
        ):
            batch.drop_column(name)
    op.drop_table("email_keys")
    op.drop_table("email_documents")
    op.drop_index(op.f("ix_email_page_time_message_id"), table_name="email_page_time")
    op.drop_table("email_page_time")
    op.drop_index(op.f("ix_email_views_message_id"), table_name="email_views")
    op.drop_table("email_views")
