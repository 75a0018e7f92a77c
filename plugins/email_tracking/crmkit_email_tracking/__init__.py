"""crmkit plugin: commercial proposals by email, with open and click tracking.

For now the plugin owns its storage: the ``email_outbox`` table of messages
to send (scheduled, with their delivery state and tracking token) and the
``email_events`` table of what recipients did with them (opens, clicks,
pages viewed). It registers the tables through :func:`crmkit_tables` and the
Alembic branch ``email_tracking`` that creates them through
:func:`crmkit_migrations`.

crmkit imports this module on every command, ``--help`` included, so it
imports only :data:`crmkit.hookimpl` here; SQLAlchemy is imported when a hook
is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmkit import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import click
    from sqlalchemy import MetaData

__version__ = "0.1.0"

#: The plugin's name: its entry point and its Alembic branch label.
PLUGIN_NAME = "email_tracking"
MIGRATION_BRANCH = "email_tracking"


@hookimpl
def crmkit_tables(metadata: MetaData) -> None:
    """Add ``email_outbox`` and ``email_events`` to crmkit's metadata."""
    from .tables import define_tables

    define_tables(metadata)


@hookimpl
def crmkit_migrations() -> list[dict[str, str]]:
    """The ``email_tracking`` Alembic branch, which creates the plugin's tables."""
    from pathlib import Path

    versions = Path(__file__).resolve().parent / "migrations" / "versions"
    return [{"branch": MIGRATION_BRANCH, "path": str(versions)}]


@hookimpl
def crmkit_cli(cli: click.Group) -> None:
    """``crmkit email``: send, worker, list."""
    from .cli import register

    register(cli)
