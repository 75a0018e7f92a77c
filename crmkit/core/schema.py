"""The core's SQLAlchemy tables, on one :class:`~sqlalchemy.MetaData`.

Plugins add their own tables to the same metadata through the
``crmkit_tables`` hook (see :func:`build_metadata`). Timestamps are stored in
UTC and come back timezone-aware; JSON columns are JSONB on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:  # pragma: no cover
    from .plugins import Plugins

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime stored as UTC on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: crmkit stores timezone-aware times")
        value = value.astimezone(dt.UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


def seconds_between(dialect: str, start: Any, end: Any) -> Any:
    """SQL: whole seconds from ``start`` to ``end``, two stored times (or bound ones).

    Counted on the whole seconds of each time (``floor(end) - floor(start)``
    in Unix seconds), which is what SQLite's ``strftime('%s')`` gives, so both
    databases and :func:`whole_seconds` agree to the second.
    """
    from sqlalchemy import BigInteger, Integer, cast, extract

    if dialect == "postgresql":
        return cast(func.floor(extract("epoch", end)), BigInteger) - cast(
            func.floor(extract("epoch", start)), BigInteger
        )
    if _SQLITE_UNIXEPOCH:  # SQLite 3.38+: the same whole seconds, without a string between
        return func.unixepoch(end) - func.unixepoch(start)
    return cast(func.strftime("%s", end), Integer) - cast(func.strftime("%s", start), Integer)


def _sqlite_has_unixepoch() -> bool:
    import sqlite3

    return sqlite3.sqlite_version_info >= (3, 38, 0)


_SQLITE_UNIXEPOCH = _sqlite_has_unixepoch()


def whole_seconds(start: dt.datetime, end: dt.datetime) -> int:
    """Python's :func:`seconds_between`: whole seconds from ``start`` to ``end``."""
    return int(end.timestamp() // 1) - int(start.timestamp() // 1)


#: the funnel's indexes of ``stage_changes``: a large deal import drops them and creates
#: them again at its end (:mod:`crmkit.core.indexes`)
FUNNEL_INDEXES = (
    "ix_stage_changes_stays_in",
    "ix_stage_changes_stays_out",
    "ix_stage_changes_stay_seconds",
    "ix_stage_changes_lost",
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def core_metadata() -> MetaData:
    """A new MetaData holding the core's tables (and nothing else)."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    Table(
        "teams",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(200), nullable=False, unique=True),
        Column("parent_id", Integer, ForeignKey("teams.id", ondelete="RESTRICT"), nullable=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    )
    users = Table(
        "users",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("login", String(100), nullable=False, unique=True),
        Column("name", String(200), nullable=False),
        Column("role", String(20), nullable=False),
        Column("team_id", Integer, ForeignKey("teams.id", ondelete="SET NULL"), nullable=True),
        Column("active", Boolean, nullable=False, default=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    )
    # a head's policies look up the users of their teams (revision crmkit_0005)
    Index("ix_users_team_id", users.c.team_id)
    clients = Table(
        "clients",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("kind", String(20), nullable=False, default="company"),
        Column("name", String(300), nullable=False),
        Column("email", String(254), nullable=True),
        Column("phone", String(40), nullable=True),
        Column("requisites", JSONType, nullable=False, default=dict),
        Column("segment", String(100), nullable=True, index=True),
        Column("params", JSONType, nullable=False, default=dict),
        Column("owner_id", Integer, ForeignKey("users.id", ondelete="RESTRICT")),
        Column("source", String(100), nullable=True, index=True),
        Column("external_id", String(200), nullable=True, unique=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow, index=True),
        Column("updated_at", UTCDateTime, nullable=False, default=utcnow),
        Column("stage", String(63), nullable=True, index=True),  # the lifecycle stage
        # the potential its segment computes from a complete card (see Segment.potential)
        Column("potential_score", Float, nullable=True),
        Column("potential_category", String(8), nullable=True),
    )
    Index("uq_clients_email_lower", func.lower(clients.c.email), unique=True)
    # a manager's page of clients, newest first, is one index range (revision crmkit_0005)
    Index("ix_clients_owner_id_id", clients.c.owner_id, clients.c.id)
    Table(
        "contacts",
        metadata,
        Column("id", Integer, primary_key=True),
        Column(
            "client_id",
            Integer,
            ForeignKey("clients.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("name", String(300), nullable=False),
        Column("position", String(200), nullable=True),
        Column("email", String(254), nullable=True),
        Column("phone", String(40), nullable=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    )
    events = Table(
        "events",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("at", UTCDateTime, nullable=False, default=utcnow, index=True),
        Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("entity", String(50), nullable=False),
        Column("entity_id", Integer, nullable=False),
        Column("action", String(50), nullable=False),
        Column("data", JSONType, nullable=False, default=dict),
    )
    Index("ix_events_entity", events.c.entity, events.c.entity_id)
    _lifecycle_tables(metadata)
    _access_tables(metadata)
    costs = Table(
        "channel_costs",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("channel", String(100), nullable=False),
        Column("period_start", Date, nullable=False),
        Column("period_end", Date, nullable=False),  # excluded
        Column("period", String(40), nullable=False),  # as given: 2026-11, 2026-Q3 ...
        Column("amount", Numeric(16, 2), nullable=False),
        Column("currency", String(3), nullable=False),
        Column("note", Text, nullable=True),
        Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    )  # revision crmkit_0006
    Index(
        "uq_channel_costs_channel",
        costs.c.channel,
        costs.c.period_start,
        costs.c.period_end,
        costs.c.currency,
        unique=True,
    )
    _plan_tables(metadata)
    # indexes dropped for a bulk write, until they are created again (revision crmkit_0011)
    Table(
        "deferred_indexes",
        metadata,
        Column("name", String(200), primary_key=True),  # the index
        Column("table_name", String(200), nullable=False),
        Column("owner", String(32), nullable=False),  # a token of the work that dropped it
        Column("host", String(255), nullable=False),  # where that work runs ...
        Column("pid", Integer, nullable=False),  # ... and its process
        Column("since", UTCDateTime, nullable=False),
        Column("beat_at", UTCDateTime, nullable=False),  # its last sign of life
    )
    # what automation rules did: one row per rule and event (revision crmkit_0012)
    runs = Table(
        "automation_runs",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("rule", String(63), nullable=False),
        Column("event", String(63), nullable=False),
        Column("event_key", String(200), nullable=False),  # the occasion: interaction:42 ...
        Column("status", String(20), nullable=False),  # fired, failed, loop_limit
        Column("at", UTCDateTime, nullable=False, default=utcnow),
        Column("depth", Integer, nullable=False, default=1),
        Column("results", JSONType, nullable=False, default=list),
        Column("error", Text, nullable=True),
    )
    Index("uq_automation_runs_rule_event_key", runs.c.rule, runs.c.event_key, unique=True)
    Index("ix_automation_runs_at", runs.c.at)
    # the API keys of web lead forms (POST /api/leads), stored hashed (revision crmkit_0013)
    Table(
        "lead_keys",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(100), nullable=False),
        Column("key_hash", String(64), nullable=False, unique=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
        Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("last_used_at", UTCDateTime, nullable=True),
        Column("revoked_at", UTCDateTime, nullable=True),
    )
    return metadata


def _plan_tables(metadata: MetaData) -> None:
    """Plans: a KPI's target for a user or a team over a period (revision crmkit_0008).

    ``scope`` and ``scope_id`` say whose plan it is (a user's id or a team's);
    ``user_id`` and ``team_id`` are what the access policies read: the planned
    user (NULL for a team plan) and the team of the plan (the team itself, or
    the planned user's team when the plan was last set).
    """
    plans = Table(
        "plans",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("kpi", String(63), nullable=False),
        Column("period", String(40), nullable=False),  # as given: 2026-11, 2026-Q3 ...
        Column("period_start", Date, nullable=False),
        Column("period_end", Date, nullable=False),  # excluded
        Column("scope", String(10), nullable=False),  # "user" or "team"
        Column("scope_id", Integer, nullable=False),
        Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
        Column("team_id", Integer, ForeignKey("teams.id", ondelete="SET NULL"), nullable=True),
        Column("target", Numeric(16, 2), nullable=False),
        Column("split_from", Integer, ForeignKey("plans.id", ondelete="SET NULL"), nullable=True),
        Column("note", Text, nullable=True),
        Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
        Column("updated_at", UTCDateTime, nullable=False, default=utcnow),
    )
    Index(
        "uq_plans_kpi",
        *(plans.c.kpi, plans.c.period_start, plans.c.period_end, plans.c.scope, plans.c.scope_id),
        unique=True,
    )
    Index("ix_plans_period_start", plans.c.period_start, plans.c.period_end)
    Index("ix_plans_team_id", plans.c.team_id)
    Index("ix_plans_user_id", plans.c.user_id)
    Index("ix_plans_split_from", plans.c.split_from)


def _lifecycle_tables(metadata: MetaData) -> None:
    """Deals, their stage history, interactions, invoices, tasks (revisions crmkit_0002, _0003)."""
    deals = Table(
        "deals",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("client_id", Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
        Column("pipeline", String(63), nullable=False),
        Column("stage", String(63), nullable=False),
        Column("status", String(10), nullable=False, default="open"),
        Column("title", String(300), nullable=False),
        Column("amount", Numeric(16, 2), nullable=False, default=0),
        Column("currency", String(3), nullable=False),
        Column("owner_id", Integer, ForeignKey("users.id", ondelete="RESTRICT")),
        Column("expected_close", Date, nullable=True),
        Column("lost_reason", String(63), nullable=True),
        Column("opened_at", UTCDateTime, nullable=False, default=utcnow),
        Column("stage_entered_at", UTCDateTime, nullable=False, default=utcnow),
        Column("closed_at", UTCDateTime, nullable=True),
        Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("external_id", String(200), nullable=True),  # revision crmkit_0003
    )
    # a unique index rather than a UNIQUE constraint: SQLite adds it without rebuilding the
    # table (a rebuild would cascade to invoices and tasks); named by NAMING_CONVENTION["uq"]
    Index("uq_deals_external_id", deals.c.external_id, unique=True)
    Index("ix_deals_client_id", deals.c.client_id)
    Index("ix_deals_owner_id_id", deals.c.owner_id, deals.c.id)  # revision crmkit_0005
    Index("ix_deals_pipeline_stage", deals.c.pipeline, deals.c.stage)
    Index("ix_deals_pipeline_currency", deals.c.pipeline, deals.c.currency)  # crmkit_0007
    changes = Table(
        "stage_changes",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("entity", String(20), nullable=False),
        Column("entity_id", Integer, nullable=False),
        Column("pipeline", String(63), nullable=False),
        Column("from_stage", String(63), nullable=True),
        Column("to_stage", String(63), nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("cause", String(20), nullable=False),
        Column(
            "interaction_id",
            Integer,
            ForeignKey("interactions.id", ondelete="SET NULL"),
            nullable=True,
        ),
        Column("note", Text, nullable=True),
        # the stay closed by the record's next change (revision crmkit_0007)
        Column("left_at", UTCDateTime, nullable=True),
        Column("next_stage", String(63), nullable=True),
        Column("stay_seconds", Integer, nullable=True),
        Column("lost_reason", String(63), nullable=True),
        Column("deal_amount", Numeric(16, 2), nullable=True),
        Column("deal_opened_at", UTCDateTime, nullable=True),
    )
    Index("ix_stage_changes_entity", changes.c.entity, changes.c.entity_id, changes.c.at)
    c = changes.c  # the funnel's covering indexes: stays by entry, exit, length; losses
    Index(
        "ix_stage_changes_stays_in",
        *(c.pipeline, c.to_stage, c.at, c.left_at, c.next_stage),
        *(c.deal_amount, c.deal_opened_at, c.entity_id),
    )
    Index("ix_stage_changes_stays_out", c.pipeline, c.to_stage, c.left_at, c.stay_seconds, c.at)
    Index("ix_stage_changes_stay_seconds", c.pipeline, c.to_stage, c.stay_seconds, c.left_at)
    Index(
        "ix_stage_changes_lost",
        *(c.pipeline, c.next_stage, c.to_stage, c.lost_reason, c.at, c.left_at),
    )
    interactions = Table(
        "interactions",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("client_id", Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=False),
        Column("deal_id", Integer, ForeignKey("deals.id", ondelete="SET NULL"), nullable=True),
        Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("kind", String(63), nullable=False),
        Column("direction", String(10), nullable=True),
        Column("occurred_at", UTCDateTime, nullable=False),
        Column("duration_min", Integer, nullable=True),
        Column("topic", String(63), nullable=False),
        Column("outcome", String(63), nullable=False),
        Column("note", Text, nullable=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
        Column("external_id", String(200), nullable=True),  # revision crmkit_0003
    )
    Index("uq_interactions_external_id", interactions.c.external_id, unique=True)
    Index("ix_interactions_client_at", interactions.c.client_id, interactions.c.occurred_at)
    i = interactions.c  # covers what KPIs count (revision crmkit_0009)
    Index(
        "ix_interactions_user_at",
        *(i.user_id, i.occurred_at, i.kind, i.direction, i.topic, i.outcome, i.client_id),
    )
    Index("ix_interactions_deal_id", interactions.c.deal_id)
    Table(
        "interaction_respondents",
        metadata,
        Column(
            "interaction_id",
            Integer,
            ForeignKey("interactions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        Column(
            "contact_id", Integer, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    invoices = Table(
        "invoices",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("number", String(50), nullable=False, unique=True),
        Column("deal_id", Integer, ForeignKey("deals.id", ondelete="CASCADE"), nullable=False),
        Column("amount", Numeric(16, 2), nullable=False),
        Column("currency", String(3), nullable=False),
        Column("status", String(10), nullable=False),
        Column("issued_at", UTCDateTime, nullable=False),
        Column("paid_at", UTCDateTime, nullable=True),
        Column("cancelled_at", UTCDateTime, nullable=True),
        Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    Index("ix_invoices_deal_id", invoices.c.deal_id)
    tasks = Table(
        "tasks",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("title", String(300), nullable=False),
        Column("steps", JSONType, nullable=False, default=list),
        Column("assignee_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        Column("client_id", Integer, ForeignKey("clients.id", ondelete="CASCADE"), nullable=True),
        Column("deal_id", Integer, ForeignKey("deals.id", ondelete="CASCADE"), nullable=True),
        Column("due_at", UTCDateTime, nullable=False),
        Column("done_at", UTCDateTime, nullable=True),
        Column("done_late", Boolean, nullable=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    )
    Index("ix_tasks_assignee_due", tasks.c.assignee_id, tasks.c.due_at)
    Index("ix_tasks_deal_id", tasks.c.deal_id)
    Index("ix_tasks_client_id", tasks.c.client_id)


def _access_tables(metadata: MetaData) -> None:
    """The audit log, read quotas' counters and API tokens (revision crmkit_0005).

    ``audit_log`` has no foreign keys on purpose: an entry is never changed
    after it is written (its hash covers every column), so deleting a user
    must not rewrite it.
    """
    audit = Table(
        "audit_log",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("at", UTCDateTime, nullable=False),
        Column("user_id", Integer, nullable=True),
        Column("login", String(100), nullable=True),
        Column("kind", String(10), nullable=False),  # "access" or "change"
        Column("action", String(50), nullable=False),
        Column("resource", String(50), nullable=False),
        Column("allowed", Boolean, nullable=False),
        Column("record_ids", JSONType, nullable=True),
        Column("detail", JSONType, nullable=False, default=dict),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
    )
    Index("ix_audit_log_at", audit.c.at)
    Index("ix_audit_log_user_id_at", audit.c.user_id, audit.c.at)
    Table(
        "access_reads",
        metadata,
        Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        Column("day", Date, primary_key=True),
        Column(
            "client_id", Integer, ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    tokens = Table(
        "api_tokens",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        Column("name", String(100), nullable=False),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("created_at", UTCDateTime, nullable=False, default=utcnow),
        Column("expires_at", UTCDateTime, nullable=True),
        Column("last_used_at", UTCDateTime, nullable=True),
        Column("revoked_at", UTCDateTime, nullable=True),
    )
    Index("ix_api_tokens_user_id", tokens.c.user_id)


def build_metadata(plugins: Plugins | None = None) -> MetaData:
    """The core's tables plus every plugin's (``crmkit_tables`` hook)."""
    metadata = core_metadata()
    if plugins is not None:
        plugins.tables(metadata)
    return metadata


__all__ = [
    "FUNNEL_INDEXES",
    "NAMING_CONVENTION",
    "JSONType",
    "Text",
    "UTCDateTime",
    "build_metadata",
    "core_metadata",
]
