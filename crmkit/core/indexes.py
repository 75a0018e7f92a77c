"""Indexes dropped for a bulk write, and created again even if that write is killed.

Maintaining an index row by row costs a random write per row and index;
creating it after the rows are in costs one sort. A large import therefore
drops some indexes (:func:`defer`), writes, and creates them again
(:meth:`Deferral.restore`). The indexes are only for speed: every query
gives the same result without them, only slower.

The table ``deferred_indexes`` (revision ``crmkit_0011``) lists each dropped
index with the work that dropped it: a random token, the host and process,
and when it last gave a sign of life (:meth:`Deferral.beat`, once per batch).
Dropping the indexes and listing them is one transaction; creating them
again and deleting the rows is another, so the list is always exactly the
indexes that are missing. If the process dies in between, :func:`repair`
creates the indexes of every row whose process is gone (same host) or that
gave no sign of life for :data:`LEASE`: a :class:`~crmkit.core.app.CRM`
looks in its first session (one query) and repairs right after it, and
``crmkit db upgrade`` repairs after upgrading.

Two imports at once: the second finds the indexes listed by a live first
one and leaves them alone (it writes without them too); whichever restores
or repairs takes the rows first, so an index is created once.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Index, delete, inspect, select, update

from .schema import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from .app import CRM

#: how long a deferral may give no sign of life before another process repairs it
LEASE = dt.timedelta(minutes=10)
TABLE = "deferred_indexes"


def _host() -> str:
    return socket.gethostname()[:255]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (True when that cannot be told)."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill would end it: rely on the lease
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def stale(row: Any, now: dt.datetime | None = None) -> bool:
    """Whether a row of ``deferred_indexes`` belongs to work that is gone."""
    now = now or utcnow()
    if row.host == _host() and not _alive(row.pid):
        return True
    return bool(now - row.beat_at > LEASE)


def index_of(crm: CRM, table: str, name: str) -> Index | None:
    """The :class:`~sqlalchemy.Index` called ``name`` of ``table`` in the metadata."""
    found = crm.metadata.tables.get(table)
    if found is None:
        return None
    return next((ix for ix in found.indexes if ix.name == name), None)


class Deferral:
    """Indexes this process dropped; :meth:`restore` creates them again."""

    def __init__(self, crm: CRM, table: str, names: Sequence[str], owner: str) -> None:
        self.crm = crm
        self.table = table
        self.names = tuple(names)
        self.owner = owner

    def beat(self, conn: Any) -> None:
        """Record a sign of life (in the caller's transaction: once per batch)."""
        t = self.crm.metadata.tables[TABLE]
        conn.execute(update(t).where(t.c.owner == self.owner).values(beat_at=utcnow()))

    def restore(self) -> list[str]:
        """Create the indexes again and delete their rows, in one transaction.

        Returns the names created; none when another process repaired them already.
        """
        t = self.crm.metadata.tables[TABLE]
        with self.crm.connect() as conn:
            mine = list(
                conn.execute(
                    select(t.c.name, t.c.table_name)
                    .where(t.c.owner == self.owner)
                    .order_by(t.c.name)
                    .with_for_update()
                )
            )
            created = _create(self.crm, conn, mine)
            conn.execute(delete(t).where(t.c.owner == self.owner))
        return created


def defer(crm: CRM, table: str, names: Sequence[str]) -> Deferral | None:
    """Drop the indexes ``names`` of ``table`` and list them, in one committed transaction.

    None (nothing dropped) when live work has them listed already: that
    work creates them again. Rows of work that is gone are taken over.
    """
    t = crm.metadata.tables[TABLE]
    owner = uuid.uuid4().hex
    indexes = [index_of(crm, table, name) for name in names]
    if any(ix is None for ix in indexes):
        raise LookupError(f"{table} has no index {names!r} in the metadata")
    now = utcnow()
    with crm.connect() as conn:
        if not inspect(conn).has_table(TABLE):  # a database not upgraded yet: keep them
            return None
        if conn.dialect.name == "postgresql":  # two imports deciding at once: one at a time
            conn.exec_driver_sql(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
        listed = {
            row.name: row
            for row in conn.execute(select(t).where(t.c.name.in_(list(names))).with_for_update())
        }
        if any(not stale(row, now) for row in listed.values()):
            return None
        mark = {"owner": owner, "host": _host(), "pid": os.getpid(), "since": now, "beat_at": now}
        if listed:  # dropped by work that is gone: now ours to create again
            conn.execute(update(t).where(t.c.name.in_(list(listed))).values(**mark))
        missing = _missing(conn, table, names)
        for index in indexes:
            assert index is not None
            if index.name in listed:
                continue
            if index.name not in missing:
                index.drop(conn)
            conn.execute(t.insert().values(name=index.name, table_name=table, **mark))
    return Deferral(crm, table, names, owner)


def listed(crm: CRM, conn: Any = None) -> list[Any]:
    """The rows of ``deferred_indexes`` (none when the database predates the table)."""
    if conn is None:
        with crm.connect(readonly=True) as conn:
            return listed(crm, conn)
    if not inspect(conn).has_table(TABLE):
        return []
    t = crm.metadata.tables[TABLE]
    return list(conn.execute(select(t).order_by(t.c.name)))


def stale_rows(crm: CRM, conn: Any) -> list[Any]:
    """The rows of ``deferred_indexes`` that belong to work that is gone (in ``conn``)."""
    now = utcnow()
    return [row for row in listed(crm, conn) if stale(row, now)]


def repair(crm: CRM, *, force: bool = False) -> list[str]:
    """Create the indexes listed by work that is gone (every listed one with ``force``).

    Returns the names of the indexes created. Cheap when nothing is listed:
    one query (and none when the database predates ``deferred_indexes``).
    """
    now = utcnow()
    if not any(force or stale(row, now) for row in listed(crm)):
        return []
    t = crm.metadata.tables[TABLE]
    with crm.connect() as conn:
        # on PostgreSQL, rows being restored or taken over right now are skipped
        skip = conn.dialect.name == "postgresql"
        query = select(t).order_by(t.c.name).with_for_update(skip_locked=skip)
        todo = [row for row in conn.execute(query) if force or stale(row, now)]
        created = _create(crm, conn, [(row.name, row.table_name) for row in todo])
        if todo:
            conn.execute(delete(t).where(t.c.name.in_([row.name for row in todo])))
    return created


def check(crm: CRM) -> None:
    """:func:`repair`, where a failure only warns (after a session, after an upgrade)."""
    try:
        created = repair(crm)
    except Exception as exc:  # the indexes only speed things up: the session goes on
        warnings.warn(
            f"could not create the indexes that a stopped import dropped: {exc}", stacklevel=4
        )
        return
    if created:
        warnings.warn(
            "created the indexes that an import stopped midway had dropped: " + ", ".join(created),
            stacklevel=4,
        )


def _missing(conn: Any, table: str, names: Sequence[str]) -> set[str]:
    present = {ix["name"] for ix in inspect(conn).get_indexes(table)}
    return {name for name in names if name not in present}


def _create(crm: CRM, conn: Any, rows: Sequence[tuple[str, str]]) -> list[str]:
    """Create the listed indexes that are missing (``CREATE INDEX IF NOT EXISTS``)."""
    created: list[str] = []
    by_table: dict[str, list[str]] = {}
    for name, table in rows:
        by_table.setdefault(table, []).append(name)
    for table, names in by_table.items():
        missing = _missing(conn, table, names)
        for name in names:
            index = index_of(crm, table, name)
            if index is None or name not in missing:
                continue  # no longer defined (a plugin removed), or there already
            index.create(conn)
            created.append(name)
    return created


__all__ = [
    "LEASE",
    "Deferral",
    "check",
    "defer",
    "index_of",
    "listed",
    "repair",
    "stale",
    "stale_rows",
]
