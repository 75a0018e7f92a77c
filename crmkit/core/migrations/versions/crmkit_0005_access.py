"""Access control: the audit log, read-quota counters, API tokens, owner indexes.

Revision ID: crmkit_0005
Revises: crmkit_0004
Create Date: 2026-11-23 03:00:00.000000

Three new tables (``audit_log``, ``access_reads``, ``api_tokens``). The
single-column owner indexes of ``clients`` and ``deals`` become
``(owner_id, id)``: a manager's newest-first page of clients is then one index
range on PostgreSQL as on SQLite (where every index already ends in the rowid);
``users.team_id`` gets an index for the policies of heads (users of their teams).
Indexes are created and dropped in place; no table is rebuilt.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crmkit.core.schema import JSONType, UTCDateTime

revision: str = "crmkit_0005"
down_revision: str | Sequence[str] | None = "crmkit_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("login", sa.String(length=100), nullable=True),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("resource", sa.String(length=50), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("record_ids", JSONType, nullable=True),
        sa.Column("detail", JSONType, nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_user_id_at", "audit_log", ["user_id", "at"])
    op.create_table(
        "access_reads",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_access_reads_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name="fk_access_reads_client_id_clients",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "day", "client_id", name="pk_access_reads"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_api_tokens_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    for table in ("clients", "deals"):
        op.create_index(f"ix_{table}_owner_id_id", table, ["owner_id", "id"])
        op.drop_index(f"ix_{table}_owner_id", table_name=table)
    op.create_index("ix_users_team_id", "users", ["team_id"])


def downgrade() -> None:
    op.drop_index("ix_users_team_id", table_name="users")
    for table in ("deals", "clients"):
        op.create_index(f"ix_{table}_owner_id", table, ["owner_id"])
        op.drop_index(f"ix_{table}_owner_id_id", table_name=table)
    op.drop_index("ix_api_tokens_user_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("access_reads")
    op.drop_index("ix_audit_log_user_id_at", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
