"""Built-in plugin: the ``standard`` motivation scheme and the ``bonus`` report (issue 8).

``crmkit report bonus [--period P] [--team T | --user LOGIN] [--forecast] [--as-of DATE]``
computes each person's bonus for the period with the scheme named by
``[plugin.motivation] scheme`` (default ``standard``), from their
:class:`~crmkit.Standing`: the KPI facts of one :func:`crmkit.core.kpis.run`
for everyone listed, their own plans of the period, the tasks the
``overdue_tasks`` KPI counts, and their won deals whose record is incomplete
(:func:`crmkit.core.kpis.record_problems`). Whatever the number of
people, that is a handful of statements.

The standard scheme (every formula is in ``docs/motivation.rst``): per
weighted KPI, the attainment ``a`` of its plan gives a factor (0 below
``threshold``, ``a`` up to 100%, ``1 + (a - 1) * accelerator`` above, at most
``cap``); the KPI contributes ``base(role) * weight * factor``; the gross
bonus is their sum; each overdue task takes ``penalty_per_overdue`` of it, at
most ``penalty_cap``. Revenue counts as ``attributed_revenue``: a won deal
whose record is incomplete pays nothing and is listed with the reasons.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from crmkit.core.app import CRM
    from crmkit.core.motivation import Bonus, Scheme, Standing
    from crmkit.core.reports import Report, ReportQuery, ReportResult
    from crmkit.core.store import Session

#: the ``[plugin.motivation]`` table's keys and their defaults
DEFAULTS: dict[str, Any] = {
    "scheme": "standard",
    "threshold": 0.8,
    "accelerator": 2.0,
    "cap": 1.5,
    "penalty_per_overdue": 0.05,
    "penalty_cap": 0.3,
    "base": {"manager": 50000, "head": 80000},
    "weights": {
        "attributed_revenue": 0.5,
        "calls_outbound": 0.2,
        "meetings": 0.15,
        "complete_records": 0.15,
    },
}
#: the number keys: (smallest, largest) allowed
_BOUNDS: dict[str, tuple[float, float]] = {
    "threshold": (0.0, 1.0),
    "accelerator": (0.0, math.inf),
    "cap": (1.0, math.inf),
    "penalty_per_overdue": (0.0, 1.0),
    "penalty_cap": (0.0, 1.0),
}
_SECONDS_PER_DAY = 86400.0
_KEY = "plugin.motivation"


# -- settings -------------------------------------------------------------------------------
def settings(crm: CRM) -> dict[str, Any]:
    """The ``[plugin.motivation]`` table with every absent key at its default."""
    raw = crm.config.plugin("motivation")
    return {**DEFAULTS, **raw}


def _number(value: Any, key: str) -> float:
    from crmkit.core.errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"[{_KEY}] {key} must be a number, not {value!r}", field=f"{_KEY}.{key}")
    if not math.isfinite(value):
        raise ConfigError(f"[{_KEY}] {key} must be a finite number", field=f"{_KEY}.{key}")
    return float(value)


def check_standard(config: dict[str, Any], crm: CRM) -> None:
    """Raise :class:`~crmkit.ConfigError` naming the key when a standard setting is wrong."""
    from crmkit.core.errors import ConfigError
    from crmkit.core.model import Role

    def bad(key: str, reason: str) -> ConfigError:
        return ConfigError(f"[{_KEY}] {key} {reason}", field=f"{_KEY}.{key}")

    for key, (low, high) in _BOUNDS.items():
        number = _number(config.get(key, DEFAULTS[key]), key)
        if number < low or number > high:
            span = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
            raise bad(key, f"must be {span}, not {number:g}")
    roles = {r.value for r in Role}
    for table in ("base", "weights"):
        if not isinstance(config.get(table, {}), dict):
            raise bad(table, "must be a table ([plugin.motivation." + table + "])")
    for role, amount in config.get("base", {}).items():
        if role not in roles:
            raise bad(f"base.{role}", f"names no role (roles: {', '.join(sorted(roles))})")
        if _number(amount, f"base.{role}") < 0:
            raise bad(f"base.{role}", f"must be zero or more, not {amount!r}")
    for kpi, weight in config.get("weights", {}).items():
        if kpi not in crm.kpis:
            known = ", ".join(sorted(crm.kpis))
            raise bad(f"weights.{kpi}", f"names no KPI (known: {known})")
        if _number(weight, f"weights.{kpi}") < 0:
            raise bad(f"weights.{kpi}", f"must be zero or more, not {weight!r}")


def chosen_scheme(crm: CRM) -> tuple[Scheme, dict[str, Any]]:
    """The scheme ``[plugin.motivation] scheme`` names and the settings, checked."""
    from crmkit.core.errors import ConfigError

    config = settings(crm)
    name = config["scheme"]
    schemes = crm.motivation_schemes
    if not isinstance(name, str) or name not in schemes:
        known = ", ".join(sorted(schemes)) or "none"
        raise ConfigError(
            f"[{_KEY}] scheme {name!r} is not a registered motivation scheme (known: {known})",
            field=f"{_KEY}.scheme",
        )
    scheme = schemes[name]
    if scheme.check is not None:
        scheme.check(config, crm)
    return scheme, config


# -- the standard scheme -------------------------------------------------------------------------
def factor(attainment: float, threshold: float, accelerator: float, cap: float) -> float:
    """0 below ``threshold``; the attainment up to 1; accelerated above, at most ``cap``."""
    if attainment < threshold:
        return 0.0
    if attainment <= 1:
        return round(attainment, 6)
    return round(min(cap, 1 + (attainment - 1) * accelerator), 6)


def shown(kpi: Any, value: Any) -> Any:
    """A fact as a bonus line shows it: money to the cent, a share to four decimals."""
    from crmkit.core.motivation import money

    if value is None:
        return None
    if kpi.unit == "money":
        return money(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() and kpi.unit == "count" else round(value, 4)
    return value


def standard(session: Session, standing: Standing) -> Bonus:
    """The standard scheme: weighted KPI attainments, thresholds, a cap, overdue penalties."""
    from crmkit.core.motivation import Bonus, Line, money

    config = standing.settings
    threshold, accelerator, cap = (float(config[k]) for k in ("threshold", "accelerator", "cap"))
    bases = config.get("base", {})
    role = standing.user.role
    base = money(bases.get(role, 0))
    notes: list[str] = list(standing.projected)
    if role not in bases:
        notes.append(f"no base bonus for the role {role!r} ([plugin.motivation.base])")
    kpis = session.crm.kpis
    lines = []
    for kpi_id, raw_weight in config.get("weights", {}).items():
        kpi = kpis[kpi_id]
        weight = float(raw_weight)
        fact = standing.facts.get(kpi_id)
        value = None if fact is None else fact.value
        plan = standing.plans.get(kpi_id)
        attainment: float | None = None
        got = 0.0
        note = ""
        if plan is None:
            note = f"no plan for {kpi_id}"
        else:
            attainment = kpi.attainment(value, plan)
            if attainment is None:
                note = (
                    f"no attainment: {kpi_id} has no value (nothing to divide)"
                    if value is None
                    else f"no attainment: the plan of {kpi_id} is 0"
                )
            elif attainment == math.inf:
                got = cap
                attainment = None
                note = f"no {kpi_id} at all: counts as the cap"
            else:
                got = factor(attainment, threshold, accelerator, cap)
                if attainment < threshold:
                    note = f"below the threshold of {threshold:.0%}"
                elif got == cap and attainment > 1:
                    note = f"capped at {cap:.0%}"
                attainment = round(attainment, 4)
        contribution = money(base * Decimal(str(weight)) * Decimal(str(got)))
        lines.append(
            Line(
                kpi=kpi_id,
                title=kpi.title,
                kind=kpi.kind,
                fact=shown(kpi, value),
                plan=plan,
                attainment=attainment,
                weight=weight,
                factor=got,
                contribution=contribution,
                note=note,
            )
        )
    gross = sum((line.contribution for line in lines), Decimal("0.00"))
    rate = min(
        float(config["penalty_cap"]),
        round(len(standing.overdue) * float(config["penalty_per_overdue"]), 6),
    )
    penalty = money(gross * Decimal(str(rate)))
    if standing.overdue:
        notes.append(
            f"penalty: {len(standing.overdue)} overdue tasks x "
            f"{float(config['penalty_per_overdue']):.0%}, at most "
            f"{float(config['penalty_cap']):.0%}: {rate:.0%} of the gross bonus"
        )
    if standing.unattributed:
        amount = sum((d.amount for d in standing.unattributed), Decimal("0.00"))
        notes.append(
            f"{len(standing.unattributed)} won deals ({money(amount)}) do not count: "
            "their record is incomplete"
        )
    return Bonus(
        base=base,
        lines=tuple(lines),
        penalties=standing.overdue,
        gross=money(gross),
        penalty=penalty,
        total=money(gross - penalty),
        unattributed=standing.unattributed,
        notes=tuple(notes),
    )


@hookimpl
def crmkit_motivation_schemes() -> list[Scheme]:
    from crmkit.core.motivation import Scheme

    return [
        Scheme(
            "standard",
            "Weighted KPI attainment with a threshold, an accelerator, a cap and penalties",
            standard,
            description="base(role) x weight x factor(attainment) per KPI, minus a share per "
            "overdue task; revenue counts only with a complete record.",
            check=check_standard,
        )
    ]


# -- standings ---------------------------------------------------------------------------------
def standings(session: Session, query: ReportQuery, config: dict[str, Any]) -> list[Standing]:
    """Every listed person's :class:`~crmkit.Standing` for the query's period.

    A handful of statements whatever the number of people: the KPIs (one per
    source), the plans, the overdue tasks, the unattributed deals, and with
    ``--forecast`` the open deals.
    """
    from crmkit.core.kpis import Fact, Window, people
    from crmkit.core.kpis import run as run_kpis
    from crmkit.core.motivation import Person, Standing
    from crmkit.core.plans import figures, moment
    from crmkit.core.reports import parse_period

    now, day = moment(session, query)
    period = query.period or parse_period(day.strftime("%Y-%m"))
    start, end = period.bounds(session.crm.tz)
    cut = min(max(now, start), end)
    listed = people(session, team=query.team, user=query.user)
    ids = tuple(p.id for p in listed)
    team_names = _team_names(session)
    kpis = session.crm.kpis
    window = Window(start, cut, ids, period=period, now=now)
    facts = run_kpis(session, list(kpis.values()), window) if ids else {}
    plans: dict[int, dict[str, Decimal]] = defaultdict(dict)
    for plan in session.plans.list(period=period, exact=True):
        if plan.scope == "user" and plan.user_id in ids:
            plans[plan.user_id][plan.kpi] = plan.target
    overdue = _overdue(session, window) if ids else {}
    unattributed = _unattributed(session, window) if ids else {}
    forecast = bool(query.options.get("forecast"))
    pipeline: dict[int, Decimal] = {}
    projected: tuple[str, ...] = ()
    days = (end - start).total_seconds() / _SECONDS_PER_DAY
    elapsed = (cut - start).total_seconds() / _SECONDS_PER_DAY
    if forecast and ids:
        if cut < end:
            pipeline = _weighted_pipeline(session, ids, period, cut)
        projected = (
            f"forecast: additive KPIs projected at the run rate (fact / {elapsed:.2f} elapsed "
            f"days x {days:.2f} days), ratios kept as they are; attributed_revenue plus the "
            "open deals expected to close in the period x their stage's probability; "
            "penalties count the tasks overdue now",
        )
    out = []
    for person in listed:
        mine = {kpi_id: facts[kpi_id][person.id] for kpi_id in facts}
        extra: tuple[str, ...] = ()
        if forecast:
            for kpi_id, fact in mine.items():
                kpi = kpis[kpi_id]
                if kpi.is_ratio:
                    continue
                guess = figures(kpi, 0.0, fact.value, elapsed, days, now > start)["projection"]
                if guess is not None:
                    mine[kpi_id] = Fact(Decimal(str(guess)) if kpi.unit == "money" else guess)
            if "attributed_revenue" in mine:
                weighted = pipeline.get(person.id, Decimal("0.00"))
                mine["attributed_revenue"] = Fact(
                    Decimal(str(mine["attributed_revenue"].numerator)) + weighted
                )
                extra = (f"forecast: open pipeline, weighted: {weighted}",)
        out.append(
            Standing(
                user=Person(
                    person.id,
                    person.login,
                    person.name,
                    person.role,
                    team_names.get(person.team_id),
                    person.team_id,
                ),
                period=period,
                facts=mine,
                plans=dict(plans.get(person.id, {})),
                overdue=tuple(overdue.get(person.id, ())),
                unattributed=tuple(unattributed.get(person.id, ())),
                settings=config,
                forecast=forecast,
                projected=projected + extra,
            )
        )
    return out


def bonuses(session: Session, query: ReportQuery) -> list[tuple[Standing, Bonus]]:
    """Each listed person's standing and bonus, computed by the deployment's scheme."""
    scheme, config = chosen_scheme(session.crm)
    return [
        (standing, scheme.compute(session, standing))
        for standing in standings(session, query, config)
    ]


def _team_names(session: Session) -> dict[int | None, str]:
    from sqlalchemy import select

    teams = session.table("teams")
    return {r.id: r.name for r in session.connection.execute(select(teams.c.id, teams.c.name))}


def _overdue(session: Session, window: Any) -> dict[int, list[Any]]:
    """The tasks the ``overdue_tasks`` KPI counts, by assignee (the same conditions)."""
    from sqlalchemy import and_, or_, select

    from crmkit.core.motivation import OverdueTask

    t = session.table("tasks")
    as_of = window.as_of
    done_in = and_(t.c.done_at >= window.start, t.c.done_at < window.end)
    open_overdue = and_(
        t.c.due_at < as_of, t.c.created_at < as_of, or_(t.c.done_at.is_(None), t.c.done_at >= as_of)
    )
    stmt = (
        select(t.c.assignee_id, t.c.id, t.c.title, t.c.due_at, t.c.done_at)
        .where(
            t.c.assignee_id.in_(window.user_ids),
            or_(open_overdue, and_(done_in, t.c.done_late.is_(True))),
        )
        .order_by(t.c.due_at, t.c.id)
    )
    found: dict[int, list[Any]] = defaultdict(list)
    for row in session.connection.execute(stmt):
        done = row.done_at if row.done_at is not None and row.done_at < as_of else None
        found[row.assignee_id].append(OverdueTask(row.id, row.title, row.due_at, done))
    return found


def _unattributed(session: Session, window: Any) -> dict[int, list[Any]]:
    """Deals won in the window whose record is incomplete, with every reason, by owner."""
    from sqlalchemy import case, or_, select

    from crmkit.core.kpis import record_problems
    from crmkit.core.motivation import UnattributedDeal, money
    from crmkit.core.pipeline import WON

    deals = session.table("deals")
    problems = record_problems(session, deals)
    flags = [case((cond, 1), else_=0).label(f"p{i}") for i, (_, cond) in enumerate(problems)]
    stmt = (
        select(
            deals.c.owner_id, deals.c.id, deals.c.title, deals.c.amount, deals.c.closed_at, *flags
        )
        .where(
            deals.c.owner_id.in_(window.user_ids),
            deals.c.status == WON,
            deals.c.closed_at >= window.start,
            deals.c.closed_at < window.end,
            or_(*(cond for _, cond in problems)),
        )
        .order_by(deals.c.closed_at, deals.c.id)
    )
    found: dict[int, list[Any]] = defaultdict(list)
    for row in session.connection.execute(stmt):
        reasons = tuple(reason for i, (reason, _) in enumerate(problems) if row[5 + i])
        found[row.owner_id].append(
            UnattributedDeal(row.id, row.title, money(row.amount), row.closed_at, reasons)
        )
    return found


def _weighted_pipeline(
    session: Session, ids: tuple[int, ...], period: Any, when: dt.datetime
) -> dict[int, Decimal]:
    """Per owner: the deals open at ``when`` expected to close in ``period``, weighted.

    Each counts for its amount times the probability of the stage it was at
    then (the pipeline's ``probability``, as the ``forecast`` report's weighted
    pipeline): one statement for everyone.
    """

    from crmkit.core.lifecycle import deals_open_at
    from crmkit.core.motivation import money

    deals = session.table("deals")
    stmt = deals_open_at(session, when).where(
        deals.c.owner_id.in_(ids),
        deals.c.expected_close >= period.start,
        deals.c.expected_close < period.end,
    )
    pipelines = session.crm.pipelines
    total: dict[int, Decimal] = defaultdict(lambda: Decimal("0.00"))
    for row in session.connection.execute(stmt):
        flow = pipelines.get(row.pipeline)
        if flow is None:
            continue
        probability = next((s.probability for s in flow.stages if s.name == row.stage), None)
        total[row.owner_id] += Decimal(row.amount) * Decimal(str(probability or 0.0))
    return {owner: money(amount) for owner, amount in total.items()}


# -- the report --------------------------------------------------------------------------------
OPTIONS: dict[str, Any] = {
    "forecast": {
        "type": "boolean",
        "default": False,
        "description": "The bonus expected at the period's end: additive KPIs at the run "
        "rate, attributed revenue plus the open pipeline's weighted forecast.",
    },
    "as_of": {
        "type": "string",
        "pattern": r"^\d{4}-\d{2}-\d{2}$",
        "description": "Look from the end of this day (YYYY-MM-DD, the deployment's time "
        "zone) instead of now: facts up to then, elapsed days to then.",
    },
}


@hookimpl(trylast=True)
def crmkit_reports() -> list[Report]:
    from crmkit.core.reports import Report

    return [
        Report(
            "bonus",
            "Bonuses",
            run,
            description=(
                "Each person's bonus for the period by the deployment's motivation scheme: "
                "base, gross, penalty, bonus, overdue tasks and unattributed deals; with "
                "--user one person's full breakdown (KPI lines, penalty tasks, unattributed "
                "deals). --format json carries every breakdown. Default period: the current "
                "month."
            ),
            filters=("period", "team", "user"),
            options=OPTIONS,
            chart=chart,
        )
    ]


SUMMARY_COLUMNS = (
    ("user", "User", "text"),
    ("name", "Name", "text"),
    ("role", "Role", "text"),
    ("base", "Base", "money"),
    ("gross", "Gross", "money"),
    ("penalty", "Penalty", "money"),
    ("bonus", "Bonus", "money"),
    ("overdue", "Overdue tasks", "integer"),
    ("unattributed", "Unattributed deals", "integer"),
    ("unattributed_amount", "Unattributed amount", "money"),
)
BREAKDOWN_COLUMNS = (
    ("part", "Part", "text"),
    ("item", "Item", "text"),
    ("title", "Title", "text"),
    ("fact", "Fact", "text"),
    ("plan", "Plan", "number"),
    ("attainment", "Attainment", "percent"),
    ("weight", "Weight", "percent"),
    ("factor", "Factor", "text"),
    ("amount", "Amount", "money"),
    ("note", "Note", "text"),
)


def run(session: Session, query: ReportQuery) -> ReportResult:
    """Compute every listed person's bonus (see ``docs/motivation.rst``)."""
    from crmkit.core.model import to_json
    from crmkit.core.motivation import money
    from crmkit.core.plans import moment
    from crmkit.core.reports import Column, ReportResult, parse_period

    scheme, _ = chosen_scheme(session.crm)
    computed = bonuses(session, query)
    _, day = moment(session, query)
    period = query.period or parse_period(day.strftime("%Y-%m"))
    rows: list[dict[str, Any]] = []
    for standing, bonus in computed:
        rows.append(
            {
                "user": standing.user.login,
                "name": standing.user.name,
                "role": standing.user.role,
                "team": standing.user.team,
                "base": bonus.base,
                "gross": bonus.gross,
                "penalty": bonus.penalty,
                "bonus": bonus.total,
                "overdue": len(bonus.penalties),
                "unattributed": len(bonus.unattributed),
                "unattributed_amount": money(
                    sum((d.amount for d in bonus.unattributed), Decimal(0))
                ),
                "breakdown": to_json(bonus),
            }
        )
    summary: dict[str, Any] = {
        "scheme": scheme.name,
        "people": len(rows),
        "gross": money(sum((r["gross"] for r in rows), Decimal(0))),
        "penalty": money(sum((r["penalty"] for r in rows), Decimal(0))),
        "bonus": money(sum((r["bonus"] for r in rows), Decimal(0))),
        "forecast": bool(query.options.get("forecast")),
    }
    notes = [
        f"Scheme {scheme.name!r}: {scheme.title}.",
        "Bonus = gross - penalty; gross = the KPI lines' contributions; revenue counts only "
        "for won deals with a complete record (unattributed deals are listed with reasons).",
    ]
    if query.options.get("forecast"):
        notes.append(
            "Forecast: the bonus expected at the period's end (additive KPIs at the run rate, "
            "attributed revenue plus the open pipeline weighted by stage probability)."
        )
    if query.user is not None and len(computed) == 1:
        standing, bonus = computed[0]
        summary.update({k: rows[0][k] for k in ("user", "name", "role", "base", "overdue")})
        summary.update(gross=bonus.gross, penalty=bonus.penalty, bonus=bonus.total)
        notes.extend(bonus.notes)
        columns = [Column(*c) for c in BREAKDOWN_COLUMNS]
        return ReportResult(
            "bonus", columns, breakdown_rows(bonus), summary=summary, notes=notes, period=period
        )
    columns = [Column(*c) for c in SUMMARY_COLUMNS]
    return ReportResult("bonus", columns, rows, summary=summary, notes=notes, period=period)


