"""Built-in plugin: crmkit's KPIs, the ``kpi`` report, and who may see whose figures.

Five sources, each one ``GROUP BY user_id`` statement whatever the number of
people and KPIs (see :mod:`crmkit.core.kpis`):

``interactions``
    interactions logged in the period, by the user who logged them:
    ``calls_outbound``, ``calls_inbound``, ``meetings``, ``proposals_sent``,
    ``contacts`` (every interaction), ``contact_frequency`` (contacts per
    client in work);
``clients``
    the clients a user owns: ``clients_in_work`` (not lost, created before
    the period's end), ``new_clients`` (created in the period);
``invoices``
    invoices of the user's deals: ``invoices_issued`` (issued in the period),
    ``payments`` (the amounts paid in the period);
``closed_deals``
    the user's deals closed in the period: ``won_deals``, ``won_revenue``,
    ``attributed_revenue`` (won with a complete record), ``win_rate`` (won of
    closed), ``average_deal_size``, ``complete_records`` (the share of won
    deals with a complete record);
``tasks``
    the user's tasks: ``tasks_done`` in the period, ``overdue_tasks`` (open
    past their due time at ``min(end, now)``, plus those done late in the
    period; lower is better).

A won deal's record is *complete* (:func:`crmkit.core.kpis.record_problems`) when its moves
were made in crmkit (none imported), it was not won straight from the
pipeline's first stage, at least one interaction is logged on it (one of
each kind listed in ``[plugin.kpis] record_interactions``, when set), and
its amount is above zero: "no record in the system, no sale".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.kpis import KPI, Window
    from crmkit.core.reports import Report
    from crmkit.core.store import Session


# -- sources ---------------------------------------------------------------------------------
def _interactions(session: Session, window: Window) -> Any:
    from sqlalchemy import select

    t = session.table("interactions")
    return select(
        t.c.user_id, t.c.kind, t.c.direction, t.c.topic, t.c.outcome, t.c.client_id
    ).where(
        t.c.occurred_at >= window.start,
        t.c.occurred_at < window.end,
        t.c.user_id.in_(window.user_ids),
    )


def _clients(session: Session, window: Window) -> Any:
    from sqlalchemy import or_, select

    t = session.table("clients")
    return select(
        t.c.owner_id.label("user_id"),
        (t.c.created_at >= window.start).label("new"),
        or_(t.c.stage.is_(None), t.c.stage != "lost").label("in_work"),
    ).where(t.c.owner_id.in_(window.user_ids), t.c.created_at < window.end)


def _invoices(session: Session, window: Window) -> Any:
    from sqlalchemy import and_, or_, select

    invoices, deals = session.table("invoices"), session.table("deals")
    issued = and_(invoices.c.issued_at >= window.start, invoices.c.issued_at < window.end)
    paid = and_(invoices.c.paid_at >= window.start, invoices.c.paid_at < window.end)
    return (
        select(
            deals.c.owner_id.label("user_id"),
            issued.label("issued"),
            and_(paid, invoices.c.status == "paid").label("paid"),
            invoices.c.amount,
        )
        .select_from(invoices.join(deals, deals.c.id == invoices.c.deal_id))
        .where(deals.c.owner_id.in_(window.user_ids), or_(issued, paid))
    )


def _closed_deals(session: Session, window: Window) -> Any:
    from sqlalchemy import case, select

    from crmkit.core.kpis import complete
    from crmkit.core.pipeline import WON

    deals = session.table("deals")
    won = deals.c.status == WON
    return select(
        deals.c.owner_id.label("user_id"),
        case((won, 1), else_=0).label("won"),
        deals.c.amount,
        case((won & complete(session, deals), 1), else_=0).label("complete"),
    ).where(
        deals.c.owner_id.in_(window.user_ids),
        deals.c.closed_at >= window.start,
        deals.c.closed_at < window.end,
        deals.c.status.in_([WON, "lost"]),
    )


def _tasks(session: Session, window: Window) -> Any:
    from sqlalchemy import and_, or_, select

    t = session.table("tasks")
    as_of = window.as_of
    done_in = and_(t.c.done_at >= window.start, t.c.done_at < window.end)
    open_overdue = and_(
        t.c.due_at < as_of, t.c.created_at < as_of, or_(t.c.done_at.is_(None), t.c.done_at >= as_of)
    )
    return select(
        t.c.assignee_id.label("user_id"),
        done_in.label("done"),
        and_(done_in, t.c.done_late.is_(True)).label("late"),
        open_overdue.label("overdue"),
    ).where(t.c.assignee_id.in_(window.user_ids), or_(done_in, open_overdue))


def sources() -> dict[str, Any]:
    from crmkit.core.kpis import Source

    return {
        "interactions": Source("interactions", _interactions, "interactions logged in the period"),
        "clients": Source("clients", _clients, "clients owned, created before the period's end"),
        "invoices": Source("invoices", _invoices, "invoices of the user's deals"),
        "closed_deals": Source("closed_deals", _closed_deals, "deals closed in the period"),
        "tasks": Source("tasks", _tasks, "tasks done in the period or overdue at its end"),
    }


@hookimpl
def crmkit_kpis() -> list[KPI]:
    from sqlalchemy import and_, func, true

    from crmkit.core.kpis import KPI

    src = sources()
    i, c, v, d, t = (
        src["interactions"],
        src["clients"],
        src["invoices"],
        src["closed_deals"],
        src["tasks"],
    )

    def count(cond: Any = None) -> Any:
        return (
            (lambda r: func.count()) if cond is None else (lambda r: func.count().filter(cond(r)))
        )

    def is_true(column: str) -> Any:
        return lambda r: r.c[column] == true()

    return [
        KPI(
            "calls_outbound",
            "Outbound calls",
            i,
            count(lambda r: and_(r.c.kind == "call", r.c.direction == "outbound")),
            description="Calls the user made, logged in the period.",
        ),
        KPI(
            "calls_inbound",
            "Inbound calls",
            i,
            count(lambda r: and_(r.c.kind == "call", r.c.direction == "inbound")),
            description="Calls the user took, logged in the period.",
        ),
        KPI(
            "meetings",
            "Meetings",
            i,
            count(lambda r: r.c.kind == "meeting"),
            description="Meetings logged in the period.",
        ),
        KPI(
            "proposals_sent",
            "Proposals sent",
            i,
            count(lambda r: and_(r.c.topic == "proposal", r.c.outcome.in_(["sent", "delivered"]))),
            description="Interactions on the topic 'proposal' with the outcome sent or delivered.",
        ),
        KPI(
            "contacts",
            "Contacts",
            i,
            count(),
            description="Every interaction the user logged in the period.",
        ),
        KPI(
            "contact_frequency",
            "Contacts per client in work",
            i,
            count(),
            per="clients_in_work",
            unit="number",
            description="contacts / clients_in_work.",
        ),
        KPI(
            "clients_in_work",
            "Clients in work",
            c,
            count(is_true("in_work")),
            description="Clients the user owns, created before the period's end, not lost.",
        ),
        KPI(
            "new_clients",
            "New clients",
            c,
            count(is_true("new")),
            kind="result",
            description="Clients the user owns that were created in the period.",
        ),
        KPI(
            "invoices_issued",
            "Invoices issued",
            v,
            count(is_true("issued")),
            description="Invoices of the user's deals issued in the period.",
        ),
        KPI(
            "payments",
            "Payments",
            v,
            lambda r: func.sum(r.c.amount).filter(r.c.paid == true()),
            unit="money",
            kind="result",
            description="The amounts of the user's deals' invoices paid in the period.",
        ),
        KPI(
            "won_deals",
            "Deals won",
            d,
            count(lambda r: r.c.won == 1),
            kind="result",
            description="The user's deals won in the period.",
        ),
        KPI(
            "won_revenue",
            "Won revenue",
            d,
            lambda r: func.sum(r.c.amount).filter(r.c.won == 1),
            unit="money",
            kind="result",
            description="The amounts of the user's deals won in the period.",
        ),
        KPI(
            "attributed_revenue",
            "Attributed revenue",
            d,
            lambda r: func.sum(r.c.amount).filter(r.c.complete == 1),
            unit="money",
            kind="result",
            description="won_revenue of the deals whose record is complete.",
        ),
        KPI(
            "win_rate",
            "Win rate",
            d,
            count(lambda r: r.c.won == 1),
            per=count(),
            unit="ratio",
            kind="result",
            description="Deals won / deals closed (won or lost) in the period.",
        ),
        KPI(
            "average_deal_size",
            "Average deal size",
            d,
            lambda r: func.sum(r.c.amount).filter(r.c.won == 1),
            per=count(lambda r: r.c.won == 1),
            unit="money",
            kind="result",
            description="won_revenue / won_deals.",
        ),
        KPI(
            "complete_records",
            "Complete records",
            d,
            count(lambda r: r.c.complete == 1),
            per=count(lambda r: r.c.won == 1),
            unit="ratio",
            description="The share of deals won in the period whose record is complete.",
        ),
        KPI(
            "tasks_done",
            "Tasks done",
            t,
            count(is_true("done")),
            description="Tasks the user completed in the period.",
        ),
        KPI(
            "overdue_tasks",
            "Overdue tasks",
            t,
            count(lambda r: (r.c.overdue == true()) | (r.c.late == true())),
            direction="lower",
            description="Tasks open past their due time at the period's end (or now), plus "
            "tasks done late in the period.",
        ),
    ]


# -- who may see whose figures ---------------------------------------------------------------
@hookimpl
def crmkit_access_resources() -> list[Any]:
    from crmkit.core.access import Attribute, Col, Resource

    return [
        Resource(
            "performance",
            "users",
            {
                "id": Attribute("id", "integer", Col("id"), False, "the person (a user id)"),
                "team_id": Attribute("team_id", "integer", Col("team_id"), True, "their team"),
                "role": Attribute("role", "string", Col("role"), False, "their role"),
            },
            actions=("read",),
            title="people's KPIs, plans and bonuses",
        )
    ]


@hookimpl
def crmkit_access_policies() -> list[dict[str, Any]]:
    """Everyone reads their own figures; heads those of their team and the teams nested in it."""
    return [
        {
            "version": 1,
            "id": "crmkit-performance",
            "title": "Who sees whose KPIs, plans and bonuses",
            "rules": [
                {
                    "id": "performance-own",
                    "description": "Everyone reads their own KPIs, plans and bonus.",
                    "effect": "allow",
                    "actions": ["read"],
                    "resource": "performance",
                    "when": {
                        "properties": {
                            "resource": {"properties": {"id": {"const": {"$subject": "id"}}}}
                        }
                    },
                },
                {
                    "id": "performance-head-team",
                    "description": "Heads read the figures of their team and of the teams "
                    "nested in it.",
                    "effect": "allow",
                    "roles": ["head"],
                    "actions": ["read"],
                    "resource": "performance",
                    "when": {
                        "properties": {
                            "resource": {
                                "properties": {"team_id": {"enum": {"$subject": "team_ids"}}}
                            }
                        }
                    },
                },
            ],
        }
    ]


# -- the kpi report ---------------------------------------------------------------------------
#: how a KPI's unit shows in a report column
COLUMN_TYPE = {
    "count": "integer",
    "money": "money",
    "ratio": "percent",
    "number": "number",
    "days": "number",
}


def chosen(session: Session, text: str | None) -> list[KPI]:
    """The KPIs named in ``text`` (comma-separated ids), or every KPI."""
    crm = session.crm
    if not text:
        return list(crm.kpis.values())
    return [crm.kpi(name.strip()) for name in text.split(",") if name.strip()]


def kpi_report(session: Session, query: Any) -> Any:
    """Every KPI (or ``--kpis``) for each person in scope, and the total of them all."""
    import datetime as dt

    from crmkit.core.kpis import LISTED_ROLES, Window, people, run, total
    from crmkit.core.reports import Column, ReportResult

    period = query.period
    start, end = period.bounds(session.crm.tz)
    kpis = chosen(session, query.options.get("kpis"))
    listed = people(session, team=query.team, user=query.user)
    window = Window(start, end, tuple(p.id for p in listed), period, dt.datetime.now(dt.UTC))
    facts = run(session, kpis, window)
    rows = []
    for person in listed:
        row: dict[str, Any] = {"user": person.login, "name": person.name}
        for kpi in kpis:
            row[kpi.id] = _shown(kpi, facts[kpi.id][person.id].value)
        rows.append(row)
    summary = {kpi.id: _shown(kpi, total(facts[kpi.id].values()).value) for kpi in kpis}
    summary["people"] = len(listed)
    columns = [Column("user", "User"), Column("name", "Name")] + [
        Column(kpi.id, kpi.title, COLUMN_TYPE[kpi.unit]) for kpi in kpis
    ]
    notes = [
        "summary: the KPIs of everyone listed together (a ratio is the ratio of the sums).",
        f"people: the active {' and '.join(r + 's' for r in LISTED_ROLES)} you may read.",
    ]
    return ReportResult("kpi", columns, rows, summary=summary, notes=notes, period=period)


def _shown(kpi: KPI, value: Any) -> Any:
    from decimal import Decimal

    if value is None:
        return None
    if kpi.unit == "money":
        return Decimal(str(value)).quantize(Decimal("0.01"))
    if kpi.unit == "count":
        return int(value)
    return round(float(value), 4)


@hookimpl
def crmkit_reports() -> list[Report]:
    from crmkit.core.reports import Report

    return [
        Report(
            "kpi",
            "KPIs",
            kpi_report,
            description="Every KPI (or those of --kpis) for each manager and head, and in total.",
            filters=("period", "team", "user"),
            options={
                "kpis": {
                    "type": "string",
                    "description": "The KPIs to compute, comma-separated ids "
                    "(crmkit kpi list); default: all.",
                }
            },
            default_period="last-1-months",
        )
    ]
