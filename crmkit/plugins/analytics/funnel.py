"""The ``funnel`` report: each stage of one deal pipeline over a period, and the whole-funnel rates.

Everything is computed in SQL from ``stage_changes`` (see
``docs/analytics/funnel.rst`` for every formula):

1. *visits*: one row per stage change of the pipeline made before the
   period's end, with the next change of the same deal (``LEAD`` over the
   deal's history) and the deal's funnel flags (windows over the deal:
   when it entered the first stage, whether it reached a stage marked
   ``mql``, ``sql``, the proposal stage, ``won``);
2. per visit, the seconds spent in the stage and its rank among the visits
   of the same stage that ended in the period (``ROW_NUMBER``), for the
   median;
3. one ``GROUP BY`` of additive sums per stage (and lost reason).

Medians are exact and portable: the rows ranked in the middle of each stage
(``n <= 2 * rank <= n + 2``: one row for an odd count, two for an even one)
are summed and counted in SQL, so the same statement runs on SQLite and
PostgreSQL and nothing but one row per stage and reason comes back to Python.
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
def seconds_between(dialect: str, start: Any, end: Any) -> Any:
    """SQL: whole seconds from ``start`` to ``end`` (two stored UTC times)."""
    from sqlalchemy import Integer, cast, extract, func

    if dialect == "postgresql":
        return cast(func.floor(extract("epoch", end - start)), Integer)
    return cast(func.strftime("%s", end), Integer) - cast(func.strftime("%s", start), Integer)


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
    dialect = session.connection.dialect.name
    changes, deals = session.table("stage_changes"), session.table("deals")
    first = flow.first.name
    mql = [s.name for s in flow.with_mark("mql")]
    sql = [s.name for s in flow.with_mark("sql")]
    proposal = proposal_stage(flow)

    def when(value: dt.datetime) -> Any:
        return literal(value, UTCDateTime())

    # 1. visits: each entry into a stage before the period's end, with the next move; every
    # window is over the deal's changes in order (one window, one sort of the changes)
    order = (changes.c.at, changes.c.id)
    by_deal = {"partition_by": changes.c.entity_id, "order_by": order}

    def first_entry(names: list[str]) -> Any:
        """1 on the deal's first change into one of ``names`` (the stages so marked), else 0."""
        if not names:
            return literal(0)
        if len(names) == 1 or not flow.allow_skip:
            # a deal enters a stage once, and without skipping it enters the first of
            # several marked stages before any other: no window needed
            return case((changes.c.to_stage == names[0], 1), else_=0)
        into = changes.c.to_stage.in_(names)
        so_far = func.sum(case((into, 1), else_=0)).over(**by_deal, rows=(None, 0))
        return case((and_(into, so_far == 1), 1), else_=0)

    def before(name: str | None) -> Any:
        """1 when the deal entered ``name`` at this change or before (used on ``won``)."""
        if name is None:
            return literal(0)
        if not flow.allow_skip:  # every won deal went through every stage
            return literal(1)
        return func.max(case((changes.c.to_stage == name, 1), else_=0)).over(
            **by_deal, rows=(None, 0)
        )

    visits = select(
        changes.c.entity_id.label("deal_id"),
        changes.c.to_stage.label("stage"),
        changes.c.at.label("at"),
        func.lead(changes.c.at).over(**by_deal).label("left_at"),
        func.lead(changes.c.to_stage).over(**by_deal).label("next_stage"),
        deals.c.amount.label("amount"),
        deals.c.lost_reason.label("lost_reason"),
        # opening a deal is its entry into the first stage
        deals.c.opened_at.label("funnel_at"),
        first_entry(mql).label("is_mql"),
        first_entry(sql).label("is_sql"),
        before(proposal).label("is_proposal"),
    ).select_from(changes.join(deals, deals.c.id == changes.c.entity_id))
    visits = visits.where(
        changes.c.entity == "deal", changes.c.pipeline == flow.name, changes.c.at < when(end)
    )
    v = scope.deals(session, visits, query, deals).subquery("visits")

    # 2. seconds in the stage, and the rank among the stage's visits that ended in the period
    secs = seconds_between(dialect, v.c.at, v.c.left_at)
    left_in = case((v.c.left_at >= when(start), 1), else_=0)
    entered_in = case((v.c.at >= when(start), 1), else_=0)
    cohort = case((v.c.funnel_at >= when(start), 1), else_=0)
    ranked = select(
        v.c.stage,
        v.c.amount,
        v.c.at,
        v.c.left_at,
        v.c.next_stage,
        v.c.is_mql,
        v.c.is_sql,
        v.c.is_proposal,
        entered_in.label("entered_in"),
        left_in.label("left_in"),
        cohort.label("cohort"),
        secs.label("secs"),
        case(
            (and_(entered_in == 1, v.c.next_stage == LOST), v.c.lost_reason),
            else_=None,
        ).label("reason"),
        func.row_number().over(partition_by=(v.c.stage, left_in), order_by=secs).label("pos"),
        func.count().over(partition_by=(v.c.stage, left_in)).label("n"),
    ).subquery("ranked")
    r = ranked.c

    # 3. additive sums per stage (and lost reason)
    as_of = min(end, dt.datetime.now(dt.UTC))  # stalled: at the period's end, or now
    cutoffs = [
        (r.stage == s.name, when(as_of - dt.timedelta(days=s.days))) for s in flow.stages if s.days
    ]
    in_stage = r.left_at.is_(None)
    stalled = and_(in_stage, r.at < case(*cutoffs, else_=None)) if cutoffs else false()
    left = r.left_in == 1
    middle = and_(left, 2 * r.pos >= r.n, 2 * r.pos <= r.n + 2)
    entered = r.entered_in == 1

    def total(cond: Any, value: Any = 1) -> Any:
        return func.coalesce(func.sum(case((cond, value), else_=0)), 0)

    stmt = select(
        r.stage,
        r.reason,
        total(entered).label("entered"),
        total(entered, r.amount).label("amount"),
        total(and_(entered, r.next_stage.is_not(None), r.next_stage != LOST)).label("moved"),
        total(and_(entered, r.next_stage == LOST)).label("lost"),
        total(in_stage).label("in_stage"),
        total(stalled).label("stalled"),
        total(left).label("left_n"),
        total(left, r.secs).label("left_secs"),
        total(middle).label("mid_n"),
        total(middle, r.secs).label("mid_secs"),
        total(r.cohort == 1).label("cohort"),
        total(r.cohort == 1, r.is_mql).label("cohort_mql"),
        total(r.cohort == 1, r.is_sql).label("cohort_sql"),
        total(r.cohort == 1, r.is_proposal).label("cohort_proposal"),
    ).group_by(r.stage, r.reason)

    keys = (
        "entered", "amount", "moved", "lost", "in_stage", "stalled", "left_n", "left_secs",
        "mid_n", "mid_secs", "cohort", "cohort_mql", "cohort_sql", "cohort_proposal",
    )  # fmt: skip
    sums: dict[str, dict[str, Any]] = {}
    reasons: dict[str, dict[str, int]] = {}
    for row in session.connection.execute(stmt):
        acc = sums.setdefault(row.stage, dict.fromkeys(keys, 0))
        for key in keys:
            acc[key] += row._mapping[key]
        if row.reason is not None or row.lost:
            counts = reasons.setdefault(row.stage, {})
            counts[row.reason or "(none)"] = counts.get(row.reason or "(none)", 0) + row.lost
    empty = dict.fromkeys(keys, 0)

    rows = []
    for stage in flow.stages:
        acc = sums.get(stage.name, empty)
        lost_there = sorted(reasons.get(stage.name, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        rows.append(
            {
                "stage": stage.name,
                "title": stage.title,
                "entered": int(acc["entered"]),
                "amount": Decimal(acc["amount"]).quantize(Decimal("0.01")),
                "moved_on": int(acc["moved"]),
                "conversion": _ratio(int(acc["moved"]), int(acc["entered"])),
                "lost": int(acc["lost"]),
                "lost_reasons": ", ".join(f"{k} {n}" for k, n in lost_there if n),
                "lost_reason_counts": {k: int(n) for k, n in lost_there if n},
                "in_stage": int(acc["in_stage"]),
                "stalled": int(acc["stalled"]),
                "days": stage.days,
                "left": int(acc["left_n"]),
                "mean_days": _days(acc["left_secs"], acc["left_n"]),
                "median_days": _days(acc["mid_secs"], acc["mid_n"]),
            }
        )

    # the cohort: deals that entered the first stage in the period, followed to the end
    head = sums.get(first, empty)
    won_row = sums.get(WON, empty)
    cohort_n = int(head["cohort"])
    won_n = int(won_row["cohort"])
    reached_proposal = int(sums.get(proposal, empty)["cohort"]) if proposal else 0
    proposal_won = int(won_row["cohort_proposal"])  # won, having entered the proposal stage
    mql_n = sum(int(acc["cohort_mql"]) for acc in sums.values())
    sql_n = sum(int(acc["cohort_sql"]) for acc in sums.values())
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
        "won_in_period": int(sums.get(WON, empty)["entered"]),
        "won_amount_in_period": Decimal(sums.get(WON, empty)["amount"]).quantize(Decimal("0.01")),
        "lost_in_period": int(sums.get(LOST, empty)["entered"]),
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
    currencies = session.connection.execute(
        scope.deals(
            session,
            select(func.count(func.distinct(deals.c.currency))).where(
                deals.c.pipeline == flow.name
            ),
            query,
            deals,
        )
    ).scalar_one()
    if currencies > 1:
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


def deal_length(
    session: Session, query: ReportQuery, flow: Pipeline, start: dt.datetime, end: dt.datetime
) -> dict[str, Any]:
    """Deals won in the period: days from the deal's first interaction (or opening) to the win."""
    from sqlalchemy import and_, case, func, literal, select

    from crmkit.core.pipeline import WON
    from crmkit.core.schema import UTCDateTime

    from . import scope

    changes, deals = session.table("stage_changes"), session.table("deals")
    interactions = session.table("interactions")
    first_contact = (
        select(func.min(interactions.c.occurred_at))
        .where(interactions.c.deal_id == deals.c.id)
        .scalar_subquery()
    )
    began = func.coalesce(first_contact, deals.c.opened_at)
    won = select(
        seconds_between(session.connection.dialect.name, began, changes.c.at).label("secs")
    ).select_from(changes.join(deals, deals.c.id == changes.c.entity_id))
    won = won.where(
        changes.c.entity == "deal",
        changes.c.pipeline == flow.name,
        changes.c.to_stage == WON,
        changes.c.at >= literal(start, UTCDateTime()),
        changes.c.at < literal(end, UTCDateTime()),
    )
    w = scope.deals(session, won, query, deals).subquery("won")
    ranked = select(
        w.c.secs,
        func.row_number().over(order_by=w.c.secs).label("pos"),
        func.count().over().label("n"),
    ).subquery("ranked")
    middle = and_(2 * ranked.c.pos >= ranked.c.n, 2 * ranked.c.pos <= ranked.c.n + 2)
    row = session.connection.execute(
        select(
            func.count().label("n"),
            func.coalesce(func.sum(ranked.c.secs), 0).label("secs"),
            func.coalesce(func.sum(case((middle, 1), else_=0)), 0).label("mid_n"),
            func.coalesce(func.sum(case((middle, ranked.c.secs), else_=0)), 0).label("mid_secs"),
        )
    ).one()
    return {
        "deal_length_deals": int(row.n),
        "deal_length_mean_days": _days(row.secs, row.n),
        "deal_length_median_days": _days(row.mid_secs, row.mid_n),
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
    from . import charts

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
