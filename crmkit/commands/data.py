"""``crmkit export``, ``backup`` and ``restore``."""

from __future__ import annotations
