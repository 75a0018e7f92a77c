"""The plugin's commands: the ``crmkit email`` group.

Added to ``crmkit`` through the ``crmkit_cli`` hook (:func:`register`).
Other modules of the plugin add their commands to :data:`email_group`.
"""

from __future__ import annotations

import click


@click.group("email")
def email_group() -> None:
    """Proposals by email: send, schedule, deliver and track them."""


def register(cli: click.Group) -> None:
    """Add the ``email`` group to the root ``cli``."""
    cli.add_command(email_group)
