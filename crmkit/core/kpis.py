"""KPIs: a contract plugins fill (``crmkit_kpis``) and one runner that computes a team at once.

A :class:`KPI` names what it measures (id, title, unit, direction, result or
process) and how: an aggregate over the rows of a :class:`Source`. A source
is a ``SELECT`` with a ``user_id`` column (whom each row counts for), limited
to a :class:`Window` (a period and the users asked about). The runner
(:func:`run`) groups the KPIs asked for by source and runs **one** ``GROUP BY
user_id`` statement per source, with every KPI of that source as one more
aggregate: a whole team's KPIs over a year take as many queries as there are
sources, not one per person per KPI.

A KPI is a sum (``value`` only) or a ratio: ``per`` is the denominator,
either another aggregate over the same source or the id of another KPI whose
value divides this one (``contact_frequency`` is interactions per client in
work). Each person's figure is a :class:`Fact` holding both parts, so that a
team's figure is the ratio of the sums (a team's win rate is not the mean of
its members' win rates).

A KPI that cannot be one aggregate may give ``compute(session, window)``
instead, returning ``{user_id: Fact}`` (a Python fallback; DESIGN.md prefers SQL).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from attrs import field, frozen

from .errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from .reports import Period
    from .store import Session

#: what a KPI's value is: how it is shown and rounded
UNITS = ("count", "money", "ratio", "number", "days")
DIRECTIONS = ("higher", "lower")
KINDS = ("result", "process")
KPI_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@frozen
class Window:
    """What KPIs are computed over: ``start <= t < end`` (UTC) and the users asked about.

    ``now`` is the moment the run looks from (the period's end, or the
    current time when the period is not over): what is *open* or *overdue*
    is judged at ``now``.
    """

    start: dt.datetime
    end: dt.datetime
    user_ids: tuple[int, ...]
    period: Period | None = None
    now: dt.datetime = field(factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def as_of(self) -> dt.datetime:
        """``min(end, now)``: the moment open and overdue things are judged at."""
        return min(self.end, self.now)


@frozen
class Source:
    """Rows that KPIs aggregate: ``rows(session, window)`` is a SELECT with a ``user_id`` column.

    The SELECT should already be limited to ``window.user_ids`` and to what
    the window's period makes relevant; the runner wraps it as a subquery
    and groups it by ``user_id``. Two KPIs of the same source (the same
    ``name``) are computed by the same statement.
    """

    name: str
    rows: Callable[[Session, Window], Any]
    description: str = ""


@frozen
class Fact:
    """One person's (or team's) KPI: ``numerator``, and ``denominator`` for a ratio."""

    #: an int, a Decimal (money) or a float
    numerator: Any = 0
    denominator: Any = None

    @property
    def value(self) -> Any:
        """The numerator, or the ratio as a float (None when the denominator is 0)."""
        if self.denominator is None:
            return self.numerator
        if not self.denominator:
            return None
        return float(self.numerator) / float(self.denominator)

    def __add__(self, other: Fact) -> Fact:
        den = (
            None
            if self.denominator is None and other.denominator is None
            else _add(self.denominator or 0, other.denominator or 0)
        )
        return Fact(_add(self.numerator, other.numerator), den)


def _add(a: Any, b: Any) -> Any:
    """``a + b`` of ints, Decimals and floats (a float makes the sum a float)."""
    if isinstance(a, float) or isinstance(b, float):
        return float(a) + float(b)
    return a + b


def _check_choice(name: str, allowed: Sequence[str]) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value not in allowed:
            raise ValidationError(
                f"{value!r} is not one of {', '.join(allowed)}", field=f"kpi.{name}"
            )

    return check


def _check_id(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not KPI_ID.match(value):
        raise ValidationError(
            f"{value!r} is not a KPI id (snake case: lower-case letters, digits, '_')",
            field="kpi.id",
        )


@frozen
class KPI:
    """A key performance indicator: what it measures and how it is computed.

    ``value(r)`` returns an aggregate SQL expression over the columns of the
    source's rows (``r.c``), e.g. ``func.count().filter(r.c.kind == "call")``;
    ``per`` is the denominator: an aggregate the same way, or the id of
    another KPI. ``direction`` says whether more is better (``higher``) or
    less (``lower``, e.g. overdue tasks); ``kind`` whether the KPI measures a
    result (revenue) or the process that leads to it (calls, meetings).
    """

    id: str = field(validator=_check_id)
    title: str
    source: Source | None = None
    value: Callable[[Any], Any] | None = None
    per: Callable[[Any], Any] | str | None = None
    unit: str = field(default="count", validator=_check_choice("unit", UNITS))
    direction: str = field(default="higher", validator=_check_choice("direction", DIRECTIONS))
    kind: str = field(default="process", validator=_check_choice("kind", KINDS))
    description: str = ""
    #: a Python fallback: ``compute(session, window) -> {user_id: Fact}``
    compute: Callable[[Session, Window], dict[int, Fact]] | None = None

    def __attrs_post_init__(self) -> None:
        if self.compute is None and (self.source is None or self.value is None):
            raise ValidationError(
                f"KPI {self.id!r} needs a source and a value, or compute", field="kpi.source"
            )

    @property
    def is_ratio(self) -> bool:
        return self.per is not None

    def better(self, fact: Any, target: Any) -> bool:
        """Whether ``fact`` meets ``target`` in this KPI's direction."""
        if fact is None:
            return False
        return bool(fact >= target if self.direction == "higher" else fact <= target)

    def attainment(self, fact: Any, target: Any) -> float | None:
        """Attainment: ``fact / target`` (``target / fact`` if lower is better).

        None when it cannot be said (no fact, or a zero target for a
        higher-is-better KPI). A lower-is-better KPI met with nothing (0
        overdue tasks against a plan of at most 2) is at 100%... and more:
        ``target / fact`` with a fact of 0 counts as the cap of the scheme
        that uses it, so this returns ``float('inf')``.
        """
        if fact is None or target is None:
            return None
        got, wanted = float(fact), float(target)
        if self.direction == "higher":
            return got / wanted if wanted else None
        if got == 0:
            return float("inf")
        return wanted / got

    def describe(self) -> dict[str, Any]:
        """The KPI as plain data (``crmkit kpi list``)."""
        return {
            "id": self.id,
            "title": self.title,
            "unit": self.unit,
            "direction": self.direction,
            "kind": self.kind,
            "ratio": self.is_ratio,
            "per": self.per if isinstance(self.per, str) else None,
            "source": self.source.name if self.source else "(python)",
            "description": self.description,
        }


