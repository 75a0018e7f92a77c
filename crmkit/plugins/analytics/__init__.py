"""Built-in plugin: the sales department's analytics reports.

Each module of this package that defines ``reports()`` contributes its
reports (``crmkit report NAME``); ``scope`` holds the filters they share (the
drawing helpers are :mod:`crmkit.core.charts`). Every report is computed in SQL from the
stored records and counts only what its reader may read (the access
policies, applied with ``session.access.filter``).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from crmkit import hookimpl

#: modules of this package that hold helpers, not reports
HELPERS = frozenset({"scope"})


def report_modules() -> list[str]:
    """The modules that define reports, in name order."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in HELPERS)


@hookimpl(trylast=True)
def crmkit_reports() -> list[Any]:
    found: list[Any] = []
    for name in report_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        found.extend(module.reports())
    return found
