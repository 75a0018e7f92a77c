"""Built-in plugin: the usual marketing channels a client comes from.

Deployments add their own under ``[clients] channels`` in ``crmkit.toml``;
plugins through ``crmkit_source_channels``.
"""

from __future__ import annotations

from typing import Any

from crmkit import hookimpl

CHANNELS: list[dict[str, Any]] = [
    {"name": "website", "title": "Website form or chat"},
    {"name": "inbound_call", "title": "Inbound call"},
    {"name": "cold_call", "title": "Cold call (outbound)"},
    {"name": "email_campaign", "title": "Email campaign"},
    {"name": "advertising", "title": "Advertising"},
    {"name": "social", "title": "Social networks"},
    {"name": "referral", "title": "Referral by a client"},
    {"name": "partner", "title": "Partner"},
    {"name": "event", "title": "Exhibition or event"},
    {"name": "import", "title": "Imported from another system"},
    {"name": "other", "title": "Other"},
]


@hookimpl(trylast=True)
def crmkit_source_channels() -> list[dict[str, Any]]:
    return CHANNELS
