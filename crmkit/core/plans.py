"""Plans: a KPI's target for a user or a team over a period (``s.plans``, ``crmkit plan``).

A plan names a KPI (an id of ``crm.kpis``), a period (:func:`~.reports.parse_period`:
``2026-11``, ``2026-Q4`` ...) and whose plan it is: one user's, or one team's.
There is one plan per KPI, period and user or team; setting it again replaces
its target. A team plan may be *split* among the team's active members
(equal shares, or by weights), to the cent: the members' plans add up exactly
to the team's target and remember the plan they came from (``split_from``).

Who may read and write plans is decided by the access policies (the resource
``plan``): by default admins everything, heads the plans of their team and of
the teams nested in it, everyone else their own plans and their team's plan.
"""

from __future__ import annotations

import builtins
import datetime as dt
import decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from attrs import frozen
from sqlalchemy import and_, delete, insert, select, update

from .errors import NotFound, Problem, ValidationError
from .schema import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from .reports import Period
    from .store import Session

#: whose plan it is
SCOPES = ("user", "team")
_CENT = decimal.Decimal("0.01")
_MAX = decimal.Decimal("1e14")


@frozen
class Plan:
    """A KPI's target over a period (``start`` included, ``end`` excluded) for a user or a team.

    ``user`` is the planned user's login (None for a team plan); ``team`` the
    team's name: the planned team, or the planned user's team when the plan
    was last set (None for a user in no team). ``split_from`` is the id of the
    team plan a member's plan was split from.
    """

    id: int
    kpi: str
    period: str
    start: dt.date
    end: dt.date
    scope: str
    target: decimal.Decimal
    user: str | None = None
    team: str | None = None
    user_id: int | None = None
    team_id: int | None = None
    split_from: int | None = None
    note: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    @property
    def who(self) -> str:
        """The planned user's login, or the team's name."""
        return (self.user if self.scope == "user" else self.team) or "?"


def parse_target(value: Any, *, field: str = "target") -> decimal.Decimal:
    """A target: a finite number of zero or more with at most two decimals."""
    if isinstance(value, bool) or value is None:
        raise ValidationError(f"{value!r} is not a number", field=field)
    try:
        text = str(value).strip().replace(" ", "").replace(",", ".")
        number = decimal.Decimal(text)
    except (decimal.InvalidOperation, ValueError):
        raise ValidationError(f"{value!r} is not a number", field=field) from None
    if not number.is_finite():
        raise ValidationError(f"{value!r} is not a finite number", field=field)
    if number < 0:
        raise ValidationError("must be zero or more", field=field)
    if number != number.quantize(_CENT):
        raise ValidationError("has more than two decimals", field=field)
    if number >= _MAX:
        raise ValidationError("is too large", field=field)
    return number.quantize(_CENT)


def split_amounts(total: decimal.Decimal, weights: builtins.list[Any]) -> builtins.list[Any]:
    """``total`` divided in proportion to ``weights``, in cents that add up exactly to it.

    Largest remainder: each share is first rounded down to the cent, and the
    cents left over go one each to the shares that lost the most in rounding
    (the earlier one on a tie).
    """
    cents = int((total / _CENT).to_integral_value())
    parts = [Fraction(str(w)) for w in weights]
    whole = sum(parts, Fraction(0))
    exact = [cents * p / whole for p in parts]
    floors = [int(e) for e in exact]  # exact >= 0: int() rounds down
    left = cents - sum(floors)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return [(decimal.Decimal(c) * _CENT).quantize(_CENT) for c in floors]


