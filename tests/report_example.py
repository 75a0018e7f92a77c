"""An example report plugin: new clients per month, by segment or by marketing channel.

``docs/reports.rst`` quotes this file, and ``tests/test_reports.py`` registers
it and runs the report, so the documentation cannot show a report that does
not work. It computes everything in one SQL statement (an aggregate per group,
one conditional sum per month), so it reads no client into Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:
    from crmkit import Report, ReportQuery, ReportResult, Session

#: the report's own options, as JSON Schema properties (``--by``, ``--min-clients``, ``--months``)
OPTIONS: dict[str, Any] = {
    "by": {
        "type": "string",
        "enum": ["segment", "source"],
        "default": "segment",
        "description": "Group the clients by segment or by marketing channel.",
    },
    "min_clients": {
        "type": "integer",
        "minimum": 1,
        "default": 1,
        "description": "Leave out groups with fewer new clients.",
    },
    "months": {
        "type": "boolean",
        "default": True,
        "description": "Add a column per calendar month of the period.",
    },
}


def new_clients(session: Session, query: ReportQuery) -> ReportResult:
    """Clients created in the period, per group, with each group's share and months."""
    from sqlalchemy import and_, case, func, select

    from crmkit import Column, Period, ReportResult

    period = query.period
    assert period is not None  # the report has a default period
    tz = session.crm.tz
    clients, users = session.table("clients"), session.table("users")
    group = clients.c[query.options["by"]]
    start, end = period.bounds(tz)  # aware datetimes: start <= created_at < end
    count = func.count(clients.c.id)
    months: list[tuple[str, Any]] = []
    if query.options["months"]:
        firsts = period.months()
        for first, after in zip(firsts, [*firsts[1:], period.end], strict=True):
            lo, hi = Period(max(first, period.start), after, "").bounds(tz)
            label = first.strftime("%Y-%m")
            in_month = and_(clients.c.created_at >= lo, clients.c.created_at < hi)
            months.append((label, func.sum(case((in_month, 1), else_=0)).label(label)))
    stmt = (
        select(group.label("group"), count.label("clients"), *(expr for _, expr in months))
        .where(clients.c.created_at >= start, clients.c.created_at < end)
        .group_by(group)
        .having(count >= query.options["min_clients"])
    )
    if query.segment is not None:
        stmt = stmt.where(clients.c.segment == query.segment)
    if query.user is not None:
        stmt = stmt.where(
            clients.c.owner_id.in_(select(users.c.id).where(users.c.login == query.user))
        )
    found = session.connection.execute(stmt).all()
    total = sum(row.clients for row in found)
    rows = [
        {
            "group": row.group or "(none)",
            "clients": row.clients,
            "share": row.clients / total,
            **{label: int(row._mapping[label]) for label, _ in months},
        }
        for row in sorted(found, key=lambda r: (-r.clients, r.group or ""))
    ]
    title = "Segment" if query.options["by"] == "segment" else "Channel"
    notes = []
    if any(row.group is None for row in found):
        notes.append(f"(none): clients without a {title.lower()}.")
    return ReportResult(
        report="new_clients",
        columns=[
            Column("group", title),
            Column("clients", "New clients", "integer"),
            Column("share", "Share", "percent"),
            *(Column(label, label, "integer") for label, _ in months),
        ],
        rows=rows,
        summary={"clients": total, "groups": len(rows)},
        notes=notes,
        period=period,
    )


@hookimpl
def crmkit_reports() -> list[Report]:
    from crmkit import Report

    return [
        Report(
            name="new_clients",
            title="New clients",
            run=new_clients,
            description="Clients created in the period, by segment or by marketing channel.",
            filters=("period", "segment", "user"),
            options=OPTIONS,
            default_period="last-12-months",
        )
    ]
