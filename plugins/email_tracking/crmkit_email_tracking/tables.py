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
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
    text,
)

from crmkit.core.schema import JSONType, UTCDateTime, utcnow

OUTBOX = "email_outbox"
EVENTS = "email_events"
VIEWS = "email_views"
PAGE_TIME = "email_page_time"
DOCUMENTS = "email_documents"
KEYS = "email_keys"

#: The delivery states of a message in the outbox, in the order it passes them.
STATUSES: tuple[str, ...] = ("queued", "sending", "sent", "failed")
#: What a recipient can do with a message: open it, click a link, view a page.
EVENT_KINDS: tuple[str, ...] = ("open", "click", "page_view")
#: Who caused an event: a person, or one of the machines that fetch mail content.
CLASSIFICATIONS: tuple[str, ...] = ("human", "apple_mpp", "gmail_proxy", "scanner", "bot")


def define_tables(metadata: MetaData) -> tuple[Table, ...]:
    """Define the plugin's tables on ``metadata`` and return them.

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
        # -- email_tracking_0002 --
        # The deal the message is about (its owner is notified of opens).
        Column("deal_id", Integer, ForeignKey("deals.id", ondelete="SET NULL"), nullable=True),
        Column("from_address", String(254), nullable=True),
        # The links of the message, by index: a tracked click redirects to links[i].
        Column("links", JSONType, nullable=False, default=list, server_default=text("'[]'")),
        # The name of the document hosted with the message (``proposal``), if any.
        Column("document", String(100), nullable=True),
        # The Message-ID header it was sent with.
        Column("rfc_message_id", String(255), nullable=True),
        # Which worker holds a message in ``sending``, since when (stale claims are taken over).
        Column("claimed_by", String(100), nullable=True),
        Column("claimed_at", UTCDateTime, nullable=True),
        # The ``email`` interaction logged when it was sent.
        Column(
            "interaction_id",
            Integer,
            ForeignKey("interactions.id", ondelete="SET NULL"),
            nullable=True,
        ),
        # The first open that counts (a person's), and the last notification of the owner.
        Column("opened_at", UTCDateTime, nullable=True),
        Column("notified_at", UTCDateTime, nullable=True),
        # The first reading of the hosted document that counts (its owner was told).
        Column("read_at", UTCDateTime, nullable=True),
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
        # -- email_tracking_0002 --
        # human, apple_mpp, gmail_proxy, scanner or bot; the reasons are in data["reasons"].
        Column(
            "classification",
            String(20),
            nullable=False,
            default="human",
            server_default="human",
        ),
        # Whether it counts as the recipient's own (human, gmail_proxy).
        Column("counted", Boolean, nullable=False, default=False, server_default=false()),
        Column("link", Integer, nullable=True),
        Column("page", Integer, nullable=True),
        Column("view_id", Integer, ForeignKey(f"{VIEWS}.id", ondelete="CASCADE"), nullable=True),
    )
    views = Table(
        VIEWS,
        metadata,
        Column("id", Integer, primary_key=True),
        Column(
            "message_id",
            Integer,
            ForeignKey(f"{OUTBOX}.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("started_at", UTCDateTime, nullable=False, default=utcnow),
        Column("expires_at", UTCDateTime, nullable=False),
        # The sequence number of the last heartbeat taken (a replay is not counted twice).
        Column("last_seq", Integer, nullable=False, default=0),
        Column("last_beat_at", UTCDateTime, nullable=True),
        Column("classification", String(20), nullable=False, default="human"),
        Column("data", JSONType, nullable=False, default=dict),
    )
    page_time = Table(
        PAGE_TIME,
        metadata,
        Column("view_id", Integer, ForeignKey(f"{VIEWS}.id", ondelete="CASCADE"), nullable=False),
        Column("page", Integer, nullable=False),
        Column(
            "message_id",
            Integer,
            ForeignKey(f"{OUTBOX}.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("seconds", Float, nullable=False, default=0.0),
        Column("beats", Integer, nullable=False, default=0),
        PrimaryKeyConstraint("view_id", "page"),
    )
    documents = Table(
        DOCUMENTS,
        metadata,
        Column(
            "message_id",
            Integer,
            ForeignKey(f"{OUTBOX}.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column("name", String(100), nullable=False),
        Column("title", String(300), nullable=False),
        Column("html", Text, nullable=False),
        Column("pages", Integer, nullable=False, default=1),
    )
    keys = Table(
        KEYS,
        metadata,
        # The key id carried by every token signed with it.
        Column("kid", Integer, primary_key=True, autoincrement=False),
        Column("secret", String(64), nullable=False),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    )
    return outbox, events, views, page_time, documents, keys
