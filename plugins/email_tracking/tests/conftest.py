"""Every test deployment gets the email_tracking plugin registered."""

from __future__ import annotations

from typing import Any

import crmkit_email_tracking
import pytest


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    """Register this plugin on the ``crm`` fixture of :mod:`crmkit.testing`."""
    return [crmkit_email_tracking]
