"""crmkit: a plugin-extensible CRM framework and SDK.

``from crmkit import hookimpl`` is all a plugin needs. The application API
(:class:`CRM`, the domain classes and errors) is imported on first use, so
that importing crmkit, as every plugin module does, stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .core.app import CRM
    from .core.errors import (
        AuditError,
        ConfigError,
        Conflict,
        CrmError,
        DatabaseError,
        DeploymentError,
        DuplicateError,
        NotFound,
        PermissionDenied,
        PluginError,
        Problem,
        ValidationError,
    )
    from .core.kpis import KPI, Fact, Window
    from .core.kpis import Source as KPISource
    from .core.model import (
        Channel,
        Client,
        ClientKind,
        Contact,
        Deal,
        DealStatus,
        Direction,
        Document,
        FollowUp,
        Interaction,
        InteractionKind,
        Invoice,
        InvoiceStatus,
        MoveTo,
        Potential,
        Role,
        Segment,
        StageChange,
        Task,
        TaskStep,
        Team,
        User,
    )
    from .core.motivation import Bonus, Scheme, Standing
    from .core.pipeline import Pipeline, Rule, Stage
    from .core.reports import Column, Period, Report, ReportQuery, ReportResult, parse_period
    from .core.store import Session

_LAZY = {
    "CRM": "crmkit.core.app",
    "Session": "crmkit.core.store",
    **{name: "crmkit.core.kpis" for name in ("KPI", "Fact", "Window")},
    "KPISource": "crmkit.core.kpis:Source",
    **{name: "crmkit.core.motivation" for name in ("Bonus", "Scheme", "Standing")},
    **{name: "crmkit.core.pipeline" for name in ("Pipeline", "Rule", "Stage")},
    **{
        name: "crmkit.core.reports"
        for name in ("Column", "Period", "Report", "ReportQuery", "ReportResult", "parse_period")
    },
    **{
        name: "crmkit.core.model"
        for name in (
            "Channel",
            "Client",
            "ClientKind",
            "Contact",
            "Deal",
            "Document",
            "DealStatus",
            "Direction",
            "FollowUp",
            "Interaction",
            "InteractionKind",
            "Invoice",
            "InvoiceStatus",
            "MoveTo",
            "Potential",
            "Role",
            "Segment",
            "StageChange",
            "Task",
            "TaskStep",
            "Team",
            "User",
        )
    },
    **{
        name: "crmkit.core.errors"
        for name in (
            "AuditError",
            "ConfigError",
            "Conflict",
            "CrmError",
            "DatabaseError",
            "DeploymentError",
            "DuplicateError",
            "NotFound",
            "PermissionDenied",
            "PluginError",
            "Problem",
            "ValidationError",
        )
    },
}

__all__ = [
    "CRM",
    "KPI",
    "AuditError",
    "Bonus",
    "Channel",
    "Client",
    "ClientKind",
    "Column",
    "ConfigError",
    "Conflict",
    "Contact",
    "CrmError",
    "DatabaseError",
    "Deal",
    "DealStatus",
    "DeploymentError",
    "Direction",
    "Document",
    "DuplicateError",
    "Fact",
    "FollowUp",
    "Interaction",
    "InteractionKind",
    "Invoice",
    "InvoiceStatus",
    "KPISource",
    "MoveTo",
    "NotFound",
    "Period",
    "PermissionDenied",
    "Pipeline",
    "PluginError",
    "Potential",
    "Problem",
    "Report",
    "ReportQuery",
    "ReportResult",
    "Role",
    "Rule",
    "Scheme",
    "Segment",
    "Session",
    "Stage",
    "StageChange",
    "Standing",
    "Task",
    "TaskStep",
    "Team",
    "User",
    "ValidationError",
    "Window",
    "__version__",
    "hookimpl",
    "hookspec",
    "parse_period",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crmkit' has no attribute {name!r}")
    import importlib

    module, _, attribute = module.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value
