"""Reports: periods, the report contract, ``Session.report`` and ``crmkit report NAME``.

The report under test is the example plugin that ``docs/reports.rst`` quotes,
``tests/report_example.py``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import shlex
import sys
import textwrap
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

import crmkit
from crmkit import (
    Column,
    NotFound,
    Period,
    PluginError,
    Report,
    ReportQuery,
    ReportResult,
    ValidationError,
    hookimpl,
    parse_period,
)
from crmkit.core.reports import FILTERS

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import report_example  # noqa: E402  (lives next to this file, added to sys.path above)

TODAY = dt.date(2026, 11, 22)
UTC = dt.UTC


# -- periods ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "start", "end", "label"),
    [
        ("2026-11", dt.date(2026, 11, 1), dt.date(2026, 12, 1), "2026-11"),
        ("2026-12", dt.date(2026, 12, 1), dt.date(2027, 1, 1), "2026-12"),
        ("2026-Q3", dt.date(2026, 7, 1), dt.date(2026, 10, 1), "2026-Q3"),
        ("2026-q4", dt.date(2026, 10, 1), dt.date(2027, 1, 1), "2026-Q4"),
        ("2026", dt.date(2026, 1, 1), dt.date(2027, 1, 1), "2026"),
        (
            "2026-01-01..2026-03-31",
            dt.date(2026, 1, 1),
            dt.date(2026, 4, 1),
            "2026-01-01..2026-03-31",
        ),
        ("2026-02-10..2026-02-10", dt.date(2026, 2, 10), dt.date(2026, 2, 11), None),
        ("last-30-days", dt.date(2026, 10, 24), dt.date(2026, 11, 23), "last-30-days"),
        ("last-1-days", TODAY, dt.date(2026, 11, 23), None),
        ("last-12-months", dt.date(2025, 12, 1), dt.date(2026, 11, 23), "last-12-months"),
        ("last-1-months", dt.date(2026, 11, 1), dt.date(2026, 11, 23), None),
        ("  2026-11 ", dt.date(2026, 11, 1), dt.date(2026, 12, 1), "2026-11"),
    ],
)
def test_parse_period(text, start, end, label):
    period = parse_period(text, today=TODAY)
    assert (period.start, period.end) == (start, end)
    if label is not None:
        assert period.label == label


def test_last_days_include_today():
    period = parse_period("last-30-days", today=TODAY)
    assert period.days == 30
    assert period.start <= TODAY < period.end


def test_last_months_span_whole_calendar_months_up_to_today():
    period = parse_period("last-12-months", today=dt.date(2026, 1, 15))
    assert period.start == dt.date(2025, 2, 1)
    assert len(period.months()) == 12


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-13", "is not a date"),
        ("2026-00", "is not a date"),
        ("2026-02-30..2026-03-01", "is not a date"),
        ("2026-03-31..2026-01-01", "ends before it starts"),
        ("last-0-days", "spans no time"),
        ("garbage", "is not a period"),
        ("2026-Q5", "is not a period"),
        ("", "is not a period"),
        ("last-3-weeks", "is not a period"),
        ("2026-01-01...2026-02-01", "is not a period"),
    ],
)
def test_parse_period_errors(text, says):
    with pytest.raises(ValidationError) as info:
        parse_period(text, today=TODAY)
    assert info.value.field == "period"
    assert says in info.value.message
    assert repr(text.strip()) in info.value.message


def test_a_bad_period_names_the_accepted_forms_and_the_field():
    with pytest.raises(ValidationError) as info:
        parse_period("soon", field="since")
    assert str(info.value) == (
        "since: 'soon' is not a period (use 2026-11, 2026-Q3, 2026, "
        "2026-01-01..2026-03-31, last-30-days or last-12-months)"
    )


def test_period_bounds_in_the_deployments_zone():
    moscow = zoneinfo.ZoneInfo("Europe/Moscow")  # UTC+3, no daylight saving time
    start, end = parse_period("2026-11").bounds(moscow)
    assert start == dt.datetime(2026, 10, 31, 21, 0, tzinfo=UTC)
    assert end == dt.datetime(2026, 11, 30, 21, 0, tzinfo=UTC)
    assert start.utcoffset() == dt.timedelta(0)
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")  # the switch to winter time is in the period
    start, end = parse_period("2026-10").bounds(berlin)
    assert start == dt.datetime(2026, 9, 30, 22, 0, tzinfo=UTC)  # CEST, UTC+2
    assert end == dt.datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # CET, UTC+1
    assert parse_period("2026").bounds(UTC) == (
        dt.datetime(2026, 1, 1, tzinfo=UTC),
        dt.datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_period_months():
    assert parse_period("2026-Q3").months() == [
        dt.date(2026, 7, 1),
        dt.date(2026, 8, 1),
        dt.date(2026, 9, 1),
    ]
    assert parse_period("2026-11-15..2027-01-02").months() == [
        dt.date(2026, 11, 1),
        dt.date(2026, 12, 1),
        dt.date(2027, 1, 1),
    ]
    assert parse_period("2026-05-10..2026-05-12").months() == [dt.date(2026, 5, 1)]
    assert len(parse_period("2026").months()) == 12
    assert parse_period("2026").days == 365


# -- the example report ------------------------------------------------------------------
@pytest.fixture
def crmkit_plugins() -> list[Any]:
    return [("report_example", report_example)]


@pytest.fixture
def base(crm: Any) -> dict[str, int]:
    """Clients created over 2026 by two owners, in segments that the test plugin registers."""
    with crm.session() as s:
        s.users.add("anna", role="manager")
        made = {}
        for name, month, owner, source in [
            ("A", 1, "admin", "website"),
            ("B", 1, "anna", "website"),
            ("C", 2, "anna", "referral"),
            ("D", 3, "admin", "referral"),
            ("E", 3, "anna", None),
            ("Old", None, "admin", "website"),  # created in 2025: outside the periods below
        ]:
            created = dt.datetime(2026, month or 12, 10, 12, tzinfo=UTC)
            if month is None:
                created = created.replace(year=2025)
            made[name] = s.clients.create(name, owner=owner, source=source, created_at=created).id
    return made


def test_registered_report(crm):
    report = crm.report("new_clients")
    assert report.title == "New clients"
    assert report.filters == ("period", "segment", "user")
    from crmkit.testing import builtins_with

    builtin = {
        r.name for module in builtins_with("crmkit_reports") for r in module.crmkit_reports()
    }
    assert {"funnel", "channels", "kpi"} <= builtin
    assert set(crm.reports) == {"new_clients"} | builtin  # and the built-in plugins'
    with pytest.raises(NotFound) as info:
        crm.report("nope")
    assert info.value.field == "report"
    assert str(info.value) == f"report: no report 'nope' (known: {', '.join(sorted(crm.reports))})"


def test_session_report_runs_with_the_defaults(crm, base):
    with crm.session(readonly=True) as s:
        result = s.report("new_clients", period="2026-Q1")
    assert isinstance(result, ReportResult)
    assert result.report == "new_clients"
    assert result.period == Period(dt.date(2026, 1, 1), dt.date(2026, 4, 1), "2026-Q1")
    assert [c.name for c in result.columns] == [
        "group",
        "clients",
        "share",
        "2026-01",
        "2026-02",
        "2026-03",
    ]
    assert result.rows == [
        {
            "group": "(none)",
            "clients": 5,
            "share": 1.0,
            "2026-01": 2,
            "2026-02": 1,
            "2026-03": 2,
        }
    ]
    assert result.summary == {"clients": 5, "groups": 1}


def test_session_report_options_and_filters(crm, base):
    with crm.session(readonly=True) as s:
        by_source = s.report("new_clients", period="2026", by="source", months=False)
        assert [(r["group"], r["clients"]) for r in by_source.rows] == [
            ("referral", 2),
            ("website", 2),
            ("(none)", 1),
        ]
        assert by_source.column("share") == [0.4, 0.4, 0.2]
        assert [c.name for c in by_source.columns] == ["group", "clients", "share"]
        at_least_two = s.report("new_clients", period="2026", by="source", min_clients=2)
        assert at_least_two.column("group") == ["referral", "website"]
        annas = s.report("new_clients", period="2026", by="source", user="anna", months=False)
        assert annas.summary == {"clients": 3, "groups": 3}
        q1 = parse_period("2026-Q1")
        assert s.report("new_clients", period=q1).period == q1  # a Period is taken as it is


def test_the_default_period_applies(crm, base, monkeypatch):
    with crm.session(readonly=True) as s:
        result = s.report("new_clients")
    assert result.period is not None and result.period.label == "last-12-months"
    today = dt.datetime.now(crm.tz).date()
    assert result.period.start <= today < result.period.end


def test_report_query_applies_defaults_and_checks_options(crm):
    report = crm.report("new_clients")
    with crm.session(readonly=True) as s:
        query = report.query(s, period="2026-11")
        assert query == ReportQuery(
            period=parse_period("2026-11"),
            options={"by": "segment", "min_clients": 1, "months": True},
        )
        assert report.query(s, by=None, min_clients=3).options["min_clients"] == 3


@pytest.mark.parametrize(
    ("given", "field", "says"),
    [
        ({"colour": "red"}, "colour", "has no option 'colour' (options: by, min_clients, months)"),
        ({"min_clients": "many"}, "min_clients", "'many' is not of type 'integer'"),
        ({"min_clients": 0}, "min_clients", "(allowed: a whole number >= 1)"),
        ({"by": "owner"}, "by", 'allowed: one of "segment", "source"'),
        (
            {"pipeline": "b2b"},
            "pipeline",
            "has no pipeline filter (it accepts: period, segment, user)",
        ),
        ({"team": "sales"}, "team", "has no team filter"),
        ({"period": "2026-13"}, "period", "is not a date"),
        ({"segment": "nope"}, "segment", "unknown segment 'nope'"),
    ],
)
def test_session_report_refuses_bad_input(session, given, field, says):
    with pytest.raises(ValidationError) as info:
        session.report("new_clients", **given)
    assert info.value.field == field, info.value
    assert says in str(info.value)


def test_session_report_refuses_an_unknown_user(session):
    with pytest.raises(NotFound) as info:
        session.report("new_clients", user="ghost")
    assert str(info.value) == "user: no user 'ghost'"


def test_session_report_of_an_unknown_report(session):
    with pytest.raises(NotFound, match="no report 'nope'"):
        session.report("nope")


# -- crmkit report NAME ------------------------------------------------------------------------
def test_cli_report_table(crm, base, invoke):
    result = invoke("report", "new_clients", "--period", "2026-Q1", "--by", "source")
    assert result.exit_code == 0, result
    out = result.output
    assert "New clients, 2026-Q1" in out
    assert "Channel" in out and "New clients" in out and "Share" in out
    assert "website" in out and "40.0%" in out
    assert "clients: 5" in out and "groups: 3" in out
    assert "(none): clients without a channel." in out


def test_cli_report_json(crm, base, invoke):
    result = invoke(
        "report", "new_clients", "--period", "2026", "--no-months", "--min-clients", "2", json=True
    )
    assert result.exit_code == 0, result
    data = result.json
    assert data["report"] == "new_clients" and data["title"] == "New clients"
    assert data["period"] == {"start": "2026-01-01", "end": "2027-01-01", "label": "2026"}
    assert data["columns"][1] == {"name": "clients", "title": "New clients", "type": "integer"}
    assert data["rows"] == [{"group": "(none)", "clients": 5, "share": 1.0}]
    assert data["summary"] == {"clients": 5, "groups": 1}


def test_cli_report_csv(crm, base, invoke):
    result = invoke(
        "report", "new_clients", "--period", "2026-Q1", "--by", "source", "--format", "csv"
    )
    assert result.exit_code == 0, result
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[0] == ["group", "clients", "share", "2026-01", "2026-02", "2026-03"]
    assert rows[1:] == [
        ["referral", "2", "0.4", "0", "1", "1"],
        ["website", "2", "0.4", "2", "0", "0"],
        ["(none)", "1", "0.2", "0", "0", "1"],
    ]


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_cli_report_out(crm, base, invoke, tmp_path, fmt):
    target = tmp_path / f"report.{fmt}"
    result = invoke(
        "report", "new_clients", "--period", "2026", "--format", fmt, "--out", str(target)
    )
    assert result.exit_code == 0, result
    assert result.output == ""
    assert result.stderr == f"Wrote 1 rows to {target}\n"
    text = target.read_text("utf-8")
    if fmt == "json":
        assert json.loads(text)["rows"][0]["clients"] == 5
    elif fmt == "csv":
        assert text.splitlines()[1].startswith("(none),5,1.0,")
    else:
        assert "New clients, 2026" in text and "100.0%" in text and "clients: 5" in text


def test_cli_report_filters_and_options_are_checked(crm, base, invoke):
    bad_period = invoke("report", "new_clients", "--period", "2026-13")
    assert bad_period.exit_code == 2
    assert bad_period.stderr.startswith("Error: period: '2026-13' is not a date")
    assert "Traceback" not in bad_period.stderr
    bad_choice = invoke("report", "new_clients", "--by", "owner")
    assert bad_choice.exit_code == 2
    assert "'owner' is not one of 'segment', 'source'" in bad_choice.stderr
    bad_number = invoke("report", "new_clients", "--min-clients", "0")
    assert bad_number.exit_code == 2
    assert "min_clients: 0 is less than the minimum of 1" in bad_number.stderr
    no_filter = invoke("report", "new_clients", "--pipeline", "b2b")
    assert no_filter.exit_code == 2  # the report does not take this filter: no such option
    assert "No such option" in no_filter.stderr
    ghost = invoke("report", "new_clients", "--user", "ghost")
    assert ghost.exit_code == 3
    assert ghost.stderr == "Error: user: no user 'ghost'\n"


def _console_commands(page: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` for every ``$`` line of a docs page's console blocks."""
    text = (TESTS.parent / "docs" / page).read_text("utf-8")
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"\.\. code-block:: console\n\n((?:   .*\n|\n)+)", text):
        for line in textwrap.dedent(block).rstrip().splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif found:
                found[-1][1].append(line.rstrip())
    return [(command, "\n".join(out).strip()) for command, out in found]


