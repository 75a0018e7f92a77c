"""The ``forecast`` report: the revenue the open deals should bring in a coming period.

Two methods, side by side, per stage of the pipeline:

* **weighted pipeline**: the open deals whose expected close date falls in
  the period, each counted for its amount times its stage's probability
  (the pipeline's ``probability``);
* **statistical**: every open deal, counted for its amount times the
  chance, learnt from the deals closed in the ``history_months`` before,
  that a deal at its stage is won, times the chance that a deal won from
  its stage closes in the period, knowing it is still open now (from how
  long won deals took from that stage).

``--backtest`` replays the past: as of the first day of each of the last
``backtest_months`` months, what each method would have forecast for that
month (knowing only what happened before it), against the amount actually
won in it; the error of each month, and the mean absolute percentage error
(MAPE) of each method.
"""

from __future__ import annotations

import bisect
import datetime as dt
import decimal
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import frozen
from sqlalchemy import func, select

from crmkit.core.reports import Column, Period, Report, ReportQuery, ReportResult, _add_months

from . import scope

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.pipeline import Pipeline
    from crmkit.core.store import Session

CENT = decimal.Decimal("0.01")
#: below this many closed deals through a stage, its win chance is the pipeline's probability
MIN_SAMPLE = 5
OPTIONS: dict[str, Any] = {
    "history_months": {
        "type": "integer",
        "minimum": 1,
        "maximum": 120,
        "default": 12,
        "description": "Months of closed deals the statistical method learns from.",
    },
    "backtest": {
        "type": "boolean",
        "default": False,
        "description": "Replay past months: each method's forecast against what was won.",
    },
    "backtest_months": {
        "type": "integer",
        "minimum": 1,
        "maximum": 60,
        "default": 6,
        "description": "How many past months --backtest replays.",
    },
}


def reports() -> list[Report]:
    return [
        Report(
            "forecast",
            "Revenue forecast from the open deals",
            run,
            description=(
                "Expected won amount in a coming period: the weighted pipeline (amount x "
                "stage probability) and a statistical forecast from historical conversion "
                "and time to close; --backtest replays past months and prints each method's "
                "error (MAPE)."
            ),
            filters=("period", "pipeline", "team", "user", "segment"),
            options=OPTIONS,
            chart=chart,
        )
    ]


@frozen
class OpenDeal:
    """A deal open at the forecast's instant: where it stands and since when."""

    id: int
    stage: str
    entered: dt.datetime
    amount: decimal.Decimal
    expected_close: dt.date | None


@frozen
class History:
    """What closed deals teach: per stage, closed and won counts and won deals' days to close."""

    closed: dict[str, int]
    won: dict[str, int]
    days: dict[str, list[float]]  #: sorted days from entering the stage to the win

    def win_chance(self, stage: str, fallback: float | None) -> float:
        """Won / closed among deals through ``stage``, or the pipeline's probability."""
        closed = self.closed.get(stage, 0)
        if closed < MIN_SAMPLE:
            return fallback or 0.0
        return self.won.get(stage, 0) / closed

    def close_chance(self, stage: str, age: float, start: float, end: float) -> float:
        """P(a win from ``stage`` comes start..end days after entry | not before ``age``)."""
        days = self.days.get(stage, [])
        alive = len(days) - bisect.bisect_right(days, age)
        if not alive:
            return 0.0
        low = max(start, age)
        inside = bisect.bisect_left(days, end) - bisect.bisect_left(days, low)
        if low == age:  # a duration equal to the age has not happened: it is still open
            inside = bisect.bisect_left(days, end) - bisect.bisect_right(days, age)
        return max(inside, 0) / alive


def run(session: Session, query: ReportQuery) -> ReportResult:
    tz = session.crm.tz
    pipeline = _pipeline(session, query)
    now = dt.datetime.now(dt.UTC)
    months = query.options["history_months"]
    if query.options["backtest"]:
        return _backtest(session, query, pipeline, now, months)
    period = query.period or _next_month(now.astimezone(tz).date())
    start, end = period.bounds(tz)
    deals = _open_deals(session, query, pipeline, now)
    history = _history(session, query, pipeline, now, months)
    rows = []
    for stage in pipeline.stages:
        mine = [d for d in deals if d.stage == stage.name]
        weighted, undated = _weighted(mine, stage.probability or 0.0, period)
        statistical = _statistical(mine, history, stage.name, stage.probability, now, start, end)
        rows.append(
            {
                "stage": stage.name,
                "open_deals": len(mine),
                "amount": sum((d.amount for d in mine), decimal.Decimal(0)).quantize(CENT),
                "probability": stage.probability,
                "win_chance": round(history.win_chance(stage.name, stage.probability), 4),
                "weighted": weighted,
                "undated": undated,
                "statistical": statistical,
            }
        )
    summary = {
        "open_deals": sum(r["open_deals"] for r in rows),
        "weighted": sum((r["weighted"] for r in rows), decimal.Decimal(0)),
        "statistical": sum((r["statistical"] for r in rows), decimal.Decimal(0)),
        "undated_deals": sum(r["undated"] for r in rows),
    }
    notes = [
        f"Pipeline {pipeline.name}; the statistical method learns from the deals closed in "
        f"the {months} months before now.",
        f"A stage with fewer than {MIN_SAMPLE} closed deals uses its pipeline probability "
        "as the win chance.",
    ]
    if summary["undated_deals"]:
        notes.append(
            f"{summary['undated_deals']} open deals have no expected close date: the weighted "
            "pipeline leaves them out."
        )
    columns = [
        Column("stage", "Stage"),
        Column("open_deals", "Open deals", "integer"),
        Column("amount", "Amount", "money"),
        Column("probability", "Probability", "percent"),
        Column("win_chance", "Win chance (history)", "percent"),
        Column("weighted", "Weighted pipeline", "money"),
        Column("undated", "Undated deals", "integer"),
        Column("statistical", "Statistical", "money"),
    ]
    return ReportResult("forecast", columns, rows, summary=summary, notes=notes, period=period)


