"""Reports: a contract that plugins fill (``crmkit_reports``) and one way to run them.

A :class:`Report` is a name, a title, the filters it understands and a
``run(session, query)`` function that computes a :class:`ReportResult` (columns,
rows, a summary, notes) in SQL from the stored records. The core gives every
report the same front ends: :meth:`crmkit.Session.report` in Python and
``crmkit report NAME [--period P] ... [--format table|json|csv]`` on the command
line, with each report's own options declared as JSON Schema properties, so
they are validated (and documented) like everything else in crmkit.

Periods (:func:`parse_period`) are written ``2026-11``, ``2026-Q3``, ``2026``,
``2026-01-01..2026-03-31``, ``last-30-days`` or ``last-12-months``, and are
read in the deployment's time zone.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import field, frozen

from .errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from .store import Session

#: the filters a report may accept, each a ``--NAME`` option of ``crmkit report``
FILTERS: dict[str, str] = {
    "period": "The period: 2026-11, 2026-Q3, 2026, 2026-01-01..2026-03-31, last-30-days.",
    "pipeline": "Only deals of this pipeline.",
    "team": "Only this team (and the teams nested in it).",
    "user": "Only this user (login).",
    "segment": "Only clients of this segment.",
}

#: column types: how a table shows a value (JSON and CSV keep it as computed)
COLUMN_TYPES = ("text", "integer", "number", "money", "percent", "date", "datetime")


@frozen
class Period:
    """A span of days, ``start`` included and ``end`` excluded, in the deployment's zone."""

    start: dt.date
    end: dt.date
    label: str

    def bounds(self, tz: Any) -> tuple[dt.datetime, dt.datetime]:
        """The period as two aware datetimes (UTC): ``start <= t < end``."""
        return (
            dt.datetime.combine(self.start, dt.time(), tz).astimezone(dt.UTC),
            dt.datetime.combine(self.end, dt.time(), tz).astimezone(dt.UTC),
        )

    @property
    def days(self) -> int:
        """How many days the period spans."""
        return (self.end - self.start).days

    def months(self) -> list[dt.date]:
        """The first day of every calendar month the period touches, in order."""
        first = self.start.replace(day=1)
        out = []
        while first < self.end:
            out.append(first)
            first = _add_months(first, 1)
        return out


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})-[Qq]([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")
_LAST = re.compile(r"^last-(\d{1,4})-(days|months)$")


def parse_period(text: str, *, today: dt.date | None = None, field: str = "period") -> Period:
    """Read a period; raises :class:`ValidationError` naming the accepted forms.

    ``last-30-days`` is the 30 days up to and including ``today``;
    ``last-12-months`` the 12 calendar months up to and including the current one.
    """
    raw = (text or "").strip()
    today = today or dt.date.today()
    try:
        if m := _MONTH.match(raw):
            start = dt.date(int(m[1]), int(m[2]), 1)
            return Period(start, _add_months(start, 1), raw)
        if m := _QUARTER.match(raw):
            start = dt.date(int(m[1]), 3 * int(m[2]) - 2, 1)
            return Period(start, _add_months(start, 3), raw.upper())
        if m := _YEAR.match(raw):
            return Period(dt.date(int(m[1]), 1, 1), dt.date(int(m[1]) + 1, 1, 1), raw)
        if m := _RANGE.match(raw):
            start, last = dt.date.fromisoformat(m[1]), dt.date.fromisoformat(m[2])
            if last < start:
                raise ValidationError(f"{raw!r} ends before it starts", field=field)
            return Period(start, last + dt.timedelta(days=1), raw)
        if m := _LAST.match(raw):
            n = int(m[1])
            if n < 1:
                raise ValidationError(f"{raw!r} spans no time", field=field)
            end = today + dt.timedelta(days=1)
            if m[2] == "days":
                return Period(end - dt.timedelta(days=n), end, raw)
            month = today.replace(day=1)
            return Period(_add_months(month, 1 - n), end, raw)
    except ValueError as exc:  # a month 13, a February 30th
        raise ValidationError(f"{raw!r} is not a date: {exc}", field=field) from None
    raise ValidationError(
        f"{raw!r} is not a period (use 2026-11, 2026-Q3, 2026, 2026-01-01..2026-03-31, "
        "last-30-days or last-12-months)",
        field=field,
    )


def _add_months(day: dt.date, n: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + n
    return dt.date(index // 12, index % 12 + 1, 1)


@frozen
class Column:
    """A column of a report: its key in each row, a title, and how to show it."""

    name: str
    title: str = ""
    type: str = "text"

    @property
    def heading(self) -> str:
        """The title, or the name when there is none."""
        return self.title or self.name


@frozen
class ReportQuery:
    """What a report is asked for: the common filters and the report's own options."""

    period: Period | None = None
    pipeline: str | None = None
    team: str | None = None
    user: str | None = None
    segment: str | None = None
    options: dict[str, Any] = field(factory=dict)


@frozen
class ReportResult:
    """A computed report: rows under columns, a summary of totals, and notes for people."""

    report: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(factory=dict)
    notes: list[str] = field(factory=list)
    period: Period | None = None

    def column(self, name: str) -> list[Any]:
        """Every row's value of column ``name``."""
        return [row.get(name) for row in self.rows]


#: ``run(session, query) -> ReportResult``
Runner = Callable[["Session", ReportQuery], ReportResult]
#: ``chart(result, path)``: draw a computed report into ``path`` (``.png`` or ``.svg``)
Charter = Callable[[ReportResult, "Path"], None]
#: the files a chart may be written to, by suffix
CHART_SUFFIXES = (".png", ".svg")


@frozen
class Report:
    """A report a plugin registers (``crmkit_reports``).

    ``filters`` names which of :data:`FILTERS` it understands (the CLI offers
    only those); ``options`` are its own parameters, as JSON Schema
    properties (``{"a_share": {"type": "number", "default": 80, "description":
    ...}}``), validated before ``run`` is called and offered as
    ``--a-share`` on the command line. ``default_period`` applies when no
    period is given.
    """

    name: str
    title: str
    run: Runner = field(eq=False, repr=False)
    description: str = ""
    filters: tuple[str, ...] = ("period",)
    options: dict[str, Any] = field(factory=dict)
    default_period: str | None = None
    plugin: str | None = field(default=None, eq=False)
    #: draws the result (:meth:`draw`; ``crmkit report NAME --chart FILE``), or None
    chart: Charter | None = field(default=None, eq=False, repr=False)

    def draw(self, result: ReportResult, path: str | os.PathLike[str]) -> Path:
        """Draw ``result`` into ``path``, a ``.png`` or ``.svg`` file; returns the path.

        Raises :class:`ValidationError` when the report draws no chart or the
        suffix is not one of :data:`CHART_SUFFIXES`, and :class:`CrmError`
        when the file cannot be written. The file is written whole or not at
        all (a temporary file next to it, renamed).
        """
        from .errors import CrmError

        target = Path(path)
        if self.chart is None:
            raise ValidationError(f"report {self.name!r} draws no chart", field="chart")
        if target.suffix.lower() not in CHART_SUFFIXES:
            raise ValidationError(
                f"{target.name!r}: a chart is written as {' or '.join(CHART_SUFFIXES)}",
                field="chart",
            )
        if not target.parent.is_dir():
            raise ValidationError(f"the folder {target.parent} does not exist", field="chart")
        partial = target.with_name(f".{target.name}.partial{target.suffix}")
        try:
            self.chart(result, partial)
            partial.replace(target)
        except OSError as exc:
            raise CrmError(f"cannot write {target}: {exc.strerror}", field="chart") from None
        finally:
            partial.unlink(missing_ok=True)
        return target

    def query(self, session: Session, **given: Any) -> ReportQuery:
        """Check the filters and options given by name and build the query."""
        from .validation import schema_problems

        filters = {k: given.pop(k) for k in list(given) if k in FILTERS}
        for name, value in filters.items():
            if value is not None and name not in self.filters:
                accepted = ", ".join(self.filters) or "none"
                raise ValidationError(
                    f"report {self.name!r} has no {name} filter (it accepts: {accepted})",
                    field=name,
                )
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ValidationError(
                f"report {self.name!r} has no option {unknown[0]!r} (options: {known})",
                field=unknown[0],
            )
        options = {
            name: spec["default"]
            for name, spec in self.options.items()
            if "default" in spec and given.get(name) is None
        }
        options.update({k: v for k, v in given.items() if v is not None})
        schema = {"type": "object", "properties": self.options}
        problems = schema_problems(schema, options, explain=True)
        if problems:
            raise ValidationError.from_problems(problems)
        period = filters.get("period") or self.default_period
        parsed = None
        if period is not None:
            parsed = (
                period
                if isinstance(period, Period)
                else parse_period(period, today=dt.datetime.now(session.crm.tz).date())
            )
        if filters.get("segment") is not None:
            session.crm.segment(filters["segment"])
        if filters.get("pipeline") is not None:
            session.crm.pipeline(filters["pipeline"])
        if filters.get("user") is not None:
            session.users.get(filters["user"], field="user")
        if filters.get("team") is not None:
            session.teams.get(filters["team"], field="team")
        return ReportQuery(
            period=parsed,
            pipeline=filters.get("pipeline"),
            team=filters.get("team"),
            user=filters.get("user"),
            segment=filters.get("segment"),
            options=options,
        )


#: names a report option may not have: the command line's own options of ``crmkit report NAME``
RESERVED_OPTIONS = frozenset({"format", "fmt", "out", "help"})


def merge_reports(found: Mapping[str, Report], items: list[tuple[Any, str | None]]) -> None:
    """Add plugin reports to ``found``; a name registered twice is a plugin error.

    So is a report that breaks the contract: a filter that is not one of
    :data:`FILTERS`, an option named like a filter or like an option of
    ``crmkit report NAME`` (:data:`RESERVED_OPTIONS`), options that are not
    JSON Schema properties, or a ``default_period`` that is not a period.
    """
    from .errors import PluginError

    for report, plugin in items:
        if not isinstance(report, Report):
            raise PluginError(
                f"{plugin}: crmkit_reports must return crmkit.Report objects, not {report!r}",
                field="reports",
            )
        problem = _contract_problem(report)
        if problem:
            raise PluginError(f"{plugin}: report {report.name!r}: {problem}", field="reports")
        if report.name in found:
            raise PluginError(f"report {report.name!r} is registered twice", field="reports")
        found[report.name] = report  # type: ignore[index]


def _contract_problem(report: Report) -> str | None:
    from .validation import check_schema

    unknown = [name for name in report.filters if name not in FILTERS]
    if unknown:
        return f"unknown filter {unknown[0]!r} (filters: {', '.join(FILTERS)})"
    if not isinstance(report.options, dict):
        return "options must be a dict of JSON Schema properties"
    for name, spec in report.options.items():
        if name in FILTERS or name in RESERVED_OPTIONS:
            return f"option {name!r} has the name of a filter or of a command-line option"
        if not isinstance(spec, dict):
            return f"option {name!r} must be a JSON Schema (a dict), not {spec!r}"
    try:
        check_schema({"type": "object", "properties": report.options}, field="options")
        if report.default_period is not None:
            parse_period(report.default_period, field="default_period")
    except (ValidationError, TypeError, ValueError) as exc:
        return str(exc)
    return None
