"""The plugin as crmkit finds it: entry point, version, hooks, a cheap import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import crmkit_segment_b2b
import pytest

from crmkit.core.plugins import load_plugins

HOOKS = [
    "crmkit_check_stage_entry",
    "crmkit_cli",
    "crmkit_client_details",
    "crmkit_migrations",
    "crmkit_reports",
    "crmkit_sample_client",
    "crmkit_segments",
    "crmkit_startup",
    "crmkit_tables",
]


def test_version_matches_the_distribution() -> None:
    assert crmkit_segment_b2b.__version__ == version("crmkit-segment-b2b")


def test_registered_through_its_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRMKIT_LOAD_PLUGINS", raising=False)
    plugins = load_plugins()
    infos = {info["name"]: info for info in plugins.infos()}
    assert "segment_b2b" in infos
    info = infos["segment_b2b"]
    assert info["version"] == crmkit_segment_b2b.__version__
    assert info["distribution"] == "crmkit-segment-b2b"
    assert info["hooks"] == HOOKS
    assert info["builtin"] is False
    assert {s.name for s in plugins.segments()} >= {"distributor", "corporate"}


def test_allow_list_without_it_skips_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMKIT_LOAD_PLUGINS", "")
    assert "segment_b2b" not in {i["name"] for i in load_plugins().infos()}


def test_import_is_cheap() -> None:
    code = (
        "import sys, crmkit_segment_b2b; "
        "print([m for m in ('crmkit.core.model', 'jsonschema', 'sqlalchemy', "
        "'crmkit_segment_b2b.segments') if m in sys.modules])"
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
    assert rows["segment_b2b"]["version"] == crmkit_segment_b2b.__version__
    assert rows["segment_b2b"]["hooks"] == HOOKS
