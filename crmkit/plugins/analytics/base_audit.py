"""The ``audit`` report: the monthly audit of the client base.

The *base* at an instant *t* is the set of clients created before *t* that
are neither **lost** nor **dormant** at *t*:

* lost: the client's last lifecycle move before *t* went to ``lost``;
* dormant: created more than ``dormant_days`` before *t*, and in the
  ``dormant_days`` before *t* no interaction, no deal opened, and no deal
  open at *t*.

Per month of the period (or per segment or owner over the whole period):
``base_start`` and ``base_end`` (the base at the first and the last
instant), ``new`` (clients created in it), ``lost`` (in the base at the
start or new, not in it at the end), ``returned`` (created before the
start, not in the base at the start, in it at the end) and ``net`` =
``base_end`` - ``base_start`` = new + returned - lost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, not_, or_, select

from crmkit.core.reports import Column, Period, Report, ReportQuery, ReportResult

from . import scope

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.store import Session

NONE = "(none)"
OPTIONS: dict[str, Any] = {
    "by": {
        "type": "string",
        "enum": ["month", "segment", "owner"],
        "default": "month",
        "description": "A row per month, or per segment or owner over the whole period.",
    },
    "dormant_days": {
        "type": "integer",
        "minimum": 1,
        "maximum": 3650,
        "default": 180,
        "description": "Days without an interaction or a deal after which a client is dormant.",
    },
}
FIGURES = [
    Column("base_start", "Base at start", "integer"),
    Column("new", "New", "integer"),
    Column("lost", "Lost", "integer"),
    Column("returned", "Returned", "integer"),
    Column("net", "Net", "integer"),
    Column("base_end", "Base at end", "integer"),
]


def reports() -> list[Report]:
    return [
        Report(
            "audit",
            "Client base audit",
            run,
            description=(
                "The base of active clients month by month: new, lost (lifecycle lost or "
                "dormant), returned, net change; or per segment or owner."
            ),
            filters=("period", "team", "user", "segment"),
            options=OPTIONS,
            default_period="last-12-months",
            chart=chart,
        )
    ]


def run(session: Session, query: ReportQuery) -> ReportResult:
    assert query.period is not None  # the report has a default period
    tz = session.crm.tz
    by = query.options["by"]
    dormant = dt.timedelta(days=query.options["dormant_days"])
    if by == "month":
        spans = [(label, *_bounds(first, nxt, tz)) for label, first, nxt in _months(query.period)]
    else:
        spans = [(query.period.label, *query.period.bounds(tz))]
    # what has not happened yet is not counted: the last span ends now
    now = dt.datetime.now(dt.UTC)
    spans = [(label, start, min(end, now)) for label, start, end in spans if start < now]
    if not spans:
        spans = [(query.period.label, now, now)]
    instants = sorted({t for _, start, end in spans for t in (start, end)})
    members = {t: _base(session, query, t, dormant) for t in instants}
    created = _created(session, query, instants[0], instants[-1])
    rows: list[dict[str, Any]] = []
    if by == "month":
        for label, start, end in spans:
            rows.append(
                {"month": label, **_figures(members[start], members[end], created, start, end)}
            )
        key = Column("month", "Month")
    else:
        groups = _groups(
            session, query, by, {c for m in members.values() for c in m} | set(created)
        )
        start, end = instants[0], instants[-1]
        for name in sorted(set(groups.values()), key=lambda g: (g == NONE, g)):
            ids = {c for c, g in groups.items() if g == name}
            rows.append(
                {
                    by: name,
                    **_figures(
                        members[start] & ids,
                        members[end] & ids,
                        {c: t for c, t in created.items() if c in ids},
                        start,
                        end,
                    ),
                }
            )
        rows.sort(key=lambda r: (r[by] == NONE, -r["base_end"], r[by]))
        key = Column(by, by.title())
    first, last = instants[0], instants[-1]
    summary = _figures(members[first], members[last], created, first, last)
    notes = [
        f"Lost: the lifecycle moved to lost, or dormant: {query.options['dormant_days']} days "
        "without an interaction, a deal opened or a deal open.",
    ]
    if by != "month":
        notes.append(f"Clients are grouped by their {by} now.")
    if spans[-1][2] == now:
        notes.append("The period is not over: its last figures are as of now.")
    return ReportResult(
        "audit", [key, *FIGURES], rows, summary=summary, notes=notes, period=query.period
    )


def _months(period: Period) -> Iterable[tuple[str, dt.date, dt.date]]:
    months = period.months()
    for i, first in enumerate(months):
        start = max(first, period.start)
        nxt = months[i + 1] if i + 1 < len(months) else period.end
        yield f"{first:%Y-%m}", start, min(nxt, period.end)


def _bounds(start: dt.date, end: dt.date, tz: Any) -> tuple[dt.datetime, dt.datetime]:
    return (
        dt.datetime.combine(start, dt.time(), tz).astimezone(dt.UTC),
        dt.datetime.combine(end, dt.time(), tz).astimezone(dt.UTC),
    )


def _figures(
    before: set[int], after: set[int], created: dict[int, dt.datetime], start: Any, end: Any
) -> dict[str, int]:
    new = {c for c, t in created.items() if start <= t < end}
    old = {c for c, t in created.items() if t < start}
    return {
        "base_start": len(before),
        "new": len(new),
        "lost": len((before | new) - after),
        "returned": len((after - before) & old),
        "net": len(after) - len(before),  # = new + returned - lost
        "base_end": len(after),
    }


def _base(session: Session, query: ReportQuery, t: dt.datetime, dormant: dt.timedelta) -> set[int]:
    """The ids of the clients in the base at ``t`` (one query)."""
    clients = session.table("clients")
    changes = session.table("stage_changes")
    interactions = session.table("interactions")
    deals = session.table("deals")
    later = changes.alias("later")
    lost = exists().where(
        changes.c.entity == "client",
        changes.c.entity_id == clients.c.id,
        changes.c.to_stage == "lost",
        changes.c.at < t,
        not_(
            exists().where(
                later.c.entity == "client",
                later.c.entity_id == clients.c.id,
                later.c.at > changes.c.at,
                later.c.at < t,
            )
        ),
    )
    since = t - dormant
    active = or_(
        clients.c.created_at >= since,
        exists().where(
            interactions.c.client_id == clients.c.id,
            interactions.c.occurred_at >= since,
            interactions.c.occurred_at < t,
        ),
        exists().where(
            deals.c.client_id == clients.c.id,
            deals.c.opened_at < t,
            or_(deals.c.opened_at >= since, deals.c.closed_at.is_(None), deals.c.closed_at >= t),
        ),
    )
    stmt = select(clients.c.id).where(clients.c.created_at < t, not_(lost), active)
    stmt = scope.clients(session, stmt, query)
    return set(session.connection.execute(stmt).scalars())


def _created(
    session: Session, query: ReportQuery, start: dt.datetime, end: dt.datetime
) -> dict[int, dt.datetime]:
    """When each client the report may count was created, up to ``end``."""
    clients = session.table("clients")
    stmt = scope.clients(
        session, select(clients.c.id, clients.c.created_at).where(clients.c.created_at < end), query
    )
    return {cid: at for cid, at in session.connection.execute(stmt)}


def _groups(session: Session, query: ReportQuery, by: str, ids: set[int]) -> dict[int, str]:
    """Each client's current segment or owner login."""
    clients, users = session.table("clients"), session.table("users")
    if by == "segment":
        stmt = select(clients.c.id, clients.c.segment)
    else:
        stmt = select(clients.c.id, users.c.login).select_from(
            clients.outerjoin(users, users.c.id == clients.c.owner_id)
        )
    stmt = scope.clients(session, stmt, query)
    return {cid: (name or NONE) for cid, name in session.connection.execute(stmt) if cid in ids}


