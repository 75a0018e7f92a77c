"""The plugin's table: ``b2b_needs``, one needs-and-expectations card per client.

``data`` holds the card's values (BANT plus the segment's own fields, as the
segment's ``needs`` schema describes them). The Alembic revision
``segment_b2b_0001`` creates exactly this table.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table

from crmkit.core.schema import JSONType, UTCDateTime, utcnow

NEEDS = "b2b_needs"


def define_tables(metadata: MetaData) -> None:
    """Add ``b2b_needs`` to ``metadata`` (once)."""
    if NEEDS in metadata.tables:
        return
    Table(
        NEEDS,
        metadata,
        Column(
            "client_id", Integer, ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
        ),
        Column("data", JSONType, nullable=False, default=dict),
        Column("updated_at", UTCDateTime, nullable=False, default=utcnow),
        Column("updated_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
