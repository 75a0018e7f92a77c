"""Shared helpers for crmkit's own tests (fixtures for users live in crmkit.testing)."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crmkit import hookimpl


@pytest.fixture
def fake_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """Install a fake distribution with a ``crmkit`` entry point on sys.path.

    ``fake_distribution("crmkit-demo", "demo", "crmkit_demo", source)`` writes the
    module and a ``.dist-info`` folder, so that ``importlib.metadata`` finds it
    exactly as it finds a pip-installed plugin.
    """
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    modules: list[str] = []

    def make(dist: str, ep_name: str, module: str, source: str, version: str = "1.2.3") -> Path:
        (root / f"{module}.py").write_text(textwrap.dedent(source), "utf-8")
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n", "utf-8"
        )
        (info / "entry_points.txt").write_text(f"[crmkit]\n{ep_name} = {module}\n", "utf-8")
        modules.append(module)
        return root

    yield make
    for module in modules:
        sys.modules.pop(module, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In pytest-xdist workers, run the ``slow`` tests first (the order is otherwise kept).

    The slow tests take up to a few minutes each (building a venv, the Sphinx
    site); started last, as the plugins' ones would be, one worker runs them
    alone at the end while the others wait. Every worker sorts its collection
    the same way, as xdist requires.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class QuickPipeline:
    """A deal pipeline ``quick`` of one stage, ``talk``: deals open and close at will."""

    @hookimpl
    def crmkit_pipelines(self) -> list[dict[str, object]]:
        return [{"name": "quick", "stages": [{"name": "talk"}]}]


@pytest.fixture
def quick_pipeline(register_plugin: Callable[..., object]) -> None:
    """Register :class:`QuickPipeline` on the test's deployment (``crm``)."""
    register_plugin(QuickPipeline())
