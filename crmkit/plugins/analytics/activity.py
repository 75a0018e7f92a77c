"""The ``activity`` report: what each manager did in a period (issue 7).

Per user: interactions by kind (calls split inbound / outbound, meetings),
distinct clients contacted, clients in work left without contact for more
than ``--idle-days`` days as of the period's end, tasks done and tasks
overdue. Every figure is an SQL aggregate over the records the reader may
read (four grouped queries, whatever the number of users); the formulas are
in ``docs/analytics/activity.rst``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from crmkit.core.reports import Report, ReportQuery, ReportResult
    from crmkit.core.store import Session

#: the report's own options, as JSON Schema properties
OPTIONS: dict[str, Any] = {
    "idle_days": {
        "type": "integer",
        "minimum": 1,
        "maximum": 3650,
        "default": 30,
        "description": "A client in work is idle after this many days without an interaction.",
    },
}

#: the lifecycle stages of clients no longer in work
CLOSED_STAGES = ("lost",)
#: the roles listed even without activity (when the reader may read their clients)
LISTED_ROLES = ("manager", "head")
#: the kinds with a column of their own besides calls and meetings (the rest are "other")
OWN_COLUMNS = {"meeting": "meetings", "email": "emails"}
#: the columns that "other" leaves out
_COUNTED = ("calls_out", "calls_in", "meetings", "emails")


def reports() -> list[Report]:
    from crmkit.core.reports import Report

    return [
        Report(
            "activity",
            "Manager activity",
            run,
            description=(
                "Per manager: interactions by kind, calls in and out, meetings, clients "
                "contacted, idle clients in work, tasks done and overdue."
            ),
            filters=("period", "team", "user"),
            options=OPTIONS,
            default_period="last-30-days",
            chart=chart,
        )
    ]


def run(session: Session, query: ReportQuery) -> ReportResult:
    """Compute the activity per user (see ``docs/analytics/activity.rst``)."""
    from sqlalchemy import and_, case, exists, func, not_, or_, select

    from crmkit.core.reports import Column, ReportResult

    from . import scope

    period = query.period
    assert period is not None  # the report has a default period
    start, end = period.bounds(session.crm.tz)
    idle_days = int(query.options["idle_days"])
    cutoff = end - dt.timedelta(days=idle_days)
    conn = session.connection
    inter, clients, tasks = (session.table(n) for n in ("interactions", "clients", "tasks"))
    users = session.table("users")
    listed = select(users.c.id).where(users.c.role.in_(LISTED_ROLES))
    in_period = and_(inter.c.occurred_at >= start, inter.c.occurred_at < end)
    by_managers = and_(in_period, inter.c.user_id.in_(listed))

    # 1. interactions per user, kind and direction
    stmt = (
        select(inter.c.user_id, inter.c.kind, inter.c.direction, func.count().label("n"))
        .where(by_managers)
        .group_by(inter.c.user_id, inter.c.kind, inter.c.direction)
    )
    by_kind = conn.execute(scope.interactions(session, stmt, query)).all()

    # 2. distinct clients contacted, per user and over all users
    stmt = (
        select(inter.c.user_id, func.count(func.distinct(inter.c.client_id)).label("n"))
        .where(by_managers)
        .group_by(inter.c.user_id)
    )
    contacted = {r.user_id: r.n for r in conn.execute(scope.interactions(session, stmt, query))}
    stmt = select(func.count(func.distinct(inter.c.client_id))).where(by_managers)
    contacted_total = conn.execute(scope.interactions(session, stmt, query)).scalar_one()
    stmt = select(func.count()).where(
        in_period, or_(inter.c.user_id.is_(None), inter.c.user_id.not_in(listed))
    )
    by_others = conn.execute(scope.interactions(session, stmt, query)).scalar_one()

    # 3. clients in work, per owner, without a (readable) interaction in [cutoff, end)
    card = clients.alias("card")  # not "clients": the policies on interactions read that
    recent = session.access.filter(
        select(inter.c.id).where(
            inter.c.client_id == card.c.id,
            inter.c.occurred_at >= cutoff,
            inter.c.occurred_at < end,
        ),
        "read",
        "interaction",
        inter,
    )
    stmt = (
        select(card.c.owner_id, func.count().label("n"))
        .where(
            card.c.owner_id.in_(listed),
            card.c.created_at < cutoff,
            or_(card.c.stage.is_(None), card.c.stage.not_in(CLOSED_STAGES)),
            not_(exists(recent)),
        )
        .group_by(card.c.owner_id)
    )
    idle = {r.owner_id: r.n for r in conn.execute(scope.clients(session, stmt, query, card))}

    # 4. tasks per assignee: done in the period, done late in it, open and overdue at its end
    done_in = and_(tasks.c.done_at >= start, tasks.c.done_at < end)
    open_overdue = and_(
        tasks.c.due_at < end,
        tasks.c.created_at < end,
        or_(tasks.c.done_at.is_(None), tasks.c.done_at >= end),
    )
    stmt = (
        select(
            tasks.c.assignee_id,
            func.sum(case((done_in, 1), else_=0)).label("done"),
            func.sum(case((and_(done_in, tasks.c.done_late.is_(True)), 1), else_=0)).label("late"),
            func.sum(case((open_overdue, 1), else_=0)).label("open"),
        )
        .where(or_(done_in, open_overdue), tasks.c.assignee_id.in_(listed))
        .group_by(tasks.c.assignee_id)
    )
    task_rows = {r.assignee_id: r for r in conn.execute(scope.tasks(session, stmt, query))}

    # the managers and heads with a figure, and those the reader may follow
    owners = scope.owner_ids(session, query)
    found = conn.execute(
        select(
            users.c.id, users.c.login, users.c.name, users.c.role, users.c.team_id, users.c.active
        )
    ).all()
    people = {u.id: u for u in found}

    kinds: dict[str, dict[Any, int]] = {}
    calls_in: dict[Any, int] = {}
    calls_out: dict[Any, int] = {}
    for r in by_kind:
        per = kinds.setdefault(r.kind, {})
        per[r.user_id] = per.get(r.user_id, 0) + r.n
        if r.kind == "call" and r.direction == "inbound":
            calls_in[r.user_id] = calls_in.get(r.user_id, 0) + r.n
        elif r.kind == "call" and r.direction == "outbound":
            calls_out[r.user_id] = calls_out.get(r.user_id, 0) + r.n

    active_ids = set(contacted) | set(idle) | set(task_rows)
    for per in kinds.values():
        active_ids |= set(per)
    for u in found:
        if (
            u.active
            and u.role in LISTED_ROLES
            and (owners is None or u.id in owners)
            and session.access.allows("read", "client", {"owner_id": u.id, "team_id": u.team_id})
        ):
            active_ids.add(u.id)

    known = list(session.crm.interaction_kinds)
    occurring = sorted(kinds, key=lambda k: (known.index(k) if k in known else len(known), k))

    rows: list[dict[str, Any]] = []
    for uid in active_ids:
        person = people[uid]
        task = task_rows.get(uid)
        row: dict[str, Any] = {
            "manager": person.login,
            "name": person.name,
            "interactions": sum(per.get(uid, 0) for per in kinds.values()),
            "calls_out": calls_out.get(uid, 0),
            "calls_in": calls_in.get(uid, 0),
            **{col: kinds.get(kind, {}).get(uid, 0) for kind, col in OWN_COLUMNS.items()},
        }
        row["other"] = row["interactions"] - sum(row[c] for c in _COUNTED)
        row["clients_contacted"] = contacted.get(uid, 0)
        row["idle_clients"] = idle.get(uid, 0)
        row["tasks_done"] = int(task.done or 0) if task is not None else 0
        late = int(task.late or 0) if task is not None else 0
        still_open = int(task.open or 0) if task is not None else 0
        row["tasks_overdue"] = late + still_open
        row["_late"], row["_open"] = late, still_open
        rows.append(row)
    rows.sort(key=lambda r: (-r["interactions"], r["manager"]))

    columns = [
        Column("manager", "Manager"),
        Column("interactions", "Total", "integer"),
        Column("calls_out", "Calls out", "integer"),
        Column("calls_in", "Calls in", "integer"),
        Column("meetings", "Meetings", "integer"),
        Column("emails", "Emails", "integer"),
        Column("other", "Other", "integer"),
        Column("clients_contacted", "Clients", "integer"),
        Column("idle_clients", f"Idle {idle_days}d+", "integer"),
        Column("tasks_done", "Tasks done", "integer"),
        Column("tasks_overdue", "Overdue", "integer"),
    ]
    summary: dict[str, Any] = {"managers": len(rows)}
    for key in ("interactions", "calls_out", "calls_in", "meetings", "emails", "other"):
        summary[key] = sum(r[key] for r in rows)
    summary["by_kind"] = {k: sum(kinds[k].values()) for k in occurring}
    summary["clients_contacted"] = contacted_total
    summary["idle_clients"] = sum(r["idle_clients"] for r in rows)
    summary["tasks_done"] = sum(r["tasks_done"] for r in rows)
    summary["tasks_overdue"] = sum(r["tasks_overdue"] for r in rows)
    summary["tasks_overdue_open"] = sum(r.pop("_open") for r in rows)
    summary["tasks_done_late"] = sum(r.pop("_late") for r in rows)
    summary["interactions_by_other_roles"] = by_others
    notes = [
        "Managers and heads; interactions logged by other users (marketers' campaigns, "
        "admins) are only counted in interactions_by_other_roles.",
        "Interactions are counted for the user who logged them; other: every interaction "
        "that is not an outbound or inbound call, a meeting or an email.",
        "Clients: distinct clients contacted in the period. "
        f"Idle {idle_days}d+: clients owned, not lost, with no interaction in the "
        f"{idle_days} days before the period's end.",
        "Overdue: tasks open at the period's end past their due time, plus those done late "
        "in the period.",
    ]
    return ReportResult("activity", columns, rows, summary=summary, notes=notes, period=period)


def chart(result: ReportResult, path: Path) -> None:
    """Grouped horizontal bars per manager: calls out, calls in, meetings, other."""
    from crmkit.core import charts

    series = [
        ("calls_out", "Calls out"),
        ("calls_in", "Calls in"),
        ("meetings", "Meetings"),
        ("other", "Other (emails, letters, ...)"),
    ]
    rows = result.rows[::-1]  # the busiest at the top
    n = max(len(rows), 1)
    height = max(3.5, 1.6 + 0.2 * len(series) * n)
    fig, ax = charts.figure(width=10.0, height=min(height, 40.0))
    band = 0.8
    bar = band / len(series)
    labels = [
        f"{r['name']} ({r['manager']})" if r["name"] and r["name"] != r["manager"] else r["manager"]
        for r in rows
    ]
    most = max([max(_chart_value(r, k) for k, _ in series) for r in rows] or [0])
    for i, (key, title) in enumerate(reversed(series)):
        ys = [y - band / 2 + bar * (i + 0.5) for y in range(len(rows))]
        values = [_chart_value(r, key) for r in rows]
        bars = ax.barh(
            ys,
            values,
            height=bar * 0.92,
            label=title,
            color=charts.COLORS[len(series) - 1 - i],
        )
        charts.label_bars(ax, bars, [str(v) if v else "" for v in values])
    ax.set_yticks(range(len(rows)), labels)
    ax.set_xlabel("Interactions logged")
    ax.set_xlim(0, max(most, 1) * 1.12)
    period = "all time"
    if result.period is not None:
        p = result.period
        last = p.end - dt.timedelta(days=1)
        period = f"{p.label} ({p.start.isoformat()} to {last.isoformat()})"
        if p.label in (p.start.isoformat(), f"{p.start.isoformat()}..{last.isoformat()}"):
            period = p.label
    fig.suptitle(f"Activity per manager, {period}", fontsize=13, fontweight="bold")
    for y, r in enumerate(rows):
        if not r["interactions"]:
            ax.text(most * 0.01, y, "no interactions", va="center", fontsize=9, color="#666666")
    if not rows:
        ax.text(0.5, 0.5, "No activity", ha="center", va="center", transform=ax.transAxes)
    handles, names = ax.get_legend_handles_labels()
    fig.legend(
        handles[::-1], names[::-1], loc="outside lower center", ncol=len(series), frameon=False
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    charts.save(fig, path)


def _chart_value(row: dict[str, Any], key: str) -> int:
    """A bar's length: "other" on the chart is everything but calls and meetings."""
    if key == "other":
        return int(row["interactions"] - row["calls_out"] - row["calls_in"] - row["meetings"])
    return int(row[key])