def test_the_reports_page_shows_what_the_commands_print(crm, base, invoke, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    commands = _console_commands("reports.rst")
    assert len(commands) == 2
    for command, expected in commands:
        args = shlex.split(command)
        assert args[0] == "crmkit"
        result = invoke(*args[1:])
        assert result.exit_code == 0, result
        shown = "\n".join(line.rstrip() for line in result.output.splitlines()).strip()
        assert shown == expected, command


def test_the_reports_page_shows_what_python_returns(crm, base):
    text = (TESTS.parent / "docs" / "reports.rst").read_text("utf-8")
    assert 's.report("new_clients", period="2026-Q1", by="source", months=False)' in text
    with crm.session(readonly=True) as s:
        result = s.report("new_clients", period="2026-Q1", by="source", months=False)
    assert f"result.rows       # [{result.rows[0]!r}, ...]" in text
    assert f"result.summary    # {result.summary!r}" in text


def test_cli_report_help_lists_reports_and_options(invoke):
    listed = invoke("report", "--help")
    assert listed.exit_code == 0, listed
    assert "new_clients" in listed.output and "New clients" in listed.output
    helped = invoke("report", "new_clients", "--help")
    assert helped.exit_code == 0, helped
    for text in ("--period", "--segment", "--user", "--by", "--min-clients", "--no-months"):
        assert text in helped.output, text
    assert "--pipeline" not in helped.output and "--team" not in helped.output
    words = " ".join(helped.output.split())  # help text is wrapped to the terminal
    assert "Default: last-12-months." in words
    assert "Group the clients by segment or by marketing channel. Default: segment." in words
    assert "[segment|source]" in words


def test_cli_unknown_report_fails_cleanly(invoke):
    result = invoke("report", "nope")
    assert result.exit_code != 0
    assert "No such command 'nope'" in result.stderr
    assert "Traceback" not in result.stderr + result.output


def test_report_group_is_empty_without_reports(crm_factory):
    from click.testing import CliRunner

    from crmkit.cli import build_cli

    bare = crm_factory("bare", plugins=[])
    from crmkit.testing import builtins_with

    for module in builtins_with("crmkit_reports"):  # the built-in reports
        bare.plugins.unregister(name=module.__name__)
    bare.refresh()
    assert bare.reports == {}
    argv = ["-C", str(bare.config.root), "report", "--help"]
    result = CliRunner().invoke(build_cli(bare.plugins), argv, obj=bare.plugins)
    assert result.exit_code == 0, result.output
    assert "new_clients" not in result.stdout and "funnel" not in result.stdout


# -- the contract: what plugins may register ----------------------------------------------------
def _result(session: Any, query: ReportQuery) -> ReportResult:
    return ReportResult(report="", columns=[Column("n", type="integer")], rows=[{"n": 1}])


class NotAReport:
    @hookimpl
    def crmkit_reports(self):
        return [{"name": "dict_report", "title": "A dict"}]


class SameName:
    @hookimpl
    def crmkit_reports(self):
        return [Report("new_clients", "Again", run=_result)]


def test_a_plugin_returning_no_report_is_a_plugin_error(crm, register_plugin, invoke):
    register_plugin(NotAReport(), name="broken")
    with pytest.raises(PluginError) as info:
        _ = crm.reports
    assert str(info.value).startswith("reports: broken: crmkit_reports must return crmkit.Report")
    result = invoke("report", "new_clients")
    assert result.exit_code == 7
    assert "crmkit_reports must return crmkit.Report" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_report_name_registered_twice_is_refused(crm, register_plugin, invoke):
    register_plugin(SameName(), name="again")
    with pytest.raises(PluginError, match="report 'new_clients' is registered twice"):
        _ = crm.reports
    result = invoke("report", "--help")
    assert result.exit_code == 7
    assert "registered twice" in result.stderr


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"filters": ("period", "region")}, "unknown filter 'region' (filters: period, pipeline"),
        ({"options": {"period": {"type": "string"}}}, "option 'period' has the name of a filter"),
        ({"options": {"out": {"type": "string"}}}, "option 'out' has the name of a filter"),
        ({"options": {"n": "integer"}}, "option 'n' must be a JSON Schema (a dict)"),
        ({"options": {"n": {"type": "count"}}}, "options.properties.n.type: is not a valid JSON"),
        ({"default_period": "recently"}, "default_period: 'recently' is not a period"),
    ],
)
def test_a_report_that_breaks_the_contract_is_a_plugin_error(crm, register_plugin, kwargs, says):
    class Broken:
        @hookimpl
        def crmkit_reports(self):
            return [Report("broken", "Broken", run=_result, **kwargs)]

    register_plugin(Broken(), name="broken_plugin")
    with pytest.raises(PluginError) as info:
        _ = crm.reports
    assert str(info.value).startswith("reports: broken_plugin: report 'broken': ")
    assert says in str(info.value)


