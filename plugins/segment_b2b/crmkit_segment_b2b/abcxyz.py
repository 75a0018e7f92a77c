"""The ``abcxyz`` report: ABC analysis of clients by revenue, XYZ by regularity.

Revenue is the sum of the *paid* invoices (``invoices.status = 'paid'``) whose
``paid_at`` falls in the period, in the deployment's currency, credited to the
client of the invoice's deal. Clients without such revenue in the period are
not listed (a note counts them); with ``segment`` only clients of that segment
are considered.

**ABC.** Clients are sorted by revenue, largest first (ties by client id), and
each one's share of the total revenue is accumulated. A client is class **A**
while the cumulative share of the clients *before* it is below ``a_share``
(default 0.80), **B** while it is below ``a_share + b_share`` (default 0.15,
so up to 95%), and **C** after that. The first client is therefore always A,
and a client that alone brings most of the revenue is A.

**XYZ.** The period is cut into its calendar months (:meth:`crmkit.Period.months`,
the first and last may be partial), in the deployment's time zone. For each
client the revenue of every month is summed (a month without payment counts
as 0) and the coefficient of variation is computed:
``CV = population standard deviation / mean`` over those months, rounded to
four decimals. **X** if ``CV <= x_limit`` (default 0.10), **Y** if
``CV <= y_limit`` (default 0.25), else **Z**. A client that pays the same every
month has CV 0 (X); one that pays once in twelve months has CV ``sqrt(11)``
(about 3.32, Z). With a one-month period every CV is 0.

The class is the two letters together (``AX`` ... ``CZ``). The aggregation is
done in SQL (per client and month, then per client: the sum, the sum of
squares and the number of months with purchases); Python only ranks the
clients. Months are told apart by comparing ``paid_at`` (stored in UTC) with
the UTC instants at which the months begin in the deployment's zone, which is
portable across SQLite and PostgreSQL and exact across daylight saving time.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, func, literal, select

from crmkit import Column, Report, ReportResult, ValidationError, parse_period

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import ReportQuery, Session

NAME = "abcxyz"
DEFAULT_PERIOD = "last-12-months"
ABC = ("A", "B", "C")
XYZ = ("X", "Y", "Z")

OPTIONS: dict[str, Any] = {
    "a_share": {
        "type": "number",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 1,
        "default": 0.8,
        "description": "Share of total revenue that class A covers (0.8: the first 80%).",
    },
    "b_share": {
        "type": "number",
        "minimum": 0,
        "exclusiveMaximum": 1,
        "default": 0.15,
        "description": "Share of total revenue that class B adds after A (0.15: up to 95%).",
    },
    "x_limit": {
        "type": "number",
        "minimum": 0,
        "default": 0.1,
        "description": "Largest coefficient of variation of monthly revenue for class X.",
    },
    "y_limit": {
        "type": "number",
        "minimum": 0,
        "default": 0.25,
        "description": "Largest coefficient of variation of monthly revenue for class Y.",
    },
}

DESCRIPTION = (
    "ABC: clients ranked by revenue (paid invoices whose payment date falls in the "
    "period); A while the cumulative share of the clients before one is below a_share "
    "(0.80), B while below a_share + b_share (0.95), C after. XYZ: coefficient of "
    "variation (population standard deviation / mean) of each client's revenue over the "
    "calendar months of the period, months without payment counting as 0; X if CV <= "
    "x_limit (0.10), Y if CV <= y_limit (0.25), else Z. Clients without revenue in the "
    "period are not listed."
)

COLUMNS = [
    Column("client_id", "ID", "integer"),
    Column("client", "Client", "text"),
    Column("segment", "Segment", "text"),
    Column("revenue", "Revenue", "money"),
    Column("share", "Share", "percent"),
    Column("cumulative", "Cum.", "percent"),
    Column("months_with_purchases", "Months", "integer"),
    Column("cv", "CV", "number"),
    Column("abc", "ABC", "text"),
    Column("xyz", "XYZ", "text"),
    Column("class", "Class", "text"),
]

_CENT = decimal.Decimal("0.01")
_WIDE = decimal.Context(prec=60)


def build_report(*, plugin: str | None = None) -> Report:
    """The ``abcxyz`` report, as registered by ``crmkit_reports``."""
    return Report(
        name=NAME,
        title="ABC/XYZ analysis of clients",
        run=run,
        description=DESCRIPTION,
        filters=("period", "segment"),
        options=OPTIONS,
        default_period=DEFAULT_PERIOD,
        plugin=plugin,
    )


def run(session: Session, query: ReportQuery) -> ReportResult:
    """Compute the report for ``query`` (see the module's docstring for the rules)."""
    opts = {name: spec["default"] for name, spec in OPTIONS.items()}
    opts.update(query.options)
    a_share, b_share = _dec(opts["a_share"]), _dec(opts["b_share"])
    x_limit, y_limit = _dec(opts["x_limit"]), _dec(opts["y_limit"])
    if a_share + b_share >= 1:
        raise ValidationError(
            f"a_share + b_share must be below 1 (got {opts['a_share']} + {opts['b_share']}): "
            "class C needs some of the revenue",
            field="b_share",
        )
    if y_limit < x_limit:
        raise ValidationError(
            f"must be at least x_limit ({opts['x_limit']}), got {opts['y_limit']}",
            field="y_limit",
        )

    crm = session.crm
    tz = crm.tz
    period = query.period or parse_period(DEFAULT_PERIOD, today=dt.datetime.now(tz).date())
    start, end = period.bounds(tz)
    months = period.months()
    n_months = len(months)
    currency = crm.config.currency

    invoices = session.tables["invoices"]
    deals = session.tables["deals"]
    clients = session.tables["clients"]

    # the month of a payment: compare with the instants (UTC) at which months begin
    cuts = [dt.datetime.combine(m, dt.time(), tz).astimezone(dt.UTC) for m in months[1:]]
    month: Any = (
        case(*[(invoices.c.paid_at < cut, i) for i, cut in enumerate(cuts)], else_=len(cuts))
        if cuts
        else literal(0)
    )
    in_period = and_(
        invoices.c.status == "paid",
        invoices.c.paid_at >= start,
        invoices.c.paid_at < end,
    )
    joined = invoices.join(deals, deals.c.id == invoices.c.deal_id).join(
        clients, clients.c.id == deals.c.client_id
    )
    segment_cond = clients.c.segment == query.segment if query.segment is not None else None

    payments = select(
        deals.c.client_id.label("client_id"),
        month.label("month"),
        invoices.c.amount.label("amount"),
    ).select_from(joined)
    payments = payments.where(in_period, invoices.c.currency == currency)
    if segment_cond is not None:
        payments = payments.where(segment_cond)
    # only the payments and clients the reader may read count (the access policies, in SQL)
    payments = session.access.filter(payments, "read", "invoice")
    payments = session.access.filter(payments, "read", "client")
    pay = payments.subquery("payments")

    # a subquery per level: PostgreSQL does not group by an expression holding parameters
    per_month = (
        select(pay.c.client_id, pay.c.month, func.sum(pay.c.amount).label("revenue"))
        .group_by(pay.c.client_id, pay.c.month)
        .subquery("per_month")
    )
    per_client = (
        select(
            per_month.c.client_id,
            func.sum(per_month.c.revenue).label("revenue"),
            func.sum(per_month.c.revenue * per_month.c.revenue).label("squares"),
            func.sum(case((per_month.c.revenue > 0, 1), else_=0)).label("months"),
        )
        .group_by(per_month.c.client_id)
        .having(func.sum(per_month.c.revenue) > 0)
        .subquery("per_client")
    )
    listing = (
        select(
            clients.c.id,
            clients.c.name,
            clients.c.segment,
            per_client.c.revenue,
            per_client.c.squares,
            per_client.c.months,
        )
        .select_from(per_client.join(clients, clients.c.id == per_client.c.client_id))
        .order_by(per_client.c.revenue.desc(), clients.c.id)
    )
    found = [
        (row.id, row.name, row.segment, _money(row.revenue), row.squares, int(row.months))
        for row in session.connection.execute(listing)
    ]

    total = sum((r[3] for r in found), decimal.Decimal(0))
    a_limit, b_limit = a_share * total, (a_share + b_share) * total
    rows: list[dict[str, Any]] = []
    counts = dict.fromkeys(ABC + XYZ, 0)
    matrix = {a + x: 0 for a in ABC for x in XYZ}
    before = decimal.Decimal(0)
    for client_id, name, segment, revenue, squares, with_purchases in found:
        abc = "A" if before < a_limit else "B" if before < b_limit else "C"
        before += revenue
        cv = _cv(revenue, squares, n_months)
        xyz = "X" if cv <= x_limit else "Y" if cv <= y_limit else "Z"
        counts[abc] += 1
        counts[xyz] += 1
        matrix[abc + xyz] += 1
        rows.append(
            {
                "client_id": client_id,
                "client": name,
                "segment": segment,
                "revenue": float(revenue),
                "share": round(float(revenue / total), 4),
                "cumulative": round(float(before / total), 4),
                "months_with_purchases": with_purchases,
                "cv": float(cv),
                "abc": abc,
                "xyz": xyz,
                "class": abc + xyz,
            }
        )

    summary: dict[str, Any] = {
        "clients": len(rows),
        "revenue": float(total),
        "months": n_months,
        **counts,
        "matrix": matrix,
    }
    notes = [
        f"A: the clients that bring the first {_pct(a_share)} of revenue, B: the next "
        f"{_pct(b_share)} (up to {_pct(a_share + b_share)}), C: the rest; X: CV <= "
        f"{opts['x_limit']}, Y: CV <= {opts['y_limit']}, Z: above; CV of monthly revenue "
        f"over {n_months} month{'s' if n_months != 1 else ''} ({crm.config.timezone}), "
        f"paid invoices in {currency}."
    ]
    if n_months < 2:
        notes.append("The period spans one month: every CV is 0, so XYZ says nothing here.")
    unlisted = _count_unlisted(session, clients, segment_cond, len(rows))
    if unlisted:
        verb = (
            "has no paid invoice in the period and is"
            if unlisted == 1
            else ("have no paid invoice in the period and are")
        )
        notes.append(f"{unlisted} client{'' if unlisted == 1 else 's'} {verb} not listed.")
    elsewhere = select(func.count()).select_from(joined)
    elsewhere = elsewhere.where(in_period, invoices.c.currency != currency)
    if segment_cond is not None:
        elsewhere = elsewhere.where(segment_cond)
    other = int(session.connection.execute(elsewhere).scalar_one())
    if other:
        notes.append(
            f"{other} paid invoice{'' if other == 1 else 's'} in other currencies than "
            f"{currency} {'is' if other == 1 else 'are'} left out."
        )
    return ReportResult(
        report=NAME, columns=COLUMNS, rows=rows, summary=summary, notes=notes, period=period
    )


def _count_unlisted(session: Session, clients: Any, segment_cond: Any, listed: int) -> int:
    q = select(func.count()).select_from(clients)
    if segment_cond is not None:
        q = q.where(segment_cond)
    return int(session.connection.execute(q).scalar_one()) - listed


def _cv(revenue: decimal.Decimal, squares: Any, n: int) -> decimal.Decimal:
    """Population CV of ``n`` monthly sums, from their total and their sum of squares."""
    if n < 2 or revenue <= 0:
        return decimal.Decimal(0)
    # months are whole cents, so their squares have at most four decimals (SQLite: floats)
    sq = _WIDE.quantize(_dec(squares), decimal.Decimal("0.0001"))
    variance = _WIDE.divide(_WIDE.subtract(_WIDE.multiply(sq, n), revenue * revenue), n * n)
    if variance <= 0:
        return decimal.Decimal(0)
    cv = _WIDE.divide(_WIDE.multiply(_WIDE.sqrt(variance), n), revenue)
    return cv.quantize(decimal.Decimal("0.0001"), context=_WIDE)


def _dec(value: Any) -> decimal.Decimal:
    return value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))


def _money(value: Any) -> decimal.Decimal:
    return _dec(value).quantize(_CENT, context=_WIDE)


def _pct(share: decimal.Decimal) -> str:
    return f"{float(share) * 100:g}%"
