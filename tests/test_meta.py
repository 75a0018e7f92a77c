"""Meta-tests: the plugin contract stays tested and documented."""

from __future__ import annotations

import inspect
from pathlib import Path

import crmkit.core.hookspecs as hookspecs

TESTS = Path(__file__).parent


def hook_names() -> list[str]:
    return [
        n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("crmkit_")
    ]


def test_every_hookspec_has_a_test_named_after_it():
    source = (TESTS / "test_hooks.py").read_text("utf-8")
    missing = [name for name in hook_names() if f"def test_{name}(" not in source]
    assert missing == []


def test_hookspecs_take_plain_named_parameters():
    # pluggy passes neither keyword-only nor defaulted arguments
    for name in hook_names():
        params = inspect.signature(getattr(hookspecs, name)).parameters.values()
        for p in params:
            assert p.kind is p.POSITIONAL_OR_KEYWORD, (name, p)
            assert p.default is p.empty, (name, p)


def test_every_hookspec_has_a_docstring():
    for name in hook_names():
        assert (getattr(hookspecs, name).__doc__ or "").strip(), name


def test_every_command_of_the_bundled_plugins_is_in_the_cli_reference():
    """A plugin's top-level commands appear on docs/cli.rst through a click directive."""
    import importlib

    import pytest

    from crmkit.cli import build_cli, cli
    from crmkit.core.plugins import load_plugins

    page = (TESTS.parent / "docs" / "cli.rst").read_text("utf-8")
    plugins = load_plugins(entry_points=False)
    for module in ("crmkit_segment_b2b", "crmkit_email_tracking"):
        try:
            plugins.register(importlib.import_module(module))
        except ImportError:  # pragma: no cover - the plugin is not installed
            pytest.skip(f"{module} is not installed")
    added = set(build_cli(plugins).commands) - set(cli.commands)
    assert added, "the bundled plugins add commands"
    for name in sorted(added):
        command = build_cli(plugins).commands[name]
        # the module attribute that holds a click command is named after its function
        directive = f".. click:: {command.callback.__module__}:{command.callback.__name__}"
        assert directive in page, f"crmkit {name}: add '{directive}' to docs/cli.rst"
