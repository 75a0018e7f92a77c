"""The ``channels`` report: what each marketing channel brought, against what it cost.

A client's channel is its ``source``. Over the period, per channel:

* ``leads``: clients of the channel created in the period;
* ``qualified``: clients of the channel whose first move out of ``lead``
  into a later lifecycle stage (not ``lost``) happened in the period;
* ``deals``: deals opened in the period for clients of the channel;
* ``won``: deals of clients of the channel won in the period;
* ``revenue``: invoices of those clients' deals paid in the period, in the
  deployment's currency;
* ``cost``: the channel's recorded costs in the deployment's currency, each
  charged for the days of it that fall in the period;
* ``cost_per_lead`` = cost / leads, ``cost_per_won`` = cost / won,
  ``return_on_spend`` = revenue / cost;
* ``verdict``: ``scale`` when return on spend >= ``scale_at``, ``cut`` when
  it is below ``cut_below``, ``keep`` between, ``no cost`` without a cost.

Rows are sorted by return on spend, highest first, channels without a cost
last: the channels to scale lead the table and those to cut close it.
"""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from crmkit.core.reports import Column, Report, ReportQuery, ReportResult

from . import scope

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.store import Session

NONE = "(none)"
CENT = decimal.Decimal("0.01")
VERDICTS = ("scale", "keep", "cut", "no cost")
COLUMNS = [
    Column("channel", "Channel"),
    Column("leads", "Leads", "integer"),
    Column("qualified", "Qualified", "integer"),
    Column("deals", "Deals", "integer"),
    Column("won", "Won", "integer"),
    Column("revenue", "Revenue", "money"),
    Column("cost", "Cost", "money"),
    Column("cost_per_lead", "Cost per lead", "money"),
    Column("cost_per_won", "Cost per won deal", "money"),
    Column("return_on_spend", "Return on spend", "number"),
    Column("verdict", "Verdict"),
]
OPTIONS: dict[str, Any] = {
    "scale_at": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 3,
        "description": "Return on spend from which a channel is worth scaling.",
    },
    "cut_below": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 1,
        "description": "Return on spend below which a channel loses money: cut it.",
    },
}


def reports() -> list[Report]:
    return [
        Report(
            "channels",
            "Marketing channels: results against cost",
            run,
            description=(
                "Per source channel: leads, qualified, deals, won, revenue, cost, cost per "
                "lead, cost per won deal and return on spend; the channels to scale first, "
                "those to cut last."
            ),
            filters=("period", "pipeline", "team", "user", "segment"),
            options=OPTIONS,
            default_period="last-12-months",
            chart=chart,
        )
    ]


def run(session: Session, query: ReportQuery) -> ReportResult:
    assert query.period is not None  # the report has a default period
    start, end = query.period.bounds(session.crm.tz)
    currency = session.crm.config.currency
    clients = session.table("clients")
    deals = session.table("deals")
    invoices = session.table("invoices")
    changes = session.table("stage_changes")
    conn = session.connection
    channel = func.coalesce(clients.c.source, NONE)
    rows: dict[str, dict[str, Any]] = {}

    def add(key: str, found: Any) -> None:
        for name, value in found:
            rows.setdefault(name, {})[key] = value

    # leads: clients of the channel created in the period
    leads = scope.clients(
        session,
        select(channel, func.count())
        .where(clients.c.created_at >= start, clients.c.created_at < end)
        .group_by(channel),
        query,
    )
    add("leads", conn.execute(leads))

    # qualified: the first move past "lead" (not to lost) falls in the period
    lifecycle = session.crm.lifecycle
    if lifecycle is not None:
        later = [s for s in lifecycle.stage_names if s not in ("lead", "lost")]
        first = (
            select(changes.c.entity_id.label("client_id"), func.min(changes.c.at).label("at"))
            .where(changes.c.entity == "client", changes.c.to_stage.in_(later))
            .group_by(changes.c.entity_id)
            .subquery("first_qualified")
        )
        qualified = scope.clients(
            session,
            select(channel, func.count())
            .select_from(clients.join(first, first.c.client_id == clients.c.id))
            .where(first.c.at >= start, first.c.at < end)
            .group_by(channel),
            query,
        )
        add("qualified", conn.execute(qualified))

    joined = deals.join(clients, clients.c.id == deals.c.client_id)
    opened = scope.deals(
        session,
        select(channel, func.count())
        .select_from(joined)
        .where(deals.c.opened_at >= start, deals.c.opened_at < end)
        .group_by(channel),
        query,
    )
    add("deals", conn.execute(opened))
    won = scope.deals(
        session,
        select(channel, func.count())
        .select_from(joined)
        .where(deals.c.status == "won", deals.c.closed_at >= start, deals.c.closed_at < end)
        .group_by(channel),
        query,
    )
    add("won", conn.execute(won))
    paid = scope.deals(
        session,
        select(channel, func.sum(invoices.c.amount))
        .select_from(invoices.join(joined, deals.c.id == invoices.c.deal_id))
        .where(
            invoices.c.status == "paid",
            invoices.c.paid_at >= start,
            invoices.c.paid_at < end,
            invoices.c.currency == currency,
        )
        .group_by(channel),
        query,
    )
    add("revenue", ((name, _money(total)) for name, total in conn.execute(paid)))

    costs, other_currencies = _costs(session, query, currency)
    for name, amount in costs.items():
        rows.setdefault(name, {})["cost"] = amount

    options = query.options
    scale_at = decimal.Decimal(str(options["scale_at"]))
    cut_below = decimal.Decimal(str(options["cut_below"]))
    out = [_row(name, found, scale_at, cut_below) for name, found in rows.items()]
    out.sort(key=_order)
    notes = [
        f"Revenue and cost in {currency}; a channel's cost is charged for the days of it "
        "in the period.",
        f"Verdict: scale from a return on spend of {options['scale_at']}, cut below "
        f"{options['cut_below']}.",
    ]
    if other_currencies:
        notes.append(f"Costs in {', '.join(sorted(other_currencies))} are left out.")
    if NONE in rows:
        notes.append(f"{NONE}: clients without a channel.")
    total_cost = sum((r["cost"] for r in out), decimal.Decimal(0))
    total_revenue = sum((r["revenue"] for r in out), decimal.Decimal(0))
    summary = {
        "leads": sum(r["leads"] for r in out),
        "won": sum(r["won"] for r in out),
        "revenue": total_revenue,
        "cost": total_cost,
        "return_on_spend": _ratio(total_revenue, total_cost, places=2),
        "scale_at": options["scale_at"],
        "cut_below": options["cut_below"],
    }
    return ReportResult("channels", COLUMNS, out, summary=summary, notes=notes, period=query.period)


