"""The ``sales`` report: revenue by month, client, manager, segment or product.

**Revenue** is the sum of the amounts of the *paid* invoices
(``invoices.status = 'paid'``) whose ``paid_at`` falls in the period, in the
deployment's currency (``[crmkit] currency``); paid invoices in other
currencies are left out and a note counts them. An invoice belongs to the
group of its deal: the month of its payment, the deal's client, the deal's
owner (the manager), the client's segment, or the deal's product.

Next to it: **invoices** (how many paid invoices make the revenue),
**average invoice** (revenue / invoices), **deals won** (deals with status
``won`` whose ``closed_at`` falls in the period, in the deployment's
currency, grouped by the same rule, by ``closed_at`` for months) and their
**won amount** (the sum of ``deals.amount``), and the **share** of the
group's revenue in the total.

**Product.** crmkit's deals hold no product lines: the segment plugin's
catalogue lists products but no deal or invoice refers to one. The product
of a deal is therefore read from its title, by the convention ``PRODUCT:
DETAIL`` (``Office MFP fleet: Acme``, the form of the sample deployment's
deals): the text before the first ``": "``, trimmed, or the whole title when
it has none.

Everything is aggregated in SQL; only the deals the reader may read count
(the access policies, with the ``--pipeline``, ``--team``, ``--user`` and
``--segment`` filters: :func:`crmkit.plugins.analytics.scope.deals`), and a
client's name is shown only to a reader who may read the client.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import TYPE_CHECKING, Any

from crmkit import Column, Report, ReportResult, parse_period

from . import scope

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from crmkit import ReportQuery, Session

NAME = "sales"
DEFAULT_PERIOD = "last-12-months"
GROUPINGS = ("month", "client", "manager", "segment", "product")

OPTIONS: dict[str, Any] = {
    "by": {
        "type": "string",
        "enum": list(GROUPINGS),
        "default": "month",
        "description": "Group by month, client, manager, segment or product.",
    },
}

DESCRIPTION = (
    "Revenue (paid invoices whose payment date falls in the period, in the deployment's "
    "currency) by month, client, manager (deal owner), segment or product (the deal "
    "title before ': '), with the invoices paid, the average invoice, the deals won in "
    "the period and their amount, and each group's share of the revenue."
)

HEADINGS = {
    "month": "Month",
    "client": "Client",
    "manager": "Manager",
    "segment": "Segment",
    "product": "Product",
}

_CENT = decimal.Decimal("0.01")


def reports() -> list[Report]:
    """The reports of this module (found by :mod:`crmkit.plugins.analytics`)."""
    return [
        Report(
            name=NAME,
            title="Sales",
            run=run,
            description=DESCRIPTION,
            filters=("period", "pipeline", "team", "user", "segment"),
            options=OPTIONS,
            default_period=DEFAULT_PERIOD,
            chart=chart,
        )
    ]


def columns(by: str) -> list[Column]:
    """The report's columns when grouped ``by``."""
    return [
        Column("group", HEADINGS[by], "text"),
        Column("revenue", "Revenue", "money"),
        Column("share", "Share", "percent"),
        Column("invoices", "Invoices paid", "integer"),
        Column("average_invoice", "Avg invoice", "money"),
        Column("deals_won", "Deals won", "integer"),
        Column("won_amount", "Won amount", "money"),
    ]


def product_of(session: Session, title: Any) -> Any:
    """SQL: the product of a deal, the title before the first ``': '`` (or the title)."""
    from sqlalchemy import case, func

    if session.connection.dialect.name == "postgresql":
        position = func.strpos(title, ": ")
    else:
        position = func.instr(title, ": ")
    return func.trim(case((position > 0, func.substr(title, 1, position - 1)), else_=title))


