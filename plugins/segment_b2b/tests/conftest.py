"""Every test deployment gets the segment_b2b plugin registered."""

from __future__ import annotations

from typing import Any

import crmkit_segment_b2b
import pytest


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    """Register this plugin on the ``crm`` fixture of :mod:`crmkit.testing`."""
    return [crmkit_segment_b2b]
