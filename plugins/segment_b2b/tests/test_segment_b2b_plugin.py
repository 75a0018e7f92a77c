"""The plugin as crmkit finds it: entry point, version, hooks, a cheap import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import crmkit_segment_b2b
import pytest

from crmkit.core.plugins import load_plugins

HOOKS = [
    "crmkit_check_stage_entry",
    "crmkit_cli",
    "crmkit_client_details",
    "crmkit_migrations",
    "crmkit_render_document",
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


# -- removing the plugin leaves a working core ------------------------------------------------
def test_a_deployment_works_on_after_the_plugin_is_removed(crm: Any) -> None:
    from crmkit import CRM

    with crm.session() as s:
        s.clients.create("Vostok", segment="distributor", params={"turnover": 1e8})
    root = crm.config.root
    crm.close()
    without = CRM.open(root, plugins=load_plugins(entry_points=False))
    rows = {row["branch"]: row for row in without.schema_status()}
    assert rows["(not installed)"]["current"] == "segment_b2b_0001"
    assert rows["crmkit"]["up_to_date"] is True
    without.upgrade()  # the core's branch upgrades; the plugin's revision is kept
    with without.session() as s:
        assert s.clients.list()[0].segment == "distributor"  # the data stays as it was
        s.clients.create("Plain Ltd")
    without.close()
    again = CRM.open(root, plugins=crm.plugins)
    assert {row["branch"]: row["up_to_date"] for row in again.schema_status()} == {
        "crmkit": True,
        "segment_b2b": True,
    }
    with again.session() as s:
        assert s.clients.count() == 2
    again.close()


@pytest.mark.slow
def test_installs_alone_on_top_of_crmkit_and_passes_its_tests(tmp_path: Path) -> None:
    """A fresh venv: crmkit and this plugin only (not editable), then the plugin's own tests.

    The proposal workflow runs from the installed console script; then the
    plugin is uninstalled and the same deployment keeps working.
    """
    repo = Path(__file__).resolve().parents[3]
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRMKIT_", "VIRTUAL_ENV"))}
    env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

    def run(*args: str | Path, cwd: Path = tmp_path, ok: bool = True) -> Any:
        done = subprocess.run(
            [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )
        if ok:
            assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
        return done

    run(sys.executable, "-m", "venv", venv)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet"]
    run(*pip, f"{repo}[test]", repo / "plugins" / "segment_b2b")
    crmkit = venv / "bin" / "crmkit"
    listed = json.loads(run(crmkit, "plugins", "--format", "json").stdout)
    assert [row["name"] for row in listed] == ["segment_b2b"]  # alone: no email_tracking

    tests = run(
        venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
        "--rootdir", repo / "plugins" / "segment_b2b", repo / "plugins" / "segment_b2b" / "tests",
        cwd=repo / "plugins" / "segment_b2b",
    )  # fmt: skip
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    home = tmp_path / "crm"
    run(crmkit, "init", home)
    cid = json.loads(
        run(
            crmkit, "-C", home, "client", "add", "Vostok", "--param", "own_clients=300",
            "--param", "turnover=2e8", "--param", "sales_reps=9", "--param", "warehouse_area=900",
            "--format", "json",
        ).stdout
    )["id"]  # fmt: skip
    refused = run(crmkit, "-C", home, "proposal", "render", cid, ok=False)
    assert refused.returncode == 2 and "needs.budget" in refused.stderr
    needs = ["budget=1e6", "authority=decision_maker", "need=Printers", "timing=this_month"]
    run(crmkit, "-C", home, "needs", "set", cid, *needs, "monthly_volume=10", "target_margin=15")
    assert "Cartridge wholesale pallet" in run(crmkit, "-C", home, "proposal", "render", cid).stdout

    run(venv / "bin" / "python", "-m", "pip", "uninstall", "--yes", "--quiet", "crmkit-segment-b2b")
    assert json.loads(run(crmkit, "plugins", "--format", "json").stdout) == []
    run(crmkit, "-C", home, "db", "upgrade")
    shown = json.loads(run(crmkit, "-C", home, "client", "show", cid, "--format", "json").stdout)
    assert shown["segment"] == "distributor" and shown["plugins"] == {}
    assert run(crmkit, "-C", home, "offer", cid, ok=False).returncode == 2  # no such command
