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