def chart(result: ReportResult, path: Path) -> None:
    """New (up) and lost (down) per row, the base at the end as a line."""
    from crmkit.core import charts

    key = result.columns[0].name
    labels = [str(r[key]) for r in result.rows]
    fig, ax = charts.figure(10, 5.5)
    xs = list(range(len(labels)))
    gained = [r["new"] + r["returned"] for r in result.rows]
    lost = [-r["lost"] for r in result.rows]
    up = ax.bar(xs, gained, color=charts.COLORS[2], label="new + returned")
    down = ax.bar(xs, lost, color=charts.COLORS[3], label="lost")
    charts.label_bars(ax, up, [str(v) if v else "" for v in gained])
    charts.label_bars(ax, down, [str(-v) if v else "" for v in lost])
    ax.axhline(0, color="#444444", linewidth=0.8)
    ax.set_ylabel("Clients per row")
    ax.set_xticks(xs, labels, rotation=45 if len(labels) > 6 else 0, ha="right")
    base = ax.twinx()
    base.plot(
        xs,
        [r["base_end"] for r in result.rows],
        color=charts.COLORS[0],
        marker="o",
        label="base at end",
    )
    base.set_ylabel("Clients in the base")
    base.spines["top"].set_visible(False)
    handles = [up, down, *base.get_lines()]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper left", frameon=False)
    period = result.period.label if result.period else ""
    ax.set_title(f"Client base, {period}")
    charts.save(fig, path)


__all__ = ["reports", "run"]
