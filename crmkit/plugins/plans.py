"""Built-in plugin: the ``plan`` report, plan versus fact (issue 8).

``crmkit report plan [--period P] [--team T | --user LOGIN] [--as-of DATE]``
shows, for every plan of the period the reader may read (``s.plans``), the
plan, the fact (the KPI computed by :func:`crmkit.core.kpis.run`: one run for
every planned user and team member at once; a team's fact is the total of its
members', nested teams included), the attainment, the run-rate projection to
the period's end, whether that projection meets the plan, and what it takes
per remaining day to close the gap. The formulas are in ``docs/plans.rst``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from crmkit.core.reports import Report, ReportQuery, ReportResult
    from crmkit.core.store import Session

#: the report's own options, as JSON Schema properties
OPTIONS: dict[str, Any] = {
    "as_of": {
        "type": "string",
        "pattern": r"^\d{4}-\d{2}-\d{2}$",
        "description": (
            "Look from the end of this day (YYYY-MM-DD, the deployment's time zone) "
            "instead of now: facts up to then, elapsed days to then."
        ),
    },
}
_SECONDS_PER_DAY = 86400.0


@hookimpl(trylast=True)
def crmkit_reports() -> list[Report]:
    from crmkit.core.reports import Report

    return [
        Report(
            "plan",
            "Plan versus fact",
            run,
            description=(
                "Per plan of the period (a person's or a team's): plan, fact, attainment, the "
                "run-rate projection to the period's end, on track or not, and the gap per "
                "remaining day. Default period: the current month."
            ),
            filters=("period", "team", "user"),
            options=OPTIONS,
            chart=chart,
        )
    ]


def run(session: Session, query: ReportQuery) -> ReportResult:
    """Compute plan versus fact (see ``docs/plans.rst``)."""
    from sqlalchemy import select

    from crmkit.core.kpis import Window, total
    from crmkit.core.kpis import run as run_kpis
    from crmkit.core.plans import figures, moment
    from crmkit.core.reports import Column, ReportResult, parse_period

    now, day = moment(session, query)
    period = query.period or parse_period(day.strftime("%Y-%m"))
    start, end = period.bounds(session.crm.tz)
    cut = min(max(now, start), end)
    plans = session.plans.list(period=period, exact=True, user=query.user, team=query.team)

    # the users whose facts are needed: planned users and every member of a planned team
    users = session.table("users")
    teams = session.table("teams")
    conn = session.connection
    parents = {r.id: r.parent_id for r in conn.execute(select(teams.c.id, teams.c.parent_id))}
    team_of = {r.id: r.team_id for r in conn.execute(select(users.c.id, users.c.team_id))}
    names = {r.id: r.name for r in conn.execute(select(users.c.id, users.c.name))}

    def members(team_id: int) -> list[int]:
        def inside(t: int | None) -> bool:
            while t is not None:
                if t == team_id:
                    return True
                t = parents.get(t)
            return False

        return sorted(u for u, t in team_of.items() if inside(t))

    team_members = {p.team_id: members(p.team_id) for p in plans if p.scope == "team" and p.team_id}
    wanted = {p.user_id for p in plans if p.user_id is not None}
    for ids in team_members.values():
        wanted.update(ids)
    kpis = {p.kpi: session.crm.kpi(p.kpi) for p in plans}
    facts: dict[str, Any] = {}
    if plans:
        window = Window(start, cut, tuple(sorted(wanted)), period=period, now=now)
        facts = run_kpis(session, list(kpis.values()), window)

    days = (end - start).total_seconds() / _SECONDS_PER_DAY
    elapsed = (cut - start).total_seconds() / _SECONDS_PER_DAY
    started = now > start
    rows: list[dict[str, Any]] = []
    for plan in plans:
        kpi = kpis[plan.kpi]
        per_user = facts.get(plan.kpi, {})
        if plan.scope == "team":
            fact = total(per_user[u] for u in team_members.get(plan.team_id, []))
        else:
            fact = per_user[plan.user_id]
        target = float(plan.target)
        row: dict[str, Any] = {
            "who": plan.who,
            "name": plan.team if plan.scope == "team" else names.get(plan.user_id or 0),
            "scope": plan.scope,
            "team": plan.team,
            "kpi": plan.kpi,
            "unit": kpi.unit,
            "direction": kpi.direction,
            "plan": target,
        }
        row.update(figures(kpi, target, fact.value, elapsed, days, started))
        row["plan_id"] = plan.id
        rows.append(row)

    columns = [
        Column("who", "Person or team"),
        Column("kpi", "KPI"),
        Column("unit", "Unit"),
        Column("plan", "Plan", "number"),
        Column("fact", "Fact", "number"),
        Column("attainment", "Attainment", "percent"),
        Column("projection", "Projection", "number"),
        Column("on_track", "On track"),
        Column("gap_per_day", "Gap per day", "number"),
    ]
    summary: dict[str, Any] = {
        "plans": len(rows),
        "on_track": sum(1 for r in rows if r["on_track"] is True),
        "behind": sum(1 for r in rows if r["on_track"] is False),
        "as_of": cut.astimezone(session.crm.tz).isoformat(),
        "elapsed_days": round(elapsed, 2),
        "period_days": round(days, 2),
    }
    notes = [
        "Fact: the KPI over the period up to the as-of moment; a team's fact adds up its "
        "members' (nested teams included).",
        "Attainment: fact / plan, or plan / fact when lower is better. Projection: "
        "fact / elapsed days x period days (a ratio KPI: its value); none before the "
        "period starts.",
        "Gap per day: (plan - fact) / remaining days, at least 0: what each remaining day "
        "must add (lower is better: what each day may still add).",
    ]
    return ReportResult("plan", columns, rows, summary=summary, notes=notes, period=period)


def chart(result: ReportResult, path: Path) -> None:
    """Horizontal bars of attainment per plan, with a line at 100%."""
    from crmkit.core import charts

    rows = result.rows[::-1]  # the first plan at the top
    height = max(3.0, 1.4 + 0.45 * len(rows))
    fig, ax = charts.figure(width=9.0, height=min(height, 40.0))
    values = [_bar(r) for r in rows]
    colors = [
        charts.COLORS[2]
        if r["on_track"]
        else charts.COLORS[3]
        if r["on_track"] is False
        else charts.COLORS[6]
        for r in rows
    ]
    bars = ax.barh(range(len(rows)), [v * 100 for v in values], color=colors, height=0.6)
    texts = [
        "met (nothing happened)"
        if r["attainment"] is None and r["fact"] == 0
        else ""
        if r["attainment"] is None
        else f"{r['attainment'] * 100:.0f}%"
        for r in rows
    ]
    charts.label_bars(ax, bars, texts)
    ax.set_yticks(range(len(rows)), [f"{r['who']} · {r['kpi']}" for r in rows])
    ax.axvline(100, color="#333333", linewidth=1.2, linestyle="--")
    ax.set_xlabel("Attainment, % of plan (green: on track, red: behind)")
    most = max([v * 100 for v in values] or [0])
    ax.set_xlim(0, max(most, 100) * 1.18)
    title = "Plan versus fact"
    if result.period is not None:
        title += f", {result.period.label}"
    fig.suptitle(title, fontsize=13, fontweight="bold")
    if not rows:
        ax.text(0.5, 0.5, "No plans", ha="center", va="center", transform=ax.transAxes)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    charts.save(fig, path)


def _bar(row: dict[str, Any]) -> float:
    if row["attainment"] is None:
        return 1.0 if row["fact"] == 0 and row["direction"] == "lower" else 0.0
    return float(row["attainment"])