def collect(found: Iterable[Any]) -> dict[str, KPI]:
    """The KPIs of every plugin by id; two with the same id are a :class:`PluginError`."""
    from .errors import PluginError

    kpis: dict[str, KPI] = {}
    for kpi in found:
        if not isinstance(kpi, KPI):
            raise PluginError(f"crmkit_kpis returned {kpi!r}, not a crmkit.KPI")
        if kpi.id in kpis:
            raise PluginError(f"two plugins register the KPI {kpi.id!r}")
        kpis[kpi.id] = kpi
    for kpi in kpis.values():
        if isinstance(kpi.per, str) and kpi.per not in kpis:
            raise PluginError(f"KPI {kpi.id!r} is per {kpi.per!r}, which no plugin registers")
    return kpis


def run(session: Session, kpis: Sequence[KPI], window: Window) -> dict[str, dict[int, Fact]]:
    """Every KPI of ``kpis`` for every user of the window: ``{kpi id: {user id: Fact}}``.

    One statement per source (plus one per Python fallback); a KPI ``per``
    another KPI brings that KPI's source along. Users with no rows get a
    zero fact.
    """
    from sqlalchemy import func, select

    registry = session.crm.kpis
    wanted: dict[str, KPI] = {k.id: k for k in kpis}
    for kpi in list(wanted.values()):
        if isinstance(kpi.per, str):
            wanted.setdefault(kpi.per, registry[kpi.per])
    numerators: dict[str, dict[int, Any]] = {}
    denominators: dict[str, dict[int, Any]] = {}
    by_source: dict[str, list[KPI]] = {}
    for kpi in wanted.values():
        if kpi.compute is not None:
            facts = kpi.compute(session, window)
            numerators[kpi.id] = {u: f.numerator for u, f in facts.items()}
            if kpi.per is not None and not isinstance(kpi.per, str):
                denominators[kpi.id] = {u: f.denominator for u, f in facts.items()}
            continue
        assert kpi.source is not None
        by_source.setdefault(kpi.source.name, []).append(kpi)
    for group in by_source.values():
        source = group[0].source
        assert source is not None
        r = source.rows(session, window).subquery("r")
        columns = [r.c.user_id]
        keys: list[tuple[str, str]] = []
        for kpi in group:
            assert kpi.value is not None
            columns.append(func.coalesce(kpi.value(r), 0).label(f"n_{len(keys)}"))
            keys.append(("n", kpi.id))
            if callable(kpi.per):
                columns.append(func.coalesce(kpi.per(r), 0).label(f"n_{len(keys)}"))
                keys.append(("d", kpi.id))
        stmt = select(*columns).group_by(r.c.user_id)
        for row in session.connection.execute(stmt):
            for i, (part, kpi_id) in enumerate(keys):
                target = numerators if part == "n" else denominators
                target.setdefault(kpi_id, {})[row.user_id] = row[i + 1]
    out: dict[str, dict[int, Fact]] = {}
    for kpi in kpis:
        nums = numerators.get(kpi.id, {})
        if isinstance(kpi.per, str):
            dens = numerators.get(kpi.per, {})
        elif kpi.per is not None:
            dens = denominators.get(kpi.id, {})
        else:
            dens = None
        out[kpi.id] = {
            uid: Fact(
                _number(nums.get(uid, 0)), None if dens is None else _number(dens.get(uid, 0))
            )
            for uid in window.user_ids
        }
    return out


