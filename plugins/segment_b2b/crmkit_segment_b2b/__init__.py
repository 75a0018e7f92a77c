"""crmkit plugin: B2B client segments, distributors and end corporate customers.

Registers two segments through :func:`crmkit_segments`, each with the JSON
Schema of its parameters (see :mod:`crmkit_segment_b2b.segments`). crmkit
imports this module on every command, ``--help`` included, so it imports only
:data:`crmkit.hookimpl` here; the segment definitions are built when the hook
is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmkit import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import Report, Segment

__version__ = "0.1.0"

#: The plugin's name: its entry point in the ``crmkit`` group.
PLUGIN_NAME = "segment_b2b"


@hookimpl
def crmkit_segments() -> list[Segment]:
    """The ``distributor`` and ``corporate`` segments."""
    from .segments import build_segments

    return build_segments(plugin=PLUGIN_NAME)


@hookimpl
def crmkit_reports() -> list[Report]:
    """``abcxyz``: ABC analysis of clients by revenue, XYZ by regularity of purchases."""
    from .abcxyz import build_report

    return [build_report(plugin=PLUGIN_NAME)]
