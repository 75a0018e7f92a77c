"""The plugin's tables in a new deployment: created by its migration, as declared."""

from __future__ import annotations

import datetime as dt
from typing import Any

import crmkit_email_tracking
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, delete, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from crmkit import CRM, Session
from crmkit.core.schema import build_metadata

PLUGIN_TABLES = {
    "email_outbox",
    "email_events",
    "email_views",
    "email_page_time",
    "email_documents",
    "email_keys",
}


def only_plugin_tables(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
    """An alembic ``include_object`` filter: compare the plugin's tables only."""
    table = obj if type_ == "table" else obj.table
    return table.name in PLUGIN_TABLES


def only_plugin_names(name: str | None, type_: str, parents: dict[str, Any]) -> bool:
    """An alembic ``include_name`` filter: reflect the plugin's tables only."""
    return type_ != "table" or name in PLUGIN_TABLES


def schema_diff(crm: CRM, metadata: MetaData | None = None) -> list[Any]:
    """What alembic would change in ``crm``'s database to match the plugin's tables.

    The tables are taken from ``metadata`` (default: ``crm.metadata``).
    """
    with crm.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": only_plugin_names,
                "include_object": only_plugin_tables,
            },
        )
        return list(compare_metadata(ctx, crm.metadata if metadata is None else metadata))


def message(session: Session, client_id: int, **values: Any) -> int:
    """Insert an outbox row with the required columns filled; return its id."""
    row = {
        "client_id": client_id,
        "template": "proposal",
        "subject": "Our proposal",
        "to_address": "buyer@acme.example",
        "body_html": "<p>Hello</p>",
        "body_text": "Hello",
        "token": "tok-" + str(values.pop("n", 1)),
        **values,
    }
    outbox = session.table("email_outbox")
    return int(
        session.connection.execute(insert(outbox).values(row).returning(outbox.c.id)).scalar_one()
    )


def test_tables_are_on_the_metadata(crm: CRM) -> None:
    assert set(crm.metadata.tables) >= PLUGIN_TABLES


def test_new_deployment_has_both_tables(crm: CRM) -> None:
    with crm.connect() as conn:
        db = inspect(conn)
        assert set(db.get_table_names()) >= PLUGIN_TABLES
        outbox = {c["name"]: c for c in db.get_columns("email_outbox")}
        events = {c["name"] for c in db.get_columns("email_events")}
        fks = {fk["name"]: fk for fk in db.get_foreign_keys("email_outbox")}
        indexes = {ix["name"]: ix["column_names"] for ix in db.get_indexes("email_outbox")}
        uniques = {
            uq["name"]: uq["column_names"] for uq in db.get_unique_constraints("email_outbox")
        }
        event_fks = db.get_foreign_keys("email_events")
        event_indexes = {ix["name"]: ix["column_names"] for ix in db.get_indexes("email_events")}
    assert list(outbox) == [
        "id",
        "client_id",
        "contact_id",
        "user_id",
        "template",
        "subject",
        "to_address",
        "body_html",
        "body_text",
        "send_at",
        "status",
        "attempts",
        "last_error",
        "token",
        "created_at",
        "sent_at",
        "deal_id",
        "from_address",
        "links",
        "document",
        "rfc_message_id",
        "claimed_by",
        "claimed_at",
        "interaction_id",
        "opened_at",
        "notified_at",
        "read_at",
    ]
    nullable = {name for name, col in outbox.items() if col["nullable"]}
    assert nullable == {
        "contact_id",
        "user_id",
        "last_error",
        "sent_at",
        "deal_id",
        "from_address",
        "document",
        "rfc_message_id",
        "claimed_by",
        "claimed_at",
        "interaction_id",
        "opened_at",
        "notified_at",
        "read_at",
    }
    assert events == {
        "id",
        "message_id",
        "kind",
        "at",
        "data",
        "classification",
        "counted",
        "link",
        "page",
        "view_id",
    }
    assert fks["fk_email_outbox_client_id_clients"]["options"].get("ondelete") == "CASCADE"
    assert fks["fk_email_outbox_contact_id_contacts"]["options"].get("ondelete") == "SET NULL"
    assert fks["fk_email_outbox_user_id_users"]["referred_table"] == "users"
    assert indexes["ix_email_outbox_status_send_at"] == ["status", "send_at"]
    assert indexes["ix_email_outbox_client_id"] == ["client_id"]
    assert uniques == {"uq_email_outbox_token": ["token"]}
    assert fks["fk_email_outbox_deal_id_deals"]["options"].get("ondelete") == "SET NULL"
    assert sorted(
        (fk["name"], fk["referred_table"], fk["options"].get("ondelete")) for fk in event_fks
    ) == [
        ("fk_email_events_message_id_email_outbox", "email_outbox", "CASCADE"),
        ("fk_email_events_view_id_email_views", "email_views", "CASCADE"),
    ]
    assert event_indexes == {"ix_email_events_message_id": ["message_id"]}