def _costs(
    session: Session, query: ReportQuery, currency: str
) -> tuple[dict[str, decimal.Decimal], set[str]]:
    """Each channel's cost charged to the period: a cost's amount times its days in the period."""
    assert query.period is not None
    start, end = query.period.start, query.period.end
    charged: dict[str, decimal.Decimal] = {}
    others: set[str] = set()
    for cost in session.channel_costs.list(start=start, end=end):
        if cost.currency != currency:
            others.add(cost.currency)
            continue
        days = (cost.end - cost.start).days
        inside = (min(cost.end, end) - max(cost.start, start)).days
        share = cost.amount * inside / days if days else decimal.Decimal(0)
        charged[cost.channel] = charged.get(cost.channel, decimal.Decimal(0)) + share
    return {k: v.quantize(CENT) for k, v in charged.items()}, others


def _row(
    name: str, found: dict[str, Any], scale_at: decimal.Decimal, cut_below: decimal.Decimal
) -> dict[str, Any]:
    leads, won = int(found.get("leads", 0)), int(found.get("won", 0))
    revenue = found.get("revenue", decimal.Decimal(0)).quantize(CENT)
    cost = found.get("cost", decimal.Decimal(0)).quantize(CENT)
    ros = _ratio(revenue, cost, places=2)
    if ros is None:
        verdict = "no cost"
    elif ros >= scale_at:
        verdict = "scale"
    elif ros < cut_below:
        verdict = "cut"
    else:
        verdict = "keep"
    return {
        "channel": name,
        "leads": leads,
        "qualified": int(found.get("qualified", 0)),
        "deals": int(found.get("deals", 0)),
        "won": won,
        "revenue": revenue,
        "cost": cost,
        "cost_per_lead": _ratio(cost, decimal.Decimal(leads)) if cost else None,
        "cost_per_won": _ratio(cost, decimal.Decimal(won)) if cost else None,
        "return_on_spend": ros,
        "verdict": verdict,
    }


def _order(row: dict[str, Any]) -> tuple[int, decimal.Decimal, str]:
    ros = row["return_on_spend"]
    return (1, -row["revenue"], row["channel"]) if ros is None else (0, -ros, row["channel"])


def _ratio(
    top: decimal.Decimal, bottom: decimal.Decimal, *, places: int = 2
) -> decimal.Decimal | None:
    if not bottom:
        return None
    return (top / bottom).quantize(decimal.Decimal(1).scaleb(-places))


def _money(value: Any) -> decimal.Decimal:
    return decimal.Decimal(value or 0).quantize(CENT)


def chart(result: ReportResult, path: Path) -> None:
    """Return on spend per channel, coloured by verdict, with the thresholds drawn."""
    from crmkit.core import charts

    rows = [r for r in result.rows if r["return_on_spend"] is not None]
    fig, ax = charts.figure(9, max(3.0, 0.55 * len(rows) + 1.8))
    colors = {"scale": charts.COLORS[2], "keep": charts.COLORS[0], "cut": charts.COLORS[3]}
    names = [r["channel"] for r in rows][::-1]
    values = [float(r["return_on_spend"]) for r in rows][::-1]
    bars = ax.barh(names, values, color=[colors[r["verdict"]] for r in rows][::-1])
    charts.label_bars(
        ax,
        bars,
        [
            f"{float(r['return_on_spend']):.2f}  ({_short(r['revenue'])} / {_short(r['cost'])})"
            for r in rows
        ][::-1],
    )
    cut, scale = result.summary.get("cut_below", 1), result.summary.get("scale_at", 3)
    ax.axvline(cut, color=charts.COLORS[3], linewidth=1, linestyle="--", label=f"cut below {cut}")
    ax.axvline(
        scale, color=charts.COLORS[2], linewidth=1, linestyle=":", label=f"scale from {scale}"
    )
    ax.legend(loc="lower right", frameon=False)
    ax.set_xlabel("Return on spend (revenue / cost)")
    period = result.period.label if result.period else ""
    ax.set_title(f"Channels by return on spend, {period}")
    if not rows:
        ax.text(0.5, 0.5, "No channel cost recorded", ha="center", transform=ax.transAxes)
    ax.margins(x=0.25)
    charts.save(fig, path)


def _short(amount: Any) -> str:
    value = float(amount or 0)
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


__all__ = ["reports", "run"]