def test_a_report_without_options_and_filters(crm, register_plugin, invoke):
    class Plain:
        @hookimpl
        def crmkit_reports(self):
            return [Report("plain", "Plain", run=_result, filters=())]

    register_plugin(Plain(), name="plain")
    with crm.session(readonly=True) as s:
        result = s.report("plain")
        assert (result.report, result.period, result.rows) == ("plain", None, [{"n": 1}])
        with pytest.raises(ValidationError, match="has no period filter"):
            s.report("plain", period="2026")
        with pytest.raises(ValidationError, match=r"has no option 'x' \(options: none\)"):
            s.report("plain", x=1)
    shown = invoke("report", "plain", "--format", "csv")
    assert shown.exit_code == 0, shown
    assert shown.output == "n\n1\n"


def test_every_filter_is_a_field_of_the_query():
    assert set(FILTERS) <= {f.name for f in ReportQuery.__attrs_attrs__}


def test_report_objects_are_public():
    for name in ("Report", "ReportQuery", "ReportResult", "Column", "Period", "parse_period"):
        assert name in crmkit.__all__
        assert getattr(crmkit, name) is not None
    assert Column("n").heading == "n" and Column("n", "Count").heading == "Count"


def test_an_enum_option_reaches_the_report_with_its_declared_type(crm, register_plugin, invoke):
    seen: list[Any] = []

    def run(session: Any, query: ReportQuery) -> ReportResult:
        seen.append(query.options["months"])
        return _result(session, query)

    class Months:
        @hookimpl
        def crmkit_reports(self):
            options = {"months": {"type": "integer", "enum": [3, 6, 12], "default": 3}}
            return [Report("months", "Months", run=run, filters=(), options=options)]

    register_plugin(Months(), name="months")
    assert invoke("report", "months", "--months", "6").exit_code == 0
    assert invoke("report", "months").exit_code == 0
    refused = invoke("report", "months", "--months", "7")
    assert refused.exit_code == 2 and "'7' is not one of" in refused.stderr
    assert seen == [6, 3]


def test_cli_report_out_that_cannot_be_written(crm, invoke, tmp_path):
    result = invoke("report", "new_clients", "--out", str(tmp_path / "missing" / "r.csv"))
    assert result.exit_code == 1, result
    assert result.stderr.startswith("Error: out: cannot write ")
    assert "Traceback" not in result.stderr


class SameTitles:
    @hookimpl
    def crmkit_reports(self):
        def run(session, query):
            columns = [Column("a_error", "Error", "percent"), Column("b_error", "Error", "percent")]
            return ReportResult("twice", columns, [{"a_error": 0.25, "b_error": -0.5}])

        return [Report("twice", "Two columns titled alike", run, filters=())]


def test_columns_with_the_same_title_keep_their_own_values(crm, register_plugin):
    from click.testing import CliRunner

    from crmkit.cli import build_cli

    register_plugin(SameTitles())
    argv = ["-C", str(crm.config.root), "report", "twice"]
    result = CliRunner().invoke(build_cli(crm.plugins), argv, obj=crm.plugins)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "%" in x)
    assert "25.0%" in line and "-50.0%" in line
