"""Built-in web lead capture: ``POST /api/leads`` on ``crmkit serve`` (:doc:`/leads`).

A website's form posts a lead (name, email, phone, company, message, UTM
tags) with the deployment's lead API key (``crmkit lead key create``); the
client is found by email and completed, or created, with its source channel
from the UTM tags, and the ``lead.captured`` automation event is raised in
the same transaction. ``[plugin.leads]`` of ``crmkit.toml`` sets the rate
limit, the body limit, the honeypot field and the UTM mapping.

This module holds only the hook implementations, so that loading the plugin
(every ``crmkit`` command does) imports nothing heavy; the work is in
:mod:`crmkit.plugins.leads_impl`.
"""

from __future__ import annotations

from typing import Any

from crmkit import hookimpl


@hookimpl
def crmkit_routes(crm: Any) -> list[Any]:
    """``POST /api/leads``."""
    from .leads_impl import routes

    return routes(crm)


@hookimpl
def crmkit_startup(crm: Any) -> None:
    """Check ``[plugin.leads]`` when the deployment opens (a ConfigError naming the key)."""
    from .leads_impl import settings

    settings(crm)
