"""Motivation schemes: a contract plugins fill (``crmkit_motivation_schemes``).

A :class:`Scheme` turns a person's :class:`Standing` for a period (their KPI
facts, their plans, their overdue tasks, their won deals that do not count
for them) into a :class:`Bonus`: a base, one :class:`Line` per KPI it pays
for, the penalties, and what it all adds up to. The deployment picks the
scheme by name (``[plugin.motivation] scheme``, default ``standard``); the
``bonus`` report (built-in plugin :mod:`crmkit.plugins.motivation`) builds
every person's standing with a few statements for all of them at once and
hands it to the scheme. See ``docs/motivation.rst``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from attrs import field, frozen

if TYPE_CHECKING:  # pragma: no cover
    from .app import CRM
    from .kpis import Fact
    from .reports import Period
    from .store import Session

CENT = Decimal("0.01")


def money(value: Any) -> Decimal:
    """``value`` as money: a Decimal rounded to the cent (half up)."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    return number.quantize(CENT, rounding=ROUND_HALF_UP)


@frozen
class Person:
    """Whose standing it is: the user's id, login, name, role and team (its name, or None)."""

    id: int
    login: str
    name: str
    role: str
    team: str | None = None
    team_id: int | None = None


@frozen
class OverdueTask:
    """A task counted by the ``overdue_tasks`` KPI: open past its due time, or done late.

    ``done_at`` is None for a task still open at the moment the period is judged at.
    """

    id: int
    title: str
    due_at: dt.datetime
    done_at: dt.datetime | None = None


@frozen
class UnattributedDeal:
    """A deal the person won in the period whose record is incomplete, and why."""

    id: int
    title: str
    amount: Decimal
    closed_at: dt.datetime | None
    reasons: tuple[str, ...] = ()


@frozen
class Standing:
    """Everything known about one person for the period, as a scheme sees it.

    ``facts`` are the person's KPI facts by KPI id (every registered KPI, from
    one :func:`crmkit.core.kpis.run` for everyone in the report; with
    ``forecast`` the additive ones projected to the period's end);
    ``plans`` the person's own plan targets of the period by KPI id;
    ``overdue`` the tasks the ``overdue_tasks`` KPI counts; ``unattributed``
    the deals won in the period that do not count for the person (the
    complete-record rule); ``settings`` the ``[plugin.motivation]`` table.
    """

    user: Person
    period: Period
    facts: dict[str, Fact]
    plans: dict[str, Decimal] = field(factory=dict)
    overdue: tuple[OverdueTask, ...] = ()
    unattributed: tuple[UnattributedDeal, ...] = ()
    settings: dict[str, Any] = field(factory=dict)
    forecast: bool = False
    #: what was projected (``forecast``), for the bonus's notes
    projected: tuple[str, ...] = ()


@frozen
class Line:
    """One KPI's part of a bonus: the figures it comes from and what it contributes."""

    kpi: str
    title: str
    kind: str
    fact: Any
    plan: Decimal | None
    attainment: float | None
    weight: float
    factor: float
    contribution: Decimal
    note: str = ""


@frozen
class Bonus:
    """A person's bonus for a period, with everything that makes it up.

    ``total = gross - penalty``; ``gross`` is the sum of the lines'
    contributions; ``penalties`` are the overdue tasks that cost
    ``penalty``; ``unattributed`` the won deals that did not count.
    """

    base: Decimal
    lines: tuple[Line, ...] = ()
    penalties: tuple[OverdueTask, ...] = ()
    gross: Decimal = Decimal("0.00")
    penalty: Decimal = Decimal("0.00")
    total: Decimal = Decimal("0.00")
    unattributed: tuple[UnattributedDeal, ...] = ()
    notes: tuple[str, ...] = ()


#: ``compute(session, standing) -> Bonus``
Compute = Callable[["Session", Standing], Bonus]
#: ``check(settings, crm)``: raise :class:`~crmkit.ConfigError` on bad settings
Check = Callable[[dict[str, Any], "CRM"], None]


@frozen
class Scheme:
    """A motivation scheme a plugin registers: a name, a title and ``compute(session, standing)``.

    ``check(settings, crm)``, when given, is called once before any bonus is
    computed with the ``[plugin.motivation]`` table; it raises
    :class:`~crmkit.ConfigError` naming the key at fault.
    """

    name: str
    title: str
    compute: Compute = field(eq=False, repr=False)
    description: str = ""
    check: Check | None = field(default=None, eq=False, repr=False)


def collect(found: Iterable[Any]) -> dict[str, Scheme]:
    """The schemes of every plugin by name; two with one name are a :class:`PluginError`."""
    from .errors import PluginError

    schemes: dict[str, Scheme] = {}
    for scheme in found:
        if not isinstance(scheme, Scheme):
            raise PluginError(
                f"crmkit_motivation_schemes returned {scheme!r}, not a crmkit.Scheme",
                field="motivation_schemes",
            )
        if scheme.name in schemes:
            raise PluginError(
                f"two plugins register the motivation scheme {scheme.name!r}",
                field="motivation_schemes",
            )
        schemes[scheme.name] = scheme
    return schemes


__all__ = [
    "CENT",
    "Bonus",
    "Line",
    "OverdueTask",
    "Person",
    "Scheme",
    "Standing",
    "UnattributedDeal",
    "collect",
    "money",
]
