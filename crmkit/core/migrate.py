"""Alembic, driven from Python: one version branch for the core, one per plugin.

The core's revisions live in ``crmkit/core/migrations/versions`` on the
branch ``crmkit``; a plugin registers its own folder and branch through the
``crmkit_migrations`` hook. Everything runs in one transaction per upgrade,
so a failed migration leaves the database as it was (PostgreSQL and SQLite
both have transactional DDL).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .errors import DatabaseError, PluginError

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config as AlembicConfig

    from .app import CRM

MIGRATIONS = Path(__file__).parent / "migrations"
CORE_BRANCH = "crmkit"


def alembic_config(crm: CRM, connection: Any = None) -> AlembicConfig:
    """An Alembic config for ``crm``: the core's and every plugin's version folders."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    locations = [str(MIGRATIONS / "versions")]
    for item in crm.plugins.migrations():
        path = item.get("path") if isinstance(item, dict) else None
        if not path or not Path(path).is_dir():
            raise PluginError(
                f"crmkit_migrations returned {item!r}: 'path' must be an existing folder",
                field="crmkit_migrations",
            )
        locations.append(str(Path(path).resolve()))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(locations))
    cfg.attributes["connection"] = connection
    cfg.attributes["metadata"] = crm.metadata
    return cfg


def branches(crm: CRM) -> dict[str, list[str]]:
    """Branch label -> the revisions of that branch, newest (the head) first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(crm))
    found: dict[str, list[str]] = {}
    # get_heads(), not get_revisions("heads"): a plugin revision that depends_on
    # a core revision must not hide the core branch's own head.
    for head in script.get_heads():
        lineage = _lineage(script, head)
        labels: set[str] = set()
        for rev in lineage:
            revision = script.get_revision(rev)
            labels |= set(revision.branch_labels if revision is not None else ())
        for label in labels or {head}:
            found[label] = lineage
    return found


def _lineage(script: Any, revision: str) -> list[str]:
    """``revision`` and its ancestors along ``down_revision`` (not ``depends_on``)."""
    lineage: list[str] = []
    todo = [revision]
    while todo:
        rev = script.get_revision(todo.pop(0))
        if rev.revision in lineage:
            continue
        lineage.append(rev.revision)
        down = rev.down_revision
        todo.extend([down] if isinstance(down, str) else list(down or ()))
    return lineage


def upgrade(crm: CRM, *, branch: str | None = None, revision: str = "head") -> None:
    """Upgrade every branch (or one) to ``revision``, in one transaction."""
    from alembic import command
    from alembic.util import CommandError

    target = (
        "heads"
        if branch is None and revision == "head"
        else f"{branch}@{revision}"
        if branch
        else revision
    )
    with crm.connect() as conn:
        cfg = alembic_config(crm, conn)
        # revisions of plugins that are no longer installed stay recorded, but out of
        # Alembic's sight while it upgrades the others (one transaction: all or nothing)
        detached = _unknown_revisions(cfg, conn)
        version = sa.table("alembic_version", sa.column("version_num", sa.String))
        if detached:
            conn.execute(version.delete().where(version.c.version_num.in_(detached)))
        try:
            command.upgrade(cfg, target)
        except CommandError as exc:
            raise DatabaseError(f"cannot upgrade to {target!r}: {exc}", field="branch") from None
        if detached:
            conn.execute(version.insert(), [{"version_num": rev} for rev in detached])
    if branch is None and revision == "head":
        # indexes that an import killed midway left dropped (see crmkit.core.indexes)
        from .indexes import check

        check(crm)


def _unknown_revisions(cfg: AlembicConfig, conn: Any) -> list[str]:
    """Revisions recorded in the database that no installed plugin (nor the core) provides."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(cfg)
    known = {rev.revision for rev in script.walk_revisions()}
    current = MigrationContext.configure(conn).get_current_heads()
    return sorted(rev for rev in current if rev not in known)


def status(crm: CRM) -> list[dict[str, Any]]:
    """Per branch: current revision, head revision and ``up_to_date``."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config(crm)
    with crm.connect(readonly=True) as conn:
        current = MigrationContext.configure(conn).get_current_heads()
        unknown = _unknown_revisions(cfg, conn)
    current = tuple(rev for rev in current if rev not in unknown)
    script = ScriptDirectory.from_config(cfg)
    # alembic_version keeps only the newest revisions; what they depend on is applied too
    applied = {r.revision for r in script.iterate_revisions(current, "base")} if current else set()
    rows = []
    for label, lineage in sorted(branches(crm).items()):
        mine = [rev for rev in lineage if rev in applied]
        cur = mine[0] if mine else None
        rows.append(
            {"branch": label, "current": cur, "head": lineage[0], "up_to_date": cur == lineage[0]}
        )
    # a plugin that was removed: its tables and revision stay, and come back with it
    rows += [
        {"branch": "(not installed)", "current": rev, "head": None, "up_to_date": None}
        for rev in unknown
    ]
    return rows
