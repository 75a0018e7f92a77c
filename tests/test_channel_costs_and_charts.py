"""Channel costs (``crmkit channel cost``) and the chart contract of reports (``--chart``)."""

from __future__ import annotations

import decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from crmkit import PermissionDenied, Report, ReportResult, ValidationError, hookimpl
from crmkit.core.reports import Column


def test_a_cost_is_recorded_replaced_and_listed(crm):
    with crm.session() as s:
        first = s.channel_costs.record("website", period="2026-11", amount="50 000")
        again = s.channel_costs.record("website", period="2026-11", amount=60000, note="ads")
        s.channel_costs.record("event", period="2026-Q4", amount="120000.50", currency="usd")
        assert again.id == first.id and again.amount == decimal.Decimal("60000.00")
        assert (again.start.isoformat(), again.end.isoformat()) == ("2026-11-01", "2026-12-01")
        listed = s.channel_costs.list()
        assert [(c.channel, c.period, c.currency) for c in listed] == [
            ("event", "2026-Q4", "USD"),
            ("website", "2026-11", "RUB"),
        ]
        import datetime as dt

        assert [c.channel for c in s.channel_costs.list(start=dt.date(2026, 12, 1))] == ["event"]
        assert [e["action"] for e in s.events("channel_cost", first.id)] == [
            "recorded",
            "updated",
        ]


def test_bad_costs_name_every_field_and_managers_may_not(crm):
    with crm.session() as s:
        s.users.add("anna", role="manager")
        with pytest.raises(ValidationError) as err:
            s.channel_costs.record("tv", period="2026-13", amount="-5", currency="rubles")
        assert {p.field for p in err.value.problems} == {"channel", "period", "amount", "currency"}
    with crm.session(as_user="anna") as s, pytest.raises(PermissionDenied):
        s.channel_costs.record("website", period="2026-11", amount=1)


def test_channel_cost_commands(crm):
    from crmkit.cli import build_cli

    cli = build_cli(crm.plugins)

    def run(*args):
        return CliRunner().invoke(cli, ["-C", str(crm.config.root), *args], obj=crm.plugins)

    done = run("channel", "cost", "website", "--period", "2026-11", "--amount", "1500")
    assert done.exit_code == 0 and done.output == "website: 1500.00 RUB for 2026-11\n"
    listed = run("channel", "costs", "--period", "2026-Q4", "--format", "json")
    assert '"amount": "1500.00"' in listed.output
    bad = run("channel", "cost", "website", "--period", "soon", "--amount", "1")
    assert bad.exit_code == 2 and "period" in bad.output


class Drawn:
    @hookimpl
    def crmkit_reports(self):
        def run(session, query):
            return ReportResult("bars", [Column("n", type="integer")], [{"n": 3}, {"n": 5}])

        def chart(result, path):
            from crmkit.core import charts

            fig, ax = charts.figure()
            ax.bar(["a", "b"], result.column("n"))
            charts.save(fig, path)

        return [
            Report("bars", "Bars", run, filters=(), chart=chart),
            Report("plain", "No chart", run, filters=()),
        ]


def test_a_report_draws_its_chart_as_png_or_svg(crm, register_plugin, tmp_path):
    register_plugin(Drawn())
    report = crm.report("bars")
    with crm.session(readonly=True) as s:
        result = s.report("bars")
    tmp_path = tmp_path / "charts"
    tmp_path.mkdir()
    png = report.draw(result, tmp_path / "bars.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = report.draw(result, tmp_path / "bars.svg")
    assert svg.read_text("utf-8").lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.png", "bars.svg"]
    with pytest.raises(ValidationError, match=r"\.png or \.svg"):
        report.draw(result, tmp_path / "bars.jpg")
    with pytest.raises(ValidationError, match="draws no chart"):
        crm.report("plain").draw(result, tmp_path / "plain.png")
    with pytest.raises(ValidationError, match="does not exist"):
        report.draw(result, tmp_path / "missing" / "bars.png")


def test_the_chart_option_is_offered_where_there_is_a_chart(crm, register_plugin, tmp_path):
    from crmkit.cli import build_cli

    register_plugin(Drawn())
    cli = build_cli(crm.plugins)

    def run(*args):
        return CliRunner().invoke(cli, ["-C", str(crm.config.root), *args], obj=crm.plugins)

    target = tmp_path / "out.svg"
    drawn = run("report", "bars", "--chart", str(target))
    assert drawn.exit_code == 0, drawn.output
    assert target.is_file() and "Drew the chart in" in drawn.output
    assert "--chart" not in run("report", "plain", "--help").output
    assert run("report", "bars", "--chart", str(tmp_path / "x.gif")).exit_code == 2
    assert not Path(tmp_path / "x.gif").exists()