def _number(value: Any) -> Any:
    if isinstance(value, Decimal | int):
        return value
    if isinstance(value, float):
        return value if not value.is_integer() else int(value)
    return Decimal(str(value)) if value is not None else 0


def total(facts: Iterable[Fact]) -> Fact:
    """A team's fact: the members' numerators and denominators added."""
    out: Fact | None = None
    for fact in facts:
        out = fact if out is None else out + fact
    return out or Fact()


# -- who a performance report shows -------------------------------------------------------
#: the roles a performance report (KPIs, plans, bonuses) lists by default
LISTED_ROLES = ("manager", "head")


def people(
    session: Session,
    *,
    team: str | None = None,
    user: str | None = None,
    roles: Sequence[str] = LISTED_ROLES,
) -> list[Any]:
    """The active users a performance report shows: ``team`` (nested teams too) or ``user``,
    then only those the reader may ``read`` as the ``performance`` resource.

    Rows with ``id``, ``login``, ``name``, ``team_id`` and ``role``, by login.
    """
    from sqlalchemy import select

    users = session.table("users")
    stmt = select(users.c.id, users.c.login, users.c.name, users.c.team_id, users.c.role).where(
        users.c.active.is_(True), users.c.role.in_(list(roles))
    )
    if user is not None:
        stmt = stmt.where(users.c.id == session.users.get(user, field="user").id)
    if team is not None:
        members = [u.id for u in session.users.list(team=team)]
        stmt = stmt.where(users.c.id.in_(members))
    stmt = session.access.filter(stmt, "read", "performance", users)
    return list(session.connection.execute(stmt.order_by(users.c.login)))


# -- the rule of a complete record (attribution) ------------------------------------
def record_problems(session: Session, deals: Any) -> list[tuple[str, Any]]:
    """``(reason, SQL condition true when the deal's record has that problem)`` for won deals.

    ``deals`` is the deals table or an alias of it in the caller's query.
    """
    from sqlalchemy import and_, exists, literal, select

    from crmkit.core.pipeline import WON

    changes = session.table("stage_changes")
    interactions = session.table("interactions")
    settings = session.crm.config.plugin("kpis")
    kinds = [str(k) for k in settings.get("record_interactions", ())]
    of_deal = and_(changes.c.entity == "deal", changes.c.entity_id == deals.c.id)
    problems: list[tuple[str, Any]] = [
        (
            "its moves were imported, not made in crmkit",
            exists(select(literal(1)).where(of_deal, changes.c.cause == "import")),
        )
    ]
    firsts = [
        and_(deals.c.pipeline == flow.name, changes.c.from_stage == flow.first.name)
        for flow in session.crm.pipelines.values()
        if flow.entity == "deal" and len(flow.stages) > 1
    ]
    if firsts:
        from sqlalchemy import or_

        problems.append(
            (
                "won straight from the first stage",
                exists(select(literal(1)).where(of_deal, changes.c.to_stage == WON, or_(*firsts))),
            )
        )
    on_deal = interactions.c.deal_id == deals.c.id
    if kinds:
        for kind in kinds:
            problems.append(
                (
                    f"no {kind} logged on the deal",
                    ~exists(select(literal(1)).where(on_deal, interactions.c.kind == kind)),
                )
            )
    else:
        problems.append(
            ("no interaction logged on the deal", ~exists(select(literal(1)).where(on_deal)))
        )
    problems.append(("its amount is zero", deals.c.amount <= 0))
    return problems


def complete(session: Session, deals: Any) -> Any:
    """SQL: the deal's record is complete (none of :func:`record_problems`)."""
    from sqlalchemy import not_, or_

    return not_(or_(*(cond for _, cond in record_problems(session, deals))))
