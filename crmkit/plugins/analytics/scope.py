"""The filters every analytics report shares, as SQL conditions.

A report's query names the records it reads; :func:`deals` and
:func:`clients` add the access policies (what the reader may read) and the
common filters of ``crmkit report`` (``--pipeline``, ``--team``, ``--user``,
``--segment``) to it, so that every report filters the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.reports import ReportQuery
    from crmkit.core.store import Session


def owner_ids(session: Session, query: ReportQuery) -> list[int] | None:
    """The owners the ``--user`` and ``--team`` filters keep (None: no such filter)."""
    found: set[int] | None = None
    if query.user is not None:
        found = {session.users.get(query.user, field="user").id}
    if query.team is not None:
        members = {u.id for u in session.users.list(team=query.team)}
        found = members if found is None else found & members
    return None if found is None else sorted(found)


def deals_filtered(session: Session, query: ReportQuery) -> bool:
    """Whether :func:`deals` would add a condition (else a report may skip the deals table)."""
    if query.team is not None or query.user is not None or query.segment is not None:
        return True
    return session.access.require_any("read", "deal").node is not True


def deals(session: Session, stmt: Any, query: ReportQuery, table: Any = None) -> Any:
    """``stmt`` with the deals it reads limited to those the reader may read and the filters.

    ``table`` is the deals table or an alias of it used by ``stmt``.
    """
    t = table if table is not None else session.table("deals")
    stmt = session.access.filter(stmt, "read", "deal", t)
    if query.pipeline is not None:
        stmt = stmt.where(t.c.pipeline == query.pipeline)
    owners = owner_ids(session, query)
    if owners is not None:
        stmt = stmt.where(t.c.owner_id.in_(owners))
    if query.segment is not None:
        clients = session.table("clients")
        stmt = stmt.where(
            t.c.client_id.in_(select(clients.c.id).where(clients.c.segment == query.segment))
        )
    return stmt


def clients(session: Session, stmt: Any, query: ReportQuery, table: Any = None) -> Any:
    """``stmt`` with the clients it reads limited to those the reader may read and the filters."""
    t = table if table is not None else session.table("clients")
    stmt = session.access.filter(stmt, "read", "client", t)
    owners = owner_ids(session, query)
    if owners is not None:
        stmt = stmt.where(t.c.owner_id.in_(owners))
    if query.segment is not None:
        stmt = stmt.where(t.c.segment == query.segment)
    return stmt


def interactions(session: Session, stmt: Any, query: ReportQuery, table: Any = None) -> Any:
    """``stmt`` with the interactions it reads limited to the readable ones and the filters.

    ``--user`` and ``--team`` keep the interactions logged by those users (``user_id``).
    """
    t = table if table is not None else session.table("interactions")
    stmt = session.access.filter(stmt, "read", "interaction", t)
    owners = owner_ids(session, query)
    if owners is not None:
        stmt = stmt.where(t.c.user_id.in_(owners))
    return stmt


def tasks(session: Session, stmt: Any, query: ReportQuery, table: Any = None) -> Any:
    """``stmt`` with the tasks it reads limited to the readable ones and the filters.

    ``--user`` and ``--team`` keep the tasks assigned to those users (``assignee_id``).
    """
    t = table if table is not None else session.table("tasks")
    stmt = session.access.filter(stmt, "read", "task", t)
    owners = owner_ids(session, query)
    if owners is not None:
        stmt = stmt.where(t.c.assignee_id.in_(owners))
    return stmt
