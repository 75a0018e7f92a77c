"""crmkit plugin: commercial proposals by email, with open, click and reading tracking.

* :func:`crmkit_tables` / :func:`crmkit_migrations`: the outbox, the events,
  reading sessions, hosted documents and signing keys (Alembic branch
  ``email_tracking``);
* :func:`crmkit_routes`: the open pixel, tracked links and hosted documents
  with their reading heartbeats (:mod:`.routes`);
* :func:`crmkit_email_opened`: the built-in notice to the deal's owner
  (:mod:`.notices`);
* :func:`crmkit_interaction_kinds`: the ``email`` outcomes ``opened`` and
  ``proposal_read``, which pipelines may use;
* :func:`crmkit_check_stage_entry`: the ``proposal_read`` gate (:mod:`.gate`);
* :func:`crmkit_automation_actions`: the automation action ``send_email``
  (:mod:`.automation`).

crmkit imports this module on every command, ``--help`` included, so it
imports only :data:`crmkit.hookimpl` here; SQLAlchemy is imported when a hook
is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


@hookimpl
def crmkit_routes(crm: Any) -> list[Any]:
    """The pixel, tracked links, hosted documents and heartbeats."""
    from .routes import routes

    return routes(crm)


@hookimpl
def crmkit_interaction_kinds() -> list[dict[str, Any]]:
    """Add the tracked outcomes ``opened`` and ``proposal_read`` to ``email``."""
    from .notices import OUTCOMES

    return [{"name": "email", "title": "Email", "outcomes": OUTCOMES}]


@hookimpl
def crmkit_email_opened(session: Any, message: dict[str, Any], first: bool, document: bool) -> None:
    """The built-in notice: a task for the owner to call now, and the open as an interaction."""
    from .notices import on_opened

    on_opened(session, message, first=first, document=document)


@hookimpl
def crmkit_check_stage_entry(session: Any, stage: Any, deal: Any) -> list[Any]:
    """The ``proposal_read`` gate: a stage so marked needs the deal's proposal read."""
    from .gate import MARK, read_problems

    if deal is None or MARK not in stage.marks:
        return []
    return read_problems(session, deal)


@hookimpl
def crmkit_startup(crm: Any) -> None:
    """Check ``[plugin.email_tracking]`` at start-up: a ConfigError naming a wrong key."""
    from .settings import load

    load(crm)


@hookimpl
def crmkit_automation_actions() -> list[Any]:
    """The automation action ``send_email`` (:mod:`.automation`)."""
    from .automation import actions

    return actions()