class Plans:
    """The plans of a deployment: ``s.plans``."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.t = session.tables["plans"]

    # -- writing ----------------------------------------------------------------------
    def set(
        self,
        kpi: str,
        *,
        period: str | Period,
        target: Any,
        user: str | int | None = None,
        team: str | int | None = None,
        note: str | None = None,
    ) -> Plan:
        """Set the plan of ``kpi`` over ``period`` for ``user`` or ``team``: its target.

        The same KPI, period and user or team again replaces the target (and
        the note, when one is given). Raises :class:`ValidationError` naming
        every bad field: an unknown KPI (the known ids listed), a bad period,
        a target that is not a number or is negative, both or neither of user
        and team, an unknown team or user (or an inactive one); and
        :class:`PermissionDenied` when the access policies do not let the
        acting user create (or update) this plan.
        """
        problems: list[Problem] = []
        kpi_id = self._kpi(kpi, problems)
        span = self._period(period, problems)
        amount = self._target(target, problems)
        who = self._scope(user, team, problems)
        if problems:
            raise ValidationError.from_problems(problems)
        assert kpi_id is not None and span is not None and amount is not None and who is not None
        scope, scope_id, user_id, team_id = who
        plan_id = self._write(
            kpi_id, span, scope, scope_id, user_id, team_id, amount, note=note, split_from=None
        )
        return self.get(plan_id)

    def split(
        self,
        kpi: str,
        *,
        period: str | Period,
        team: str | int,
        weights: dict[str, Any] | None = None,
    ) -> builtins.list[Plan]:
        """Divide the team plan of ``kpi`` over ``period`` among the team's active members.

        The members are the active users of ``team`` and of the teams nested
        in it; without ``weights`` each gets an equal share, with ``weights``
        (``{login: number}``) only the members named, in proportion to their
        numbers. Shares are rounded to the cent so that they add up exactly
        to the team's target (:func:`split_amounts`). Each share becomes the
        member's plan (replacing one they had) with ``split_from`` the team
        plan; the plans of an earlier split of the same team plan that get no
        share now are deleted. Returns the members' plans by login.
        """
        problems: list[Problem] = []
        kpi_id = self._kpi(kpi, problems)
        span = self._period(period, problems)
        found = None
        try:
            found = self.s.teams.get(team, field="team")
        except NotFound as exc:
            problems.append(Problem("team", exc.message))
        members: builtins.list[Any] = []
        if found is not None:
            members = self.s.users.list(team=found.id, active=True)
            if not members:
                problems.append(Problem("team", f"team {found.name!r} has no active members"))
        shares: builtins.list[tuple[Any, Any]] = []
        if weights is not None and found is not None:
            shares = self._weights(weights, members, found.name, problems)
        elif members:
            shares = [(m, 1) for m in members]
        if problems:
            raise ValidationError.from_problems(problems)
        assert kpi_id is not None and span is not None and found is not None
        t = self.t
        team_row = self.s.connection.execute(
            select(t).where(self._key(kpi_id, span, "team", found.id))
        ).first()
        if team_row is None or not self._readable(team_row.id):
            raise NotFound(
                f"team {found.name!r} has no plan of {kpi_id} for {span.label}: "
                "set it first ('crmkit plan set --team ...')",
                field="plan",
            )
        amounts = split_amounts(decimal.Decimal(team_row.target), [w for _, w in shares])
        kept = {m.id for m, _ in shares}
        earlier = self.s.connection.execute(
            select(t.c.id, t.c.user_id, t.c.team_id, t.c.scope, t.c.kpi).where(
                t.c.split_from == team_row.id
            )
        ).all()
        for old in earlier:
            if old.user_id not in kept:
                self._delete_row(old)
        ids = []
        for (member, _), amount in zip(shares, amounts, strict=True):
            ids.append(
                self._write(
                    kpi_id,
                    span,
                    "user",
                    member.id,
                    member.id,
                    member.team_id,
                    amount,
                    note=None,
                    split_from=team_row.id,
                )
            )
        self.s.record(
            "plan",
            team_row.id,
            "split",
            {
                "shares": {m.login: str(a) for (m, _), a in zip(shares, amounts, strict=True)},
                "weights": None if weights is None else {m.login: str(w) for m, w in shares},
            },
        )
        return sorted((self.get(i) for i in ids), key=lambda p: p.user or "")

    def delete(self, plan_id: int) -> Plan:
        """Delete the plan ``plan_id``; returns it. Plans split from it stay (unlinked)."""
        plan = self.get(plan_id)
        row = self.s.connection.execute(select(self.t).where(self.t.c.id == plan.id)).one()
        self._delete_row(row)
        return plan

    # -- reading ----------------------------------------------------------------------
    def get(self, plan_id: int) -> Plan:
        """The plan with this id; :class:`NotFound` also when the user may not read it."""
        query = self._select().where(self.t.c.id == plan_id)
        row = self.s.connection.execute(self.s.access.filter(query, "read", "plan", self.t)).first()
        if row is None:
            raise NotFound(f"no plan with id {plan_id}", field="plan")
        return _plan(row)

    def list(
        self,
        *,
        period: str | Period | None = None,
        kpi: str | None = None,
        user: str | int | None = None,
        team: str | int | None = None,
        exact: bool = False,
    ) -> builtins.list[Plan]:
        """The plans the user may read, by period, KPI, team plans first, then name.

        ``period`` keeps the plans whose period overlaps it (``exact=True``:
        the plans of that very period); ``user`` the plans of that user;
        ``team`` the plans of that team and of the teams nested in it, team
        plans and their members' plans alike.
        """
        from .reports import Period as PeriodType
        from .reports import parse_period

        t = self.t
        query = self._select()
        if period is not None:
            today = dt.datetime.now(self.s.crm.tz).date()
            span = period if isinstance(period, PeriodType) else parse_period(period, today=today)
            if exact:
                query = query.where(t.c.period_start == span.start, t.c.period_end == span.end)
            else:
                query = query.where(t.c.period_start < span.end, t.c.period_end > span.start)
        if kpi is not None:
            query = query.where(t.c.kpi == kpi)
        if user is not None:
            query = query.where(t.c.user_id == self.s.users.get(user, field="user").id)
        if team is not None:
            query = query.where(t.c.team_id.in_(self.s.teams.subtree_ids(team)))
        query = self.s.access.filter(query, "read", "plan", t)
        return [_plan(r) for r in self.s.connection.execute(query)]

    # -- helpers ----------------------------------------------------------------------
    def _select(self) -> Any:
        t = self.t
        users = self.s.tables["users"]
        teams = self.s.tables["teams"]
        return (
            select(t, users.c.login.label("user_login"), teams.c.name.label("team_name"))
            .select_from(
                t.outerjoin(users, users.c.id == t.c.user_id).outerjoin(
                    teams, teams.c.id == t.c.team_id
                )
            )
            .order_by(
                t.c.period_start,
                t.c.period_end,
                t.c.kpi,
                t.c.scope,  # "team" before "user"
                teams.c.name,
                users.c.login,
            )
        )

    def _readable(self, plan_id: int) -> bool:
        query = select(self.t.c.id).where(self.t.c.id == plan_id)
        found = self.s.connection.execute(self.s.access.filter(query, "read", "plan", self.t))
        return found.first() is not None

    def _key(self, kpi: str, span: Period, scope: str, scope_id: int) -> Any:
        t = self.t
        return and_(
            t.c.kpi == kpi,
            t.c.period_start == span.start,
            t.c.period_end == span.end,
            t.c.scope == scope,
            t.c.scope_id == scope_id,
        )

    def _write(
        self,
        kpi: str,
        span: Period,
        scope: str,
        scope_id: int,
        user_id: int | None,
        team_id: int | None,
        target: decimal.Decimal,
        *,
        note: str | None,
        split_from: int | None,
    ) -> int:
        t = self.t
        conn = self.s.connection
        found = conn.execute(select(t).where(self._key(kpi, span, scope, scope_id))).first()
        view = {"kpi": kpi, "scope": scope, "user_id": user_id, "team_id": team_id}
        label = f"the {scope} plan of {kpi} for {span.label}"
        now = utcnow()
        if found is None:
            self.s.access.require("create", "plan", {"id": None, **view}, what=label)
            row = {
                "kpi": kpi,
                "period": span.label,
                "period_start": span.start,
                "period_end": span.end,
                "scope": scope,
                "scope_id": scope_id,
                "user_id": user_id,
                "team_id": team_id,
                "target": target,
                "split_from": split_from,
                "note": note,
                "created_by": self.s.user.id,
                "created_at": now,
                "updated_at": now,
            }
            plan_id = int(conn.execute(insert(t).values(row).returning(t.c.id)).scalar_one())
            self.s.record("plan", plan_id, "created", _jsonable(row))
            return plan_id
        old_view = {
            "id": found.id,
            "kpi": found.kpi,
            "scope": found.scope,
            "user_id": found.user_id,
            "team_id": found.team_id,
        }
        self.s.access.require("update", "plan", old_view, what=f"plan #{found.id}")
        self.s.access.require("update", "plan", {"id": found.id, **view}, what=f"plan #{found.id}")
        changes = {
            "period": span.label,
            "target": target,
            "user_id": user_id,
            "team_id": team_id,
            "split_from": split_from,
            "note": note if note is not None else found.note,
            "updated_at": now,
        }
        conn.execute(update(t).where(t.c.id == found.id).values(changes))
        detail: dict[str, Any] = {
            "target": {
                "old": str(decimal.Decimal(found.target).quantize(_CENT)),
                "new": str(target),
            }
        }
        for key in ("team_id", "split_from", "note"):
            if changes[key] != getattr(found, key):
                detail[key] = {"old": getattr(found, key), "new": changes[key]}
        self.s.record("plan", found.id, "updated", detail)
        return int(found.id)

    def _delete_row(self, row: Any) -> None:
        view = {
            "id": row.id,
            "kpi": row.kpi,
            "scope": row.scope,
            "user_id": row.user_id,
            "team_id": row.team_id,
        }
        self.s.access.require("delete", "plan", view, what=f"plan #{row.id}")
        self.s.connection.execute(delete(self.t).where(self.t.c.id == row.id))
        self.s.record("plan", row.id, "deleted", {"kpi": row.kpi, "scope": row.scope})

    def _kpi(self, kpi: Any, problems: builtins.list[Problem]) -> str | None:
        try:
            return self.s.crm.kpi(str(kpi)).id
        except NotFound as exc:
            problems.append(Problem("kpi", exc.message))
            return None

    def _period(self, period: Any, problems: builtins.list[Problem]) -> Period | None:
        from .reports import Period as PeriodType
        from .reports import parse_period

        if isinstance(period, PeriodType):
            return period
        try:
            today = dt.datetime.now(self.s.crm.tz).date()
            return parse_period(str(period or ""), today=today, field="period")
        except ValidationError as exc:
            problems.append(Problem("period", exc.message))
            return None

    def _target(self, target: Any, problems: builtins.list[Problem]) -> decimal.Decimal | None:
        try:
            return parse_target(target)
        except ValidationError as exc:
            problems.append(Problem("target", exc.message))
            return None

    def _scope(
        self, user: Any, team: Any, problems: builtins.list[Problem]
    ) -> tuple[str, int, int | None, int | None] | None:
        if (user is None) == (team is None):
            problems.append(
                Problem(
                    "user", "give a user or a team, not both" if user else "give a user or a team"
                )
            )
            return None
        try:
            if user is not None:
                found = self.s.users.get(user, field="user")
                if not found.active:
                    problems.append(Problem("user", f"user {found.login!r} is not active"))
                    return None
                return "user", found.id, found.id, found.team_id
            squad = self.s.teams.get(team, field="team")
            return "team", squad.id, None, squad.id
        except NotFound as exc:
            problems.append(Problem(exc.field or "user", exc.message))
            return None

    def _weights(
        self,
        weights: dict[str, Any],
        members: builtins.list[Any],
        team: str,
        problems: builtins.list[Problem],
    ) -> builtins.list[tuple[Any, Any]]:
        by_login = {m.login: m for m in members}
        out: builtins.list[tuple[Any, Any]] = []
        bad = False
        for login, raw in weights.items():
            where = f"weights.{login}"
            member = by_login.get(str(login))
            if member is None:
                problems.append(Problem(where, f"{login!r} is not an active member of {team!r}"))
                bad = True
                continue
            try:
                weight = parse_target(raw, field=where)
            except ValidationError as exc:
                problems.append(Problem(where, exc.message))
                bad = True
                continue
            if weight > 0:
                out.append((member, weight))
        if not bad and not out:
            problems.append(Problem("weights", "give at least one weight above zero"))
        out.sort(key=lambda pair: pair[0].login)
        return out


def _plan(row: Any) -> Plan:
    return Plan(
        id=row.id,
        kpi=row.kpi,
        period=row.period,
        start=row.period_start,
        end=row.period_end,
        scope=row.scope,
        target=decimal.Decimal(row.target).quantize(_CENT),
        user=row.user_login,
        team=row.team_name,
        user_id=row.user_id,
        team_id=row.team_id,
        split_from=row.split_from,
        note=row.note,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v.isoformat() if hasattr(v, "isoformat") else str(v) if k == "target" else v)
        for k, v in row.items()
    }


__all__ = ["SCOPES", "Plan", "Plans", "parse_target", "split_amounts"]


# -- plan versus fact: the figures of the plan and bonus reports ----------------------
def moment(session: Session, query: Any) -> tuple[dt.datetime, dt.date]:
    """The moment the report looks from and its day: now, or the end of the ``--as-of`` day."""
    tz = session.crm.tz
    given = query.options.get("as_of")
    if given is None:
        now = dt.datetime.now(dt.UTC)
        return now, now.astimezone(tz).date()
    try:
        day = dt.date.fromisoformat(given)
    except ValueError as exc:
        raise ValidationError(f"{given!r} is not a date: {exc}", field="as_of") from None
    end_of_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz)
    return end_of_day.astimezone(dt.UTC), day


def figures(
    kpi: Any, target: float, value: Any, elapsed: float, days: float, started: bool
) -> dict[str, Any]:
    """Attainment, projection, on track and gap per day of one plan (see ``docs/plans.rst``).

    ``elapsed`` and ``days`` are in days (``elapsed`` is 0 before the period
    starts and ``days`` once it is over); ``value`` is the KPI's fact (None
    when a ratio has no denominator).
    """
    fact = None if value is None else float(value)
    attainment = kpi.attainment(fact, target)
    if attainment is not None and attainment == float("inf"):
        attainment = None  # a lower-is-better KPI met with nothing: shown empty, on track
    remaining = max(days - elapsed, 0.0)
    projection: float | None = None
    if started and fact is not None:
        projection = fact if kpi.is_ratio or not elapsed else fact / elapsed * days
    on_track = None if projection is None else bool(kpi.better(projection, target))
    gap: float | None = None
    if not kpi.is_ratio and remaining > 0:
        gap = max((target - (fact or 0.0)) / remaining, 0.0)
    return {
        "fact": fact,
        "attainment": None if attainment is None else round(attainment, 4),
        "projection": None if projection is None else round(projection, 2),
        "on_track": on_track,
        "gap_per_day": None if gap is None else round(gap, 2),
    }
