"""The plugin manager: built-ins, entry points, allow-list, strict mode, tracing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crmkit.core.errors import PluginError
from crmkit.core.plugins import DEFAULT_PLUGINS, PluginLoadWarning, load_plugins

GOOD = """
from crmkit import hookimpl
__version__ = "9.9"

@hookimpl
def crmkit_source_channels():
    return ["fake_channel"]
"""

BROKEN = """
raise ImportError("this plugin needs a library that is not installed")
"""

MISSPELT = """
from crmkit import hookimpl

@hookimpl
def crmkit_segmnets():
    return []
"""


def test_builtins_are_registered_like_plugins():
    plugins = load_plugins(entry_points=False)
    names = [i["name"] for i in plugins.infos(include_builtin=True)]
    assert names == list(DEFAULT_PLUGINS)
    assert plugins.infos() == []  # built-ins hidden unless asked for
    assert {"name": "website", "title": "Website form or chat"} in plugins.source_channels()


def test_each_call_makes_a_fresh_manager():
    a, b = load_plugins(entry_points=False), load_plugins(entry_points=False)
    assert a.pm is not b.pm
    a.register(object(), name="only-in-a")
    assert b.pm.get_plugin("only-in-a") is None


def test_entry_point_plugin_is_loaded_with_its_version(fake_distribution):
    fake_distribution("crmkit-fake", "fake", "crmkit_fake", GOOD)
    plugins = load_plugins()
    info = next(i for i in plugins.infos() if i["name"] == "fake")
    assert info == {
        "name": "fake",
        "version": "1.2.3",
        "distribution": "crmkit-fake",
        "builtin": False,
        "hooks": ["crmkit_source_channels"],
    }
    assert "fake_channel" in plugins.source_channels()


def test_broken_plugin_warns_and_the_rest_loads(fake_distribution, monkeypatch):
    monkeypatch.setenv("CRMKIT_LOAD_PLUGINS", "broken,fake")  # ignore what else is installed
    fake_distribution("crmkit-broken", "broken", "crmkit_broken", BROKEN)
    fake_distribution("crmkit-fake", "fake", "crmkit_fake", GOOD)
    with pytest.warns(PluginLoadWarning, match="plugin 'broken' failed to load: ImportError"):
        plugins = load_plugins()
    assert [i["name"] for i in plugins.infos()] == ["fake"]


def test_strict_switch_turns_the_warning_into_an_error(fake_distribution, monkeypatch):
    fake_distribution("crmkit-broken", "broken", "crmkit_broken", BROKEN)
    with pytest.raises(PluginError, match="broken"):
        load_plugins(strict=True)
    monkeypatch.setenv("CRMKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError):
        load_plugins()


def test_allow_list(fake_distribution, monkeypatch):
    fake_distribution("crmkit-fake", "fake", "crmkit_fake", GOOD)
    fake_distribution("crmkit-broken", "broken", "crmkit_broken", BROKEN)
    monkeypatch.setenv("CRMKIT_LOAD_PLUGINS", "fake")
    assert [i["name"] for i in load_plugins().infos()] == ["fake"]
    monkeypatch.setenv("CRMKIT_LOAD_PLUGINS", "")
    assert load_plugins().infos() == []


def test_misspelt_hook_fails_loudly(fake_distribution):
    fake_distribution("crmkit-typo", "typo", "crmkit_typo", MISSPELT)
    with pytest.raises(PluginError, match="crmkit_segmnets"):
        load_plugins()


def test_disable_and_modules(fake_distribution):
    root = fake_distribution("crmkit-fake", "fake", "crmkit_fake", GOOD)
    (root / "local_rules.py").write_text(GOOD.replace("fake_channel", "local_channel"))
    plugins = load_plugins(modules=["local_rules"], disable=["fake", "crmkit.plugins.channels"])
    assert plugins.source_channels() == ["local_channel"]
    sys.modules.pop("local_rules", None)


def test_missing_module_in_config_warns(fake_distribution):
    with pytest.warns(PluginLoadWarning, match="no_such_module"):
        load_plugins(entry_points=False, modules=["no_such_module"])


def test_trace_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("CRMKIT_TRACE_PLUGINS", "1")
    load_plugins(entry_points=False).source_channels()
    err = capsys.readouterr().err
    assert "crmkit: crmkit_source_channels() -> ['crmkit.plugins.channels']" in err


def test_plugins_command_lists_installed_plugins(fake_distribution):
    root = fake_distribution("crmkit-fake", "fake", "crmkit_fake", GOOD)
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("CRMKIT_LOAD_PLUGINS", None)
    out = subprocess.run(
        [sys.executable, "-m", "crmkit", "plugins", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    names = {p["name"]: p for p in json.loads(out)}
    assert names["fake"]["version"] == "1.2.3"
    assert "crmkit.plugins.channels" not in names
    out_all = subprocess.run(
        [
            sys.executable,
            "-m",
            "crmkit",
            "plugins",
            "--all",
            "--hook",
            "crmkit_source_channels",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert {"crmkit.plugins.channels", "fake"} <= {p["name"] for p in json.loads(out_all)}


def test_broken_plugin_does_not_break_help(fake_distribution):
    root = fake_distribution("crmkit-broken", "broken", "crmkit_broken", BROKEN)
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("CRMKIT_LOAD_PLUGINS", None)
    result = subprocess.run(
        [sys.executable, "-m", "crmkit", "--help"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0
    assert "Warning: plugin 'broken' failed to load: ImportError" in result.stderr
    assert "Usage: crmkit" in result.stdout