def run(session: Session, query: ReportQuery) -> ReportResult:
    """Compute the report for ``query`` (see the module's docstring for the rules)."""
    from sqlalchemy import and_, case, func, literal, select

    crm = session.crm
    tz = crm.tz
    by = query.options.get("by") or "month"
    period = query.period or parse_period(DEFAULT_PERIOD, today=dt.datetime.now(tz).date())
    start, end = period.bounds(tz)
    months = period.months()
    currency = crm.config.currency

    invoices = session.table("invoices")
    deals = session.table("deals")
    clients = session.table("clients")
    users = session.table("users")

    def month_of(moment: Any) -> Any:
        """The index of the period's month holding ``moment`` (cuts at months' UTC starts)."""
        cuts = [dt.datetime.combine(m, dt.time(), tz).astimezone(dt.UTC) for m in months[1:]]
        if not cuts:
            return literal(0)
        return case(*[(moment < cut, i) for i, cut in enumerate(cuts)], else_=len(cuts))

    def key_of(moment: Any) -> Any:
        if by == "month":
            return month_of(moment)
        if by == "client":
            return deals.c.client_id
        if by == "manager":
            return deals.c.owner_id
        if by == "segment":
            return clients.c.segment
        return product_of(session, deals.c.title)

    with_clients = deals.join(clients, clients.c.id == deals.c.client_id)
    paid_in_period = and_(
        invoices.c.status == "paid", invoices.c.paid_at >= start, invoices.c.paid_at < end
    )
    # the paid invoices of the deals the reader may read, filtered, one row each
    paid = select(
        key_of(invoices.c.paid_at).label("k"),
        invoices.c.amount.label("amount"),
    ).select_from(invoices.join(with_clients, deals.c.id == invoices.c.deal_id))
    paid = scope.deals(session, paid.where(paid_in_period), query, deals)
    paid_here = paid.where(invoices.c.currency == currency).subquery("paid")
    won_in_period = and_(
        deals.c.status == "won", deals.c.closed_at >= start, deals.c.closed_at < end
    )
    won = select(key_of(deals.c.closed_at).label("k"), deals.c.amount.label("amount"))
    won = scope.deals(session, won.select_from(with_clients).where(won_in_period), query, deals)
    won_here = won.where(deals.c.currency == currency).subquery("won")

    # grouped over a subquery: PostgreSQL does not group by an expression holding parameters
    figures: dict[Any, dict[str, Any]] = {}
    for k, total, n in session.connection.execute(
        select(paid_here.c.k, func.sum(paid_here.c.amount), func.count()).group_by(paid_here.c.k)
    ):
        figures.setdefault(k, _empty())
        figures[k].update(revenue=_money(total), invoices=int(n))
    for k, total, n in session.connection.execute(
        select(won_here.c.k, func.sum(won_here.c.amount), func.count()).group_by(won_here.c.k)
    ):
        figures.setdefault(k, _empty())
        figures[k].update(won_amount=_money(total), deals_won=int(n))

    revenue = sum((f["revenue"] for f in figures.values()), decimal.Decimal(0))
    n_invoices = sum(f["invoices"] for f in figures.values())
    if by == "month":
        keys: list[Any] = list(range(len(months)))
        for k in keys:
            figures.setdefault(k, _empty())
        labels = _labels(session, by, keys, months, clients, users)
    else:
        labels = _labels(session, by, list(figures), months, clients, users)
        keys = sorted(
            figures,
            key=lambda k: (-figures[k]["revenue"], -figures[k]["won_amount"], labels[k]),
        )
    rows = []
    for k in keys:
        f = figures[k]
        rows.append(
            {
                "group": labels[k],
                "revenue": float(f["revenue"]),
                "share": round(float(f["revenue"] / revenue), 4) if revenue else 0.0,
                "invoices": f["invoices"],
                "average_invoice": float(_average(f["revenue"], f["invoices"])),
                "deals_won": f["deals_won"],
                "won_amount": float(f["won_amount"]),
            }
        )
    summary: dict[str, Any] = {
        "revenue": float(revenue),
        "invoices": n_invoices,
        "average_invoice": float(_average(revenue, n_invoices)),
        "deals_won": sum(f["deals_won"] for f in figures.values()),
        "won_amount": float(sum((f["won_amount"] for f in figures.values()), decimal.Decimal(0))),
        "groups": len(rows),
        "currency": currency,
    }
    notes = [
        f"Revenue: paid invoices by payment date, in {currency}; deals won by closing date "
        f"({crm.config.timezone})."
    ]
    if by == "product":
        notes.append("Product: the deal title before the first ': ' (the whole title without).")
    other_paid = _count(session, paid.where(invoices.c.currency != currency))
    if other_paid:
        notes.append(
            f"{_plural(other_paid, 'paid invoice')} in other currencies than {currency} "
            f"{'is' if other_paid == 1 else 'are'} left out."
        )
    other_won = _count(session, won.where(deals.c.currency != currency))
    if other_won:
        notes.append(
            f"{_plural(other_won, 'won deal')} in other currencies than {currency} "
            f"{'is' if other_won == 1 else 'are'} left out."
        )
    return ReportResult(
        report=NAME, columns=columns(by), rows=rows, summary=summary, notes=notes, period=period
    )


