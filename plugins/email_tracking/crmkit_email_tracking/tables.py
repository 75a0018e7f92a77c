"""The plugin's tables: the outbox of proposal emails and their tracking events.

``email_outbox`` holds one row per message: who sends it to which client and
contact, the rendered subject and bodies, when to send it (``send_at``, for
scheduled sending) and its delivery state. ``token`` is the unguessable id
that the tracking pixel and the rewritten links carry.

``email_events`` is the history of what the recipient did: each open, click
or page view of a proposal, with its time and details (``data``: the URL
clicked, the page and seconds spent on it ...). Reports are computed from
these rows.

Both follow the core's conventions: timestamps are :class:`UTCDateTime`,
JSON is :data:`JSONType` (JSONB on PostgreSQL), constraint and index names
come from the metadata's naming convention. The Alembic revision
``email_tracking_0001`` creates exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from crmkit.core.schema import JSONType, UTCDateTime, utcnow

OUTBOX = "email_outbox"
EVENTS = "email_events"

#: The delivery states of a message in the outbox, in the order it passes them.
STATUSES: tuple[str, ...] = ("queued", "sending", "sent", "failed")
#: What a recipient can do with a message: open it, click a link, view a page.
EVENT_KINDS: tuple[str, ...] = ("open", "click", "page_view")


def define_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Define ``email_outbox`` and ``email_events`` on ``metadata`` and return them.

    ``metadata`` must already hold the core's ``clients``, ``contacts`` and
    ``users`` tables, which the outbox refers to.
    """
    outbox = Table(
        OUTBOX,
        metadata,
        Column("id", Integer, primary_key=True),
        Column(
            "client_id",
            Integer,
            ForeignKey("clients.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column(
            "contact_id",
            Integer,
            ForeignKey("contacts.id", ondelete="SET NULL"),
            nullable=True,
        ),
        # The sender; None for messages sent by an automation.
        Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("template", String(100), nullable=False),
        # 998 characters: the longest line RFC 5322 allows in a message header.
        Column("subject", String(998), nullable=False),
        Column("to_address", String(254), nullable=False),
        Column("body_html", Text, nullable=False),
        Column("body_text", Text, nullable=False),
        Column("send_at", UTCDateTime, nullable=False, default=utcnow),
        Column("status", String(20), nullable=False, default="queued"),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", Text, nullable=True),
        Column("token", String(64), nullable=False, unique=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
        Column("sent_at", UTCDateTime, nullable=True),
    )
    # The sender's query: the queued messages that are due, oldest first.
    Index("ix_email_outbox_status_send_at", outbox.c.status, outbox.c.send_at)
    events = Table(
        EVENTS,
        metadata,
        Column("id", Integer, primary_key=True),
        Column(
            "message_id",
            Integer,
            ForeignKey(f"{OUTBOX}.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("kind", String(20), nullable=False),
        Column("at", UTCDateTime, nullable=False, default=utcnow),
        Column("data", JSONType, nullable=False, default=dict),
    )
    return outbox, events