def _pipeline(session: Session, query: ReportQuery) -> Pipeline:
    if query.pipeline is not None:
        return session.crm.pipeline(query.pipeline)
    for pipeline in session.crm.pipelines.values():
        if pipeline.entity == "deal":
            return pipeline
    return session.crm.pipeline("")  # raises: no deal pipeline


def _next_month(today: dt.date) -> Period:
    start = _add_months(today.replace(day=1), 1)
    return Period(start, _add_months(start, 1), f"{start:%Y-%m}")


def _weighted(
    deals: list[OpenDeal], probability: float, period: Period
) -> tuple[decimal.Decimal, int]:
    total = decimal.Decimal(0)
    undated = 0
    chance = decimal.Decimal(str(probability))
    for deal in deals:
        if deal.expected_close is None:
            undated += 1
        elif period.start <= deal.expected_close < period.end:
            total += deal.amount * chance
    return total.quantize(CENT), undated


def _statistical(
    deals: list[OpenDeal],
    history: History,
    stage: str,
    fallback: float | None,
    now: dt.datetime,
    start: dt.datetime,
    end: dt.datetime,
) -> decimal.Decimal:
    win = history.win_chance(stage, fallback)
    total = 0.0
    for deal in deals:
        age = _days(now - deal.entered)
        close = history.close_chance(
            stage, age, _days(start - deal.entered), _days(end - deal.entered)
        )
        total += float(deal.amount) * win * close
    return decimal.Decimal(str(round(total, 2))).quantize(CENT)


def _days(delta: dt.timedelta) -> float:
    return delta.total_seconds() / 86400


def _open_deals(
    session: Session, query: ReportQuery, pipeline: Pipeline, when: dt.datetime
) -> list[OpenDeal]:
    """The deals of ``pipeline`` open at ``when``, with their stage then (from the history)."""
    from crmkit.core.lifecycle import deals_open_at

    deals = session.table("deals")
    stmt = deals_open_at(session, when).where(deals.c.pipeline == pipeline.name)
    stmt = scope.deals(session, stmt, query)
    return [
        OpenDeal(row.id, row.stage, row.entered, decimal.Decimal(row.amount), row.expected_close)
        for row in session.connection.execute(stmt)
    ]


def _history(
    session: Session, query: ReportQuery, pipeline: Pipeline, when: dt.datetime, months: int
) -> History:
    """What the deals closed in the ``months`` before ``when`` teach, stage by stage."""
    deals = session.table("deals")
    changes = session.table("stage_changes")
    since = when - dt.timedelta(days=30.4375 * months)
    stmt = (
        select(changes.c.to_stage, func.min(changes.c.at), deals.c.status, deals.c.closed_at)
        .select_from(
            changes.join(deals, (changes.c.entity == "deal") & (changes.c.entity_id == deals.c.id))
        )
        .where(
            deals.c.pipeline == pipeline.name,
            deals.c.status.in_(("won", "lost")),
            deals.c.closed_at > since,
            deals.c.closed_at <= when,
        )
        .group_by(deals.c.id, changes.c.to_stage, deals.c.status, deals.c.closed_at)
    )
    stmt = scope.deals(session, stmt, query)
    closed: dict[str, int] = defaultdict(int)
    won: dict[str, int] = defaultdict(int)
    days: dict[str, list[float]] = defaultdict(list)
    stages = set(pipeline.stage_names)
    for stage, entered, status, closed_at in session.connection.execute(stmt):
        if stage not in stages or stage in ("won", "lost"):
            continue
        closed[stage] += 1
        if status == "won":
            won[stage] += 1
            days[stage].append(_days(closed_at - entered))
    return History(dict(closed), dict(won), {k: sorted(v) for k, v in days.items()})