def _labels(
    session: Session, by: str, keys: list[Any], months: list[dt.date], clients: Any, users: Any
) -> dict[Any, str]:
    """The text of each group: a month, a client's name (when readable), a login."""
    from sqlalchemy import select

    if by == "month":
        return {i: m.strftime("%Y-%m") for i, m in enumerate(months)}
    if by == "segment":
        return {k: k if k is not None else "(none)" for k in keys}
    if by == "product":
        return {k: k or "(untitled)" for k in keys}
    ids = [k for k in keys if k is not None]
    names: dict[Any, str] = {}
    if ids and by == "client":
        readable = select(clients.c.id, clients.c.name).where(clients.c.id.in_(ids))
        readable = session.access.filter(readable, "read", "client", clients)
        names = {i: name for i, name in session.connection.execute(readable)}
        return {k: names.get(k, f"client #{k} (not readable)") for k in keys}
    if ids:
        names = dict(
            session.connection.execute(
                select(users.c.id, users.c.login).where(users.c.id.in_(ids))
            ).all()
        )
    return {k: names.get(k, "(no owner)") for k in keys}


def _count(session: Session, stmt: Any) -> int:
    from sqlalchemy import func, select

    return int(
        session.connection.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    )


def _empty() -> dict[str, Any]:
    zero = decimal.Decimal("0.00")
    return {"revenue": zero, "invoices": 0, "deals_won": 0, "won_amount": zero}


def _money(value: Any) -> decimal.Decimal:
    return decimal.Decimal(str(value or 0)).quantize(_CENT)


def _average(total: decimal.Decimal, n: int) -> decimal.Decimal:
    return (total / n).quantize(_CENT, rounding=decimal.ROUND_HALF_UP) if n else _money(0)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def chart(result: ReportResult, path: Path) -> None:
    """Bars of revenue per group; by month, columns over time with the won amount as a line."""
    from crmkit.core import charts

    rows = result.rows
    label = result.period.label if result.period else ""
    heading = next((c.heading for c in result.columns if c.name == "group"), "Group")
    currency = result.summary.get("currency", "")
    monthly = heading == HEADINGS["month"]
    if monthly:
        fig, ax = charts.figure(max(9.0, 0.7 * len(rows) + 3), 5.5)
        names = [r["group"] for r in rows]
        bars = ax.bar(names, result.column("revenue"), color=charts.COLORS[0], label="Revenue")
        charts.label_bars(ax, bars, [_short(r["revenue"]) for r in rows])
        ax.plot(
            names,
            result.column("won_amount"),
            color=charts.COLORS[1],
            marker="o",
            linewidth=2,
            label="Deals won (amount)",
        )
        ax.set_ylabel(f"{currency}")
        ax.set_xlabel("Month")
        ax.tick_params(axis="x", rotation=45 if len(rows) > 6 else 0)
        ax.legend(loc="upper left", frameon=False)
        ax.set_title(f"Revenue and deals won by month, {label}")
    else:
        shown = rows[:25]
        fig, ax = charts.figure(9.0, max(3.0, 0.38 * len(shown) + 1.8))
        names = [str(r["group"])[:40] for r in shown][::-1]
        values = [r["revenue"] for r in shown][::-1]
        bars = ax.barh(names, values, color=charts.COLORS[0])
        charts.label_bars(
            ax, bars, [f"{_short(r['revenue'])} ({r['share'] * 100:.0f}%)" for r in shown][::-1]
        )
        ax.set_xlabel(f"Revenue, {currency}")
        ax.margins(x=0.18)
        more = f" (top {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""
        ax.set_title(f"Revenue by {heading.lower()}, {label}{more}")
    (ax.yaxis if monthly else ax.xaxis).set_major_formatter(_formatter())
    charts.save(fig, path)


def _formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: _short(v))


def _short(value: float) -> str:
    """``1.2M``, ``350k``, ``900``: amounts short enough for a bar's label."""
    size = abs(value)
    if size >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if size >= 1_000:
        return f"{value / 1_000:.0f}k"
    return f"{value:.0f}"
