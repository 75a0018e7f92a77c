"""A deployment made before the plugin was installed gets its tables on upgrade."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import crmkit_email_tracking
import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select

from crmkit import CRM, DatabaseError
from crmkit.cli import build_cli
from crmkit.core.plugins import Plugins, load_plugins

PLUGIN_TABLES = {"email_outbox", "email_events"}


def with_plugin() -> Plugins:
    """The built-in plugins plus this one, as a deployment sees them once it is installed."""
    plugins = load_plugins(entry_points=False)
    plugins.register(crmkit_email_tracking)
    plugins.pm.check_pending()
    return plugins


@pytest.fixture
def old_deployment(crm_factory: Callable[..., CRM]) -> Iterator[CRM]:
    """A deployment created without the plugin, holding one client; closed before the test."""
    crm = crm_factory(plugins=[])
    with crm.session() as s:
        s.clients.create("Kept Ltd", email="kept@acme.example")
    with crm.connect() as conn:
        assert not PLUGIN_TABLES & set(inspect(conn).get_table_names())
    crm.close()
    yield crm


def tables(crm: CRM) -> set[str]:
    with crm.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_upgrade_adds_the_tables_and_keeps_the_data(old_deployment: CRM) -> None:
    with CRM.open(old_deployment.config.root, plugins=with_plugin()) as crm:
        before = {row["branch"]: row for row in crm.schema_status()}
        assert before["email_tracking"]["current"] is None
        assert before["email_tracking"]["up_to_date"] is False
        crm.upgrade()
        after = {row["branch"]: row for row in crm.schema_status()}
        assert after["email_tracking"]["current"] == "email_tracking_0002"
        assert after["email_tracking"]["up_to_date"] is True
        assert tables(crm) >= PLUGIN_TABLES
        with crm.session() as s:
            kept = s.clients.find(email="kept@acme.example")
            assert kept is not None and kept.name == "Kept Ltd"


def test_db_upgrade_branch_on_the_command_line(old_deployment: CRM) -> None:
    plugins = with_plugin()
    args = ["-C", str(old_deployment.config.root), "db", "upgrade", "--branch", "email_tracking"]
    result = CliRunner().invoke(build_cli(plugins), [*args, "--format", "json"], obj=plugins)
    assert result.exit_code == 0, result.output
    status = {row["branch"]: row for row in json.loads(result.stdout)}
    assert status["email_tracking"]["up_to_date"] is True
    with CRM.open(old_deployment.config.root, plugins=plugins) as crm:
        assert tables(crm) >= PLUGIN_TABLES
        with crm.session() as s:
            assert [c.name for c in s.clients.list()] == ["Kept Ltd"]


def test_opening_without_upgrade_reports_the_missing_table(old_deployment: CRM) -> None:
    with (
        CRM.open(old_deployment.config.root, plugins=with_plugin()) as crm,
        pytest.raises(DatabaseError, match="crmkit db upgrade"),
        crm.session() as s,
    ):
        s.connection.execute(select(s.table("email_outbox")))


def test_branch_downgrades_and_upgrades_again(crm: CRM) -> None:
    from alembic import command

    from crmkit.core.migrate import alembic_config

    with crm.session() as s:
        s.clients.create("Kept Ltd")
    with crm.connect() as conn:
        command.downgrade(alembic_config(crm, conn), "email_tracking@base")
    assert not tables(crm) & PLUGIN_TABLES
    crm.upgrade(branch="email_tracking")
    assert tables(crm) >= PLUGIN_TABLES
    with crm.session() as s:
        assert s.clients.count() == 1
