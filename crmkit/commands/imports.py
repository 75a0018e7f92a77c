"""``crmkit import``: clients, deals and interactions from CSV and JSON Lines."""

from __future__ import annotations