def test_email_tracking_branch_is_at_head(crm: CRM) -> None:
    status = {row["branch"]: row for row in crm.schema_status()}
    assert status["email_tracking"]["current"] == "email_tracking_0002"
    assert status["email_tracking"]["up_to_date"] is True


def test_schema_status_shows_core_and_plugin_branches_up_to_date(crm: CRM) -> None:
    status = {row["branch"]: row for row in crm.schema_status()}
    assert set(status) == {"crmkit", "email_tracking"}
    assert all(row["up_to_date"] for row in status.values()), status


def test_migration_matches_the_declared_tables(crm: CRM) -> None:
    assert schema_diff(crm) == []


# SQLite cannot reflect the core's expression index; the diff ignores the core's tables anyway.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_diff_sees_missing_tables(crm_factory: Any) -> None:
    """The comparison above is not vacuous: without the migration both tables are missing."""
    bare = crm_factory(plugins=[])
    metadata = build_metadata(bare.plugins)
    crmkit_email_tracking.crmkit_tables(metadata=metadata)
    diff = schema_diff(bare, metadata)
    assert sorted(d[1].name for d in diff if d[0] == "add_table") == sorted(PLUGIN_TABLES)


def test_row_defaults(session: Session) -> None:
    client = session.clients.create("Acme", email="buy@acme.example")
    before = dt.datetime.now(dt.UTC)
    message_id = message(session, client.id, user_id=session.user.id)
    outbox = session.table("email_outbox")
    row = session.connection.execute(select(outbox).where(outbox.c.id == message_id)).one()
    assert (row.status, row.attempts, row.last_error, row.sent_at) == ("queued", 0, None, None)
    assert row.user_id == session.user.id
    assert row.created_at.tzinfo is not None and row.created_at >= before - dt.timedelta(seconds=1)
    assert row.send_at.tzinfo is not None


def test_send_at_keeps_the_instant(session: Session) -> None:
    client = session.clients.create("Acme")
    moscow = dt.timezone(dt.timedelta(hours=3))
    when = dt.datetime(2026, 12, 1, 9, 30, tzinfo=moscow)
    message_id = message(session, client.id, send_at=when)
    outbox = session.table("email_outbox")
    stored = session.connection.execute(
        select(outbox.c.send_at).where(outbox.c.id == message_id)
    ).scalar_one()
    assert stored == when
    assert stored.utcoffset() == dt.timedelta(0)


def test_events_store_json_data(session: Session) -> None:
    client = session.clients.create("Acme")
    message_id = message(session, client.id)
    events = session.table("email_events")
    data = {"url": "https://acme.example/price", "page": 2, "seconds": 41.5}
    session.connection.execute(
        insert(events).values(
            [
                {"message_id": message_id, "kind": "open", "data": {}},
                {"message_id": message_id, "kind": "click", "data": data},
            ]
        )
    )
    rows = session.connection.execute(
        select(events.c.kind, events.c.data, events.c.at).order_by(events.c.id)
    ).all()
    assert [(r.kind, r.data) for r in rows] == [("open", {}), ("click", data)]
    assert all(r.at.tzinfo is not None for r in rows)


def test_token_is_unique(crm: CRM) -> None:
    with crm.session() as s:
        client_id = s.clients.create("Acme").id
        message(s, client_id, n=7)
    with pytest.raises(IntegrityError), crm.session() as s:
        message(s, client_id, n=7)


def test_deleting_the_client_deletes_its_messages_and_events(session: Session) -> None:
    keep = session.clients.create("Keep")
    gone = session.clients.create("Gone")
    kept_id = message(session, keep.id, n=1)
    gone_id = message(session, gone.id, n=2)
    events = session.table("email_events")
    session.connection.execute(
        insert(events).values(
            [{"message_id": kept_id, "kind": "open"}, {"message_id": gone_id, "kind": "open"}]
        )
    )
    clients = session.table("clients")
    session.connection.execute(delete(clients).where(clients.c.id == gone.id))
    outbox = session.table("email_outbox")
    assert session.connection.execute(select(outbox.c.id)).scalars().all() == [kept_id]
    assert session.connection.execute(select(events.c.message_id)).scalars().all() == [kept_id]


def test_deleting_the_contact_keeps_the_message(session: Session) -> None:
    client = session.clients.create("Acme")
    contact = session.contacts.add(client.id, "Anna Petrova", email="anna@acme.example")
    message_id = message(session, client.id, contact_id=contact.id)
    contacts = session.table("contacts")
    session.connection.execute(delete(contacts).where(contacts.c.id == contact.id))
    outbox = session.table("email_outbox")
    row = session.connection.execute(select(outbox).where(outbox.c.id == message_id)).one()
    assert row.contact_id is None
    assert row.client_id == client.id


def test_message_needs_an_existing_client(crm: CRM) -> None:
    with pytest.raises(IntegrityError), crm.session() as s:
        message(s, 999_999)
