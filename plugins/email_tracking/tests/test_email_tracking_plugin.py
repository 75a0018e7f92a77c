"""The plugin as crmkit finds it: entry point, version, hooks, migrations, a cheap import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import crmkit_email_tracking
import pytest

from crmkit.core.plugins import load_plugins

#: The hooks the plugin implements, as ``crmkit plugins`` lists them.
HOOKS = [
    "crmkit_automation_actions",
    "crmkit_check_stage_entry",
    "crmkit_cli",
    "crmkit_email_opened",
    "crmkit_interaction_kinds",
    "crmkit_migrations",
    "crmkit_routes",
    "crmkit_startup",
    "crmkit_tables",
]


def test_version_matches_the_distribution() -> None:
    assert crmkit_email_tracking.__version__ == version("crmkit-email-tracking")


def test_registered_through_its_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRMKIT_LOAD_PLUGINS", raising=False)
    plugins = load_plugins()
    infos = {info["name"]: info for info in plugins.infos()}
    assert "email_tracking" in infos
    info = infos["email_tracking"]
    assert info["version"] == crmkit_email_tracking.__version__
    assert info["distribution"] == "crmkit-email-tracking"
    assert info["hooks"] == HOOKS
    assert {
        "branch": "email_tracking",
        "path": crmkit_email_tracking.crmkit_migrations()[0]["path"],
    } in plugins.migrations()


def test_migrations_folder_ships_with_the_package() -> None:
    (branch,) = crmkit_email_tracking.crmkit_migrations()
    assert branch["branch"] == "email_tracking"
    versions = Path(branch["path"])
    assert versions.is_absolute() and versions.is_dir()
    assert versions.parent.parent == Path(crmkit_email_tracking.__file__).resolve().parent
    assert (versions / "__init__.py").is_file()
    assert (versions / "email_tracking_0001_outbox.py").is_file()


def test_import_is_cheap() -> None:
    code = (
        "import sys, crmkit_email_tracking; "
        "print([m for m in ('sqlalchemy', 'alembic', 'crmkit.core.schema', 'jinja2', "
        "'starlette', 'smtplib', 'crmkit_email_tracking.tables') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_crmkit_plugins_command_lists_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CRMKIT_LOAD_PLUGINS"}
    result = subprocess.run(
        [sys.executable, "-m", "crmkit.cli", "plugins", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["email_tracking"]["version"] == crmkit_email_tracking.__version__
    assert rows["email_tracking"]["hooks"] == HOOKS