def _won_in(
    session: Session, query: ReportQuery, pipeline: Pipeline, start: dt.datetime, end: dt.datetime
) -> decimal.Decimal:
    deals = session.table("deals")
    stmt = select(func.coalesce(func.sum(deals.c.amount), 0)).where(
        deals.c.pipeline == pipeline.name,
        deals.c.status == "won",
        deals.c.closed_at >= start,
        deals.c.closed_at < end,
    )
    stmt = scope.deals(session, stmt, query)
    return decimal.Decimal(session.connection.execute(stmt).scalar_one()).quantize(CENT)


def _backtest(
    session: Session, query: ReportQuery, pipeline: Pipeline, now: dt.datetime, months: int
) -> ReportResult:
    tz = session.crm.tz
    this_month = now.astimezone(tz).date().replace(day=1)
    rows = []
    for back in range(query.options["backtest_months"], 0, -1):
        first = _add_months(this_month, -back)
        period = Period(first, _add_months(first, 1), f"{first:%Y-%m}")
        start, end = period.bounds(tz)
        deals = _open_deals(session, query, pipeline, start)
        history = _history(session, query, pipeline, start, months)
        weighted = statistical = decimal.Decimal(0)
        for stage in pipeline.stages:
            mine = [d for d in deals if d.stage == stage.name]
            weighted += _weighted(mine, stage.probability or 0.0, period)[0]
            statistical += _statistical(
                mine, history, stage.name, stage.probability, start, start, end
            )
        actual = _won_in(session, query, pipeline, start, end)
        rows.append(
            {
                "period": period.label,
                "open_deals": len(deals),
                "actual": actual,
                "weighted": weighted,
                "weighted_error": _error(weighted, actual),
                "statistical": statistical,
                "statistical_error": _error(statistical, actual),
            }
        )
    summary = {
        "weighted_mape": _mape([r["weighted_error"] for r in rows]),
        "statistical_mape": _mape([r["statistical_error"] for r in rows]),
        "periods": len(rows),
    }
    notes = [
        "Each month is forecast as of its first day from the deals open then and the deals "
        "closed before it; actual: the amount of the deals won in the month.",
        "Error: (forecast - actual) / actual; MAPE: the mean of the absolute errors of the "
        "months with an actual amount.",
        "The weighted pipeline uses today's expected close dates (their changes are not "
        "kept), which favours it.",
    ]
    columns = [
        Column("period", "Month"),
        Column("open_deals", "Open deals", "integer"),
        Column("actual", "Won", "money"),
        Column("weighted", "Weighted pipeline", "money"),
        Column("weighted_error", "Weighted error", "percent"),
        Column("statistical", "Statistical", "money"),
        Column("statistical_error", "Statistical error", "percent"),
    ]
    return ReportResult("forecast", columns, rows, summary=summary, notes=notes)


def _error(forecast: decimal.Decimal, actual: decimal.Decimal) -> float | None:
    if not actual:
        return None
    return round(float((forecast - actual) / actual), 4)


def _mape(errors: list[float | None]) -> float | None:
    found = [abs(e) for e in errors if e is not None]
    return round(sum(found) / len(found), 4) if found else None


def chart(result: ReportResult, path: Path) -> None:
    """The forecast per stage, or the backtest's forecasts against what was won."""
    from crmkit.core import charts

    fig, ax = charts.figure(10, 5.5)
    if result.rows and "actual" in result.rows[0]:
        labels = [r["period"] for r in result.rows]
        xs = list(range(len(labels)))
        width = 0.27
        actual = [float(r["actual"]) for r in result.rows]
        ax.bar([x - width for x in xs], actual, width, color=charts.COLORS[6], label="won")
        for offset, key, color in ((0, "weighted", 0), (width, "statistical", 1)):
            values = [float(r[key]) for r in result.rows]
            bars = ax.bar(
                [x + offset for x in xs],
                values,
                width,
                color=charts.COLORS[color],
                label=f"{key} (MAPE {_mape_text(result.summary.get(key + '_mape'))})",
            )
            charts.label_bars(ax, bars, [_pct(r[key + "_error"]) for r in result.rows])
        ax.set_xticks(xs, labels)
        ax.set_title("Forecast backtest: what each method said, against what was won")
    else:
        labels = [r["stage"] for r in result.rows]
        xs = list(range(len(labels)))
        width = 0.4
        for offset, key, color in ((-width / 2, "weighted", 0), (width / 2, "statistical", 1)):
            values = [float(r[key]) for r in result.rows]
            bars = ax.bar(
                [x + offset for x in xs], values, width, color=charts.COLORS[color], label=key
            )
            charts.label_bars(ax, bars, [charts.short(v) if v else "" for v in values])
        ax.set_xticks(xs, labels, rotation=20, ha="right")
        period = result.period.label if result.period else ""
        ax.set_title(f"Expected won amount in {period}, by stage")
    ax.set_ylabel("Amount")
    charts.money_axis(ax)
    ax.legend(frameon=False)
    charts.save(fig, path)


def _mape_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0%}"


__all__ = ["History", "OpenDeal", "reports", "run"]
