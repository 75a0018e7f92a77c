"""The ``funnel`` report: each stage of one deal pipeline over a period, and the whole-funnel rates.

Everything is computed in SQL from the *stays* of ``stage_changes`` (see
``docs/analytics/funnel.rst`` for every formula). A row of the history is a
stay: the deal entered ``to_stage`` at ``at``, and the core closes it when
the deal moves on (``left_at``, ``next_stage``, ``stay_seconds``), with the
deal's amount during the stay and its opening time beside it. So the report
never pairs a change with the next one at read time; it reads four slices of
the stays, each through a covering index in stage order (no sort, no join
with ``deals`` unless a filter or a policy needs the deal):

1. the stays that *began* in the period (``ix_stage_changes_stays_in``):
   entered, money, moved on, lost, and the cohort of the deals opened in it;
2. the stays open at the period's end (``ix_stage_changes_stays_out``): in
   stage, stalled;
3. the stays that *ended* in the period (the same index): their count, mean
   and median length;
4. the lost reasons, with the deals of the stays lost in the period.

The median of each stage is exact: PostgreSQL's ``percentile_cont(0.5)``;
on SQLite the one or two middle stays, read in the order of
``ix_stage_changes_stay_seconds`` (``LIMIT``/``OFFSET`` on the count of 3).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.pipeline import Pipeline
    from crmkit.core.reports import Report, ReportQuery, ReportResult
    from crmkit.core.store import Session

from crmkit.core.schema import seconds_between as schema_seconds_between

DAY = 86400


def reports() -> list[Report]:
    from crmkit.core.reports import Report

    return [
        Report(
            name="funnel",
            title="Sales funnel",
            run=funnel,
            description=(
                "Per stage of one deal pipeline: entered, moved on, lost (with reasons), "
                "money, conversion, time in stage, stalled; win, close and fit rates, deal length."
            ),
            filters=("period", "pipeline", "team", "user", "segment"),
            default_period="last-12-months",
            chart=draw,
        )
    ]


# -- SQL helpers ---------------------------------------------------------------------------
seconds_between = schema_seconds_between  # re-exported: the reports of this plugin use it


def pipeline_of(session: Session, query: ReportQuery) -> Pipeline:
    """The pipeline the funnel shows: ``--pipeline`` or the first deal pipeline."""
    from crmkit.core.errors import ValidationError

    crm = session.crm
    if query.pipeline is not None:
        return crm.pipeline(query.pipeline)
    for flow in crm.pipelines.values():
        if flow.entity == "deal":
            return flow
    raise ValidationError("the deployment has no deal pipeline", field="pipeline")


def proposal_stage(flow: Pipeline) -> str | None:
    """The stage marked ``proposal``, else the stage named ``proposal``, else None."""
    marked = flow.with_mark("proposal")
    if marked:
        return marked[0].name
    return "proposal" if "proposal" in flow.stage_names else None


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _days(total_seconds: Any, count: Any) -> float | None:
    if not count:
        return None
    return round(int(total_seconds) / int(count) / DAY, 2)


# -- the report ----------------------------------------------------------------------------
def funnel(session: Session, query: ReportQuery) -> ReportResult:
    """Per stage and whole-funnel figures of one pipeline over ``query.period``."""
    from sqlalchemy import and_, case, false, func, literal, select

    from crmkit.core.pipeline import LOST, WON
    from crmkit.core.reports import Column, ReportResult
    from crmkit.core.schema import UTCDateTime

    from . import scope

    period = query.period
    assert period is not None  # the report has a default period
    flow = pipeline_of(session, query)
    start, end = period.bounds(session.crm.tz)
    conn = session.connection
    postgres = conn.dialect.name == "postgresql"
    c, deals = session.table("stage_changes"), session.table("deals")
    names = [stage.name for stage in flow.stages]
    mql = [s.name for s in flow.with_mark("mql")]
    sql = [s.name for s in flow.with_mark("sql")]
    proposal = proposal_stage(flow)
    joined = scope.deals_filtered(session, query)

    def when(value: dt.datetime) -> Any:
        return literal(value, UTCDateTime())

    def stays(*columns: Any, stages: list[str] = names) -> Any:
        """SELECT over the pipeline's stays of ``stages``; joined to their deals when filtered."""
        stmt = select(*columns).where(c.c.pipeline == flow.name, c.c.to_stage.in_(stages))
        if not joined:
            return stmt.select_from(c)
        stmt = stmt.select_from(c.join(deals, deals.c.id == c.c.entity_id))
        return scope.deals(session, stmt, query, deals)

    def count(cond: Any) -> Any:
        """How many rows meet ``cond`` (an aggregate ``FILTER``: cheaper than a ``CASE``)."""
        return func.count().filter(cond)

    ended = c.c.left_at < when(end)  # NULL (still there) is not ended
    entered = and_(c.c.at >= when(start), c.c.at < when(end))
    cohort = c.c.deal_opened_at >= when(start)
    terminal = [WON, LOST]

    # 1. the stays that began in the period, followed to its end
    columns = [
        c.c.to_stage.label("stage"),
        func.count().label("entered"),
        func.coalesce(func.sum(c.c.deal_amount), 0).label("amount"),
        count(and_(ended, c.c.next_stage != LOST)).label("moved"),
        count(cohort).label("cohort"),
    ]  # lost: the lost stays counted by reason (4.)
    sums: dict[str, dict[str, Any]] = {}
    rows_in = stays(*columns, stages=[*names, *terminal]).where(entered).group_by(c.c.to_stage)
    for row in conn.execute(rows_in):
        sums[row.stage] = dict(row._mapping)

    # 2. the stays open at the period's end: in stage, and stalled at min(end, now)
    as_of = min(end, dt.datetime.now(dt.UTC))
    cutoffs = [
        (c.c.to_stage == s.name, when(as_of - dt.timedelta(days=s.days)))
        for s in flow.stages
        if s.days
    ]
    stalled = c.c.at < case(*cutoffs, else_=None) if cutoffs else false()
    open_at_end = [
        stays(c.c.to_stage.label("stage"), func.count().label("n"), count(stalled).label("stalled"))
        .where(c.c.at < when(end), still)
        .group_by(c.c.to_stage)
        for still in (c.c.left_at.is_(None), c.c.left_at >= when(end))
    ]
    for stmt in open_at_end:
        for row in conn.execute(stmt):
            acc = sums.setdefault(row.stage, {})
            acc["in_stage"] = acc.get("in_stage", 0) + row.n
            acc["stalled"] = acc.get("stalled", 0) + row.stalled

    # 3. the stays that ended in the period: count, total and median seconds
    left = and_(c.c.left_at >= when(start), ended)
    out = [
        c.c.to_stage.label("stage"),
        func.count().label("n"),
        func.sum(c.c.stay_seconds).label("secs"),
    ]
    if postgres:
        out.append(func.percentile_cont(0.5).within_group(c.c.stay_seconds).label("median"))
    for row in conn.execute(stays(*out).where(left).group_by(c.c.to_stage)):
        acc = sums.setdefault(row.stage, {})
        acc.update(left_n=row.n, left_secs=row.secs)
        acc["median"] = (
            row.median
            if postgres
            else _middle(stays, c.c.stay_seconds, row.stage, row.n, left, conn)
        )

    # 4. the lost reasons of the stays that began in the period and were lost before its end
    reasons: dict[str, dict[str, int]] = {}
    lost_stmt = (
        stays(c.c.to_stage.label("stage"), c.c.lost_reason, func.count().label("n"))
        .where(c.c.next_stage == LOST, unindexed(and_(entered, ended)))
        .group_by(c.c.to_stage, c.c.lost_reason)
    )
    for row in conn.execute(lost_stmt):
        counts = reasons.setdefault(row.stage, {})
        key = row.lost_reason or "(none)"
        counts[key] = counts.get(key, 0) + row.n
    empty: dict[str, Any] = {}

    rows = []
    for stage in flow.stages:
        acc = sums.get(stage.name, empty)
        lost_there = sorted(reasons.get(stage.name, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        n_in, moved = int(acc.get("entered", 0)), int(acc.get("moved", 0))
        lost = sum(n for _, n in lost_there)
        rows.append(
            {
                "stage": stage.name,
                "title": stage.title,
                "entered": n_in,
                "amount": Decimal(acc.get("amount", 0) or 0).quantize(Decimal("0.01")),
                "moved_on": moved,
                "conversion": _ratio(moved, n_in),
                "lost": lost,
                "lost_reasons": ", ".join(f"{k} {n}" for k, n in lost_there if n),
                "lost_reason_counts": {k: int(n) for k, n in lost_there if n},
                "in_stage": int(acc.get("in_stage", 0)),
                "stalled": int(acc.get("stalled", 0)),
                "days": stage.days,
                "left": int(acc.get("left_n", 0)),
                "mean_days": _days(acc.get("left_secs", 0), acc.get("left_n", 0)),
                "median_days": (
                    None if acc.get("median") is None else round(float(acc["median"]) / DAY, 2)
                ),
            }
        )

    # the cohort: deals that entered the first stage in the period, followed to the end
    cohort_counts = _cohort_flags(session, query, flow, start, end, joined, sums)
    won_row = sums.get(WON, empty)
    cohort_n = int(sums.get(flow.first.name, empty).get("cohort", 0))
    won_n = int(won_row.get("cohort", 0))
    reached_proposal = int(sums.get(proposal, empty).get("cohort", 0)) if proposal else 0
    proposal_won = cohort_counts["won_after_proposal"] if proposal else 0
    mql_n, sql_n = cohort_counts["mql"], cohort_counts["sql"]
    length = deal_length(session, query, flow, start, end)
    summary: dict[str, Any] = {
        "pipeline": flow.name,
        "pipeline_title": flow.title,
        "entered": cohort_n,
        "won": won_n,
        "win_rate": _ratio(won_n, cohort_n),
        "proposal_stage": proposal,
        "reached_proposal": reached_proposal,
        "won_after_proposal": proposal_won,
        "close_rate": _ratio(proposal_won, reached_proposal) if proposal else None,
        "mql": mql_n if mql else None,
        "sql": sql_n if sql else None,
        "fit_rate": _ratio(sql_n, mql_n) if mql and sql else None,
        "won_in_period": int(won_row.get("entered", 0)),
        "won_amount_in_period": Decimal(won_row.get("amount", 0) or 0).quantize(Decimal("0.01")),
        "lost_in_period": int(sums.get(LOST, empty).get("entered", 0)),
        **length,
    }
    notes = [
        "entered, money, moved on, lost, conversion: deals that entered the stage in the "
        "period, followed to the period's end; in stage and stalled: at the period's end; "
        "time in stage: deals that left the stage in the period (days).",
        "win rate, close rate, fit rate: the deals that entered "
        f"{flow.first.title!r} in the period, followed to the period's end.",
    ]
    if proposal is None:
        notes.append("close rate: the pipeline has no stage marked or named 'proposal'.")
    if not (mql and sql):
        notes.append("fit rate: the pipeline marks no mql and sql stages.")
    # two subqueries: SQLite reads a lone min() or max() off the (pipeline, currency) index
    low, high = (
        conn.execute(
            scope.deals(
                session, select(fn(deals.c.currency)).where(deals.c.pipeline == flow.name), query
            )
        ).scalar()
        for fn in (func.min, func.max)
    )
    if low != high:
        notes.append("money: amounts in several currencies are added as they are stored.")
    return ReportResult(
        report="funnel",
        columns=[
            Column("title", "Stage"),
            Column("entered", "Entered", "integer"),
            Column("amount", "Money", "money"),
            Column("moved_on", "Moved on", "integer"),
            Column("conversion", "Conversion", "percent"),
            Column("lost", "Lost", "integer"),
            Column("lost_reasons", "Lost reasons"),
            Column("in_stage", "In stage", "integer"),
            Column("stalled", "Stalled", "integer"),
            Column("mean_days", "Mean days", "number"),
            Column("median_days", "Median days", "number"),
        ],
        rows=rows,
        summary=summary,
        notes=notes,
        period=period,
    )


def unindexed(cond: Any) -> Any:
    """``cond``, written so that no index is chosen for it (``CASE WHEN cond THEN 1 END = 1``).

    SQLite's planner prefers a range on a column to an index that matches a
    ``GROUP BY`` or an ``ORDER BY``; where the range keeps most rows, walking
    the matching index and testing each row is the faster plan.
    """
    from sqlalchemy import case

    return case((cond, 1), else_=0) == 1


def _middle(stays: Any, seconds: Any, stage: str, n: int, left: Any, conn: Any) -> float | None:
    """SQLite: the median ``stay_seconds`` of the stays of ``stage`` that ended in the period.

    The one (odd ``n``) or two (even) middle values, walked in the order of
    ``ix_stage_changes_stay_seconds`` (the period's condition is
    :func:`unindexed`, so that the planner keeps that order instead of
    sorting the stays found by their exit).
    """
    if not n:
        return None
    stmt = (
        stays(seconds, stages=[stage])
        .where(unindexed(left))
        .order_by(seconds)
        .offset((n - 1) // 2)
        .limit(1 if n % 2 else 2)
    )
    values = [int(v) for (v,) in conn.execute(stmt)]
    return sum(values) / len(values) if values else None


def _cohort_flags(
    session: Session,
    query: ReportQuery,
    flow: Pipeline,
    start: dt.datetime,
    end: dt.datetime,
    joined: bool,
    sums: dict[str, dict[str, Any]],
) -> dict[str, int]:
    """Of the deals opened in the period: how many reached mql, sql, and won after the proposal.

    Without skipping, a deal enters the first of several marked stages before
    any other, and a won deal went through every stage, so the counts are
    those of the stays that began in the period (``sums``). A pipeline that
    allows skipping needs each deal's stays: one ``GROUP BY`` per deal.
    """
    from sqlalchemy import and_, case, func, literal, select

    from crmkit.core.pipeline import WON
    from crmkit.core.schema import UTCDateTime

    from . import scope

    mql = [s.name for s in flow.with_mark("mql")]
    sql = [s.name for s in flow.with_mark("sql")]
    proposal = proposal_stage(flow)

    def cohort_of(stage: str | None) -> int:
        return int(sums.get(stage, {}).get("cohort", 0)) if stage else 0

    if not flow.allow_skip:
        return {
            "mql": cohort_of(mql[0] if mql else None),
            "sql": cohort_of(sql[0] if sql else None),
            "won_after_proposal": cohort_of(WON) if proposal else 0,
        }
    c, deals = session.table("stage_changes"), session.table("deals")
    wanted = sorted({*mql, *sql, *([proposal] if proposal else []), WON})

    def flag(cond: Any) -> Any:
        return func.max(case((cond, 1), else_=0))

    per_deal = (
        select(
            flag(c.c.to_stage.in_(mql or [""])).label("mql"),
            flag(c.c.to_stage.in_(sql or [""])).label("sql"),
            flag(c.c.to_stage == (proposal or "")).label("proposal"),
            flag(c.c.to_stage == WON).label("won"),
        )
        .where(
            c.c.pipeline == flow.name,
            c.c.to_stage.in_(wanted),
            c.c.deal_opened_at >= literal(start, UTCDateTime()),
            c.c.at < literal(end, UTCDateTime()),
        )
        .group_by(c.c.entity_id)
    )
    if joined:
        per_deal = scope.deals(
            session, per_deal.select_from(c.join(deals, deals.c.id == c.c.entity_id)), query, deals
        )
    d = per_deal.subquery("per_deal")
    row = session.connection.execute(
        select(
            func.coalesce(func.sum(d.c.mql), 0),
            func.coalesce(func.sum(d.c.sql), 0),
            func.coalesce(func.sum(case((and_(d.c.proposal == 1, d.c.won == 1), 1), else_=0)), 0),
        )
    ).one()
    return {"mql": int(row[0]), "sql": int(row[1]), "won_after_proposal": int(row[2])}


def deal_length(
    session: Session, query: ReportQuery, flow: Pipeline, start: dt.datetime, end: dt.datetime
) -> dict[str, Any]:
    """Deals won in the period: days from the deal's first interaction (or opening) to the win."""
    from sqlalchemy import func, literal, select

    from crmkit.core.pipeline import WON
    from crmkit.core.schema import UTCDateTime

    from . import scope

    c, deals = session.table("stage_changes"), session.table("deals")
    interactions = session.table("interactions")
    first_contact = (
        select(func.min(interactions.c.occurred_at))
        .where(interactions.c.deal_id == c.c.entity_id)
        .scalar_subquery()
    )
    began = func.coalesce(first_contact, c.c.deal_opened_at)
    won = select(
        seconds_between(session.connection.dialect.name, began, c.c.at).label("secs")
    ).where(
        c.c.pipeline == flow.name,
        c.c.to_stage == WON,
        c.c.at >= literal(start, UTCDateTime()),
        c.c.at < literal(end, UTCDateTime()),
    )
    if scope.deals_filtered(session, query):
        won = scope.deals(
            session, won.select_from(c.join(deals, deals.c.id == c.c.entity_id)), query, deals
        )
    w = won.subquery("won")
    conn = session.connection
    postgres = conn.dialect.name == "postgresql"
    figures = [func.count().label("n"), func.coalesce(func.sum(w.c.secs), 0).label("secs")]
    if postgres:
        figures.append(func.percentile_cont(0.5).within_group(w.c.secs).label("median"))
    row = conn.execute(select(*figures)).one()
    median = row.median if postgres else None
    if row.n and not postgres:  # SQLite: the one or two middle values
        middle = select(w.c.secs).order_by(w.c.secs).offset((row.n - 1) // 2)
        values = [int(v) for (v,) in conn.execute(middle.limit(1 if row.n % 2 else 2))]
        median = sum(values) / len(values)
    return {
        "deal_length_deals": int(row.n),
        "deal_length_mean_days": _days(row.secs, row.n),
        "deal_length_median_days": None if median is None else round(float(median) / DAY, 2),
    }


# -- the chart -----------------------------------------------------------------------------
def _money(value: Any) -> str:
    amount = float(value or 0)
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(amount) >= size:
            return f"{amount / size:,.1f}{unit}"
    return f"{amount:,.0f}"


def draw(result: ReportResult, path: Path) -> None:
    """A funnel drawn as a funnel: centred bars as wide as the deals entering each stage."""
    from crmkit.core import charts

    stages = result.rows
    won = stages[-1]["moved_on"] if stages else 0  # the last stage moves on only to won
    rows = [*stages, {"title": "Won", "entered": won, "amount": None, "conversion": None}]
    fig, ax = charts.figure(9.0, 1.2 + 0.75 * len(rows))
    widest = max([row["entered"] for row in rows] + [1])
    ys = list(range(len(rows)))
    widths = [row["entered"] for row in rows]
    colors = [charts.COLORS[0]] * len(stages)  # the stages in one colour, won in green
    bars = ax.barh(
        ys,
        widths,
        left=[-w / 2 for w in widths],
        height=0.8,
        color=[*colors, charts.COLORS[2]],
    )
    for y, row, bar in zip(ys, rows, bars, strict=True):
        conv = row["conversion"]
        if row["amount"] is None:
            text = f"{row['entered']} won"
        else:
            text = f"{row['entered']} deals · {_money(row['amount'])}"
        if conv is not None:
            text += f" · {conv:.0%} moved on"
        inside = bar.get_width() > widest * 0.45
        ax.text(
            0 if inside else bar.get_width() / 2 + widest * 0.02,
            y,
            text,
            ha="center" if inside else "left",
            va="center",
            fontsize=9,
            color="white" if inside else "black",
            fontweight="bold" if inside else "normal",
        )
    ax.set_yticks(ys, [row.get("title") or row["stage"] for row in rows])
    ax.invert_yaxis()
    ax.set_xlim(-widest * 0.55, widest * 1.1)
    ax.set_xticks([])
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    s = result.summary
    period = ""
    if result.period is not None:
        last = result.period.end - dt.timedelta(days=1)
        period = f"{result.period.label} ({result.period.start} to {last})"
    ax.set_title(f"Funnel: {s.get('pipeline_title') or s.get('pipeline')}, {period}")
    rates = [
        f"{label} {s[key]:.0%}"
        for label, key in (("win rate", "win_rate"), ("close rate", "close_rate"))
        if s.get(key) is not None
    ]
    if s.get("deal_length_median_days") is not None:
        rates.append(f"median deal length {s['deal_length_median_days']:.0f} days")
    ax.set_xlabel(
        f"{s.get('entered', 0)} deals entered" + ("; " if rates else "") + ", ".join(rates)
    )
    charts.save(fig, path)