def breakdown_rows(bonus: Bonus) -> list[dict[str, Any]]:
    """One person's bonus as rows: the KPI lines, gross, each penalty task, the penalty,
    the bonus, then each unattributed deal with its reasons."""
    rows: list[dict[str, Any]] = []

    def add(part: str, **values: Any) -> None:
        row = dict.fromkeys(c[0] for c in BREAKDOWN_COLUMNS)
        row.update(part=part, **values)
        rows.append(row)

    add("base", amount=bonus.base)
    for line in bonus.lines:
        add(
            "kpi",
            item=line.kpi,
            title=line.title,
            fact=None if line.fact is None else str(line.fact),
            plan=None if line.plan is None else float(line.plan),
            attainment=line.attainment,
            weight=line.weight,
            factor=line.factor,
            amount=line.contribution,
            note=line.note or None,
        )
    add("gross", amount=bonus.gross)
    for task in bonus.penalties:
        done = "still open" if task.done_at is None else f"done {task.done_at:%Y-%m-%d %H:%M}"
        add(
            "overdue task",
            item=f"task #{task.id}",
            title=task.title,
            note=f"due {task.due_at:%Y-%m-%d %H:%M}, {done}",
        )
    add("penalty", amount=-bonus.penalty if bonus.penalty else bonus.penalty)
    add("bonus", amount=bonus.total)
    for deal in bonus.unattributed:
        add(
            "unattributed deal",
            item=f"deal #{deal.id}",
            title=deal.title,
            amount=deal.amount,
            note="; ".join(deal.reasons),
        )
    return rows


def chart(result: ReportResult, path: Path) -> None:
    """Stacked bars per person: the bonus, and the penalty on top of it (gross in all)."""
    from crmkit.core import charts

    rows = [r for r in result.rows if "gross" in r]
    fig, ax = charts.figure(width=9.0, height=5.0)
    names = [r["user"] for r in rows]
    paid = [float(r["bonus"]) for r in rows]
    lost = [float(r["penalty"]) for r in rows]
    ax.bar(names, paid, color=charts.COLORS[2], label="bonus")
    ax.bar(names, lost, bottom=paid, color=charts.COLORS[3], label="penalty")
    ax.set_ylabel("Gross bonus: paid and lost to penalties")
    title = "Bonuses"
    if result.period is not None:
        title += f", {result.period.label}"
    fig.suptitle(title, fontsize=13, fontweight="bold")
    if not rows:
        ax.text(0.5, 0.5, "Nobody (or one person: see the breakdown)", ha="center",
                va="center", transform=ax.transAxes)  # fmt: skip
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    charts.save(fig, path)
