"""Every test deployment gets the email_tracking plugin registered."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import crmkit_email_tracking
import pytest

# The tests share helpers (smtp_server.py) imported by name: under crmkit's root
# configuration (--import-mode=importlib) this folder is not on sys.path by itself.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    """Register this plugin on the ``crm`` fixture of :mod:`crmkit.testing`."""
    return [crmkit_email_tracking]
