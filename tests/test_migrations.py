"""Alembic migrations of the core: they create exactly the tables the code declares."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

import crmkit
from crmkit.core.migrate import alembic_config


@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_migrations_match_the_declared_tables(crm):
    with crm.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, crm.metadata)
    # SQLite cannot reflect expression indexes; alembic reports them as missing there
    diff = [d for d in diff if not (d[0] == "add_index" and d[1].name == "uq_clients_email_lower")]
    assert diff == []


def test_email_uniqueness_is_enforced_by_the_database(crm):
    with crm.session() as s:
        s.clients.create("A", email="a@x.example")
    with crm.connect() as conn, pytest.raises(Exception, match=r"(?i)unique"):
        conn.execute(
            text(
                "INSERT INTO clients (kind, name, email, requisites, params, created_at,"
                " updated_at) VALUES ('company', 'B', 'A@X.EXAMPLE', '{}', '{}', :t, :t)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )


def test_database_without_schema_asks_for_upgrade(crm):
    with crm.connect() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    reopened = crmkit.CRM.open(crm.config.root, plugins=crm.plugins)
    with pytest.raises(crmkit.DatabaseError, match="crmkit db upgrade"), reopened.session():
        pass
    reopened.close()


@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_downgrade_and_upgrade_again(crm):
    from alembic import command

    with crm.connect() as conn:
        command.downgrade(alembic_config(crm, conn), "crmkit@base")
    with crm.connect() as conn:
        assert not inspect(conn).has_table("clients")
    crm.upgrade()
    with crm.connect() as conn:
        assert inspect(conn).has_table("clients")


def test_sqlite_runs_in_wal_mode_with_foreign_keys(crm):
    if crm.engine.dialect.name != "sqlite":
        pytest.skip("SQLite settings")
    with crm.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_unknown_branch_is_a_clear_error(crm):
    with pytest.raises(crmkit.DatabaseError, match="nosuch"):
        crm.upgrade(branch="nosuch")
