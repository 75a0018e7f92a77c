"""The ``channels`` report: what each channel brought against what it cost.

The deployment (UTC, currency RUB), period 2026-Q1 (90 days):

============  =====================================  ==========================
channel       clients (created)                      deals, invoices
============  =====================================  ==========================
website       W1 (Jan 10, qualified Jan 20),          W1: opened Jan 12, won
              W2 (Feb 5, never qualified),            Feb 1, invoice 90 000 paid
              W0 (created 2025-12-20, qualified       Feb 3
              Jan 5: qualified, not a lead)
event         E1 (Mar 1, qualified Mar 2)             E1: opened Mar 3 (open);
                                                      a USD invoice paid: left out
(none)        N1 (Jan 2)                              -
============  =====================================  ==========================

Costs: website 30 000 for 2026-01 and 30 000 for 2026-02 (60 000 in the
quarter); event 360 000 for 2026 (365 days), 90 days of it in Q1:
360 000 x 90 / 365 = 88 767.12; a cost in USD is left out.

website: leads 2, qualified 2 (W1, W0), deals 1, won 1, revenue 90 000,
cost 60 000, cost per lead 30 000, per won 60 000, return on spend 1.50
(keep: between 1 and 3). event: leads 1, qualified 1, deals 1, won 0,
revenue 0, cost 88 767.12, per lead 88 767.12, return 0.00 (cut).
(none): leads 1, no cost: last.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest
from click.testing import CliRunner

UTC = dt.UTC
D = decimal.Decimal


def at(month: int, day: int, year: int = 2026) -> dt.datetime:
    return dt.datetime(year, month, day, 12, tzinfo=UTC)


@pytest.fixture
def data(crm, quick_pipeline):
    with crm.session() as s:
        s.users.add("anna", role="manager")
        w0 = s.clients.create("W0", source="website", created_at=at(12, 20, 2025))
        s.clients.move(w0.id, "qualified", at=at(1, 5))
        w1 = s.clients.create("W1", source="website", created_at=at(1, 10), owner="anna")
        s.clients.move(w1.id, "qualified", at=at(1, 20))
        s.clients.create("W2", source="website", created_at=at(2, 5))
        e1 = s.clients.create("E1", source="event", created_at=at(3, 1))
        s.clients.move(e1.id, "qualified", at=at(3, 2))
        s.clients.create("N1", created_at=at(1, 2))
        deal = s.deals.open(w1.id, pipeline="quick", amount=90000, at=at(1, 12), owner="anna")
        s.deals.win(deal.id, at=at(2, 1))
        invoice = s.invoices.issue(deal.id, 90000, at=at(2, 1))
        s.invoices.pay(invoice.id, at=at(2, 3))
        other = s.deals.open(e1.id, pipeline="quick", amount=5000, currency="USD", at=at(3, 3))
        dollars = s.invoices.issue(other.id, 5000, currency="USD", at=at(3, 4))
        s.invoices.pay(dollars.id, at=at(3, 5))
        s.channel_costs.record("website", period="2026-01", amount=30000)
        s.channel_costs.record("website", period="2026-02", amount=30000)
        s.channel_costs.record("event", period="2026", amount=360000)
        s.channel_costs.record("event", period="2026-Q1", amount=100, currency="USD")
    return crm


def test_figures_by_hand(data):
    with data.session(readonly=True) as s:
        result = s.report("channels", period="2026-Q1")
    rows = {r["channel"]: r for r in result.rows}
    assert [r["channel"] for r in result.rows] == ["website", "event", "(none)"]
    website, event, none = rows["website"], rows["event"], rows["(none)"]
    assert (website["leads"], website["qualified"], website["deals"], website["won"]) == (
        2,
        2,
        1,
        1,
    )
    assert website["revenue"] == D("90000.00") and website["cost"] == D("60000.00")
    assert website["cost_per_lead"] == D("30000.00") and website["cost_per_won"] == D("60000.00")
    assert website["return_on_spend"] == D("1.50") and website["verdict"] == "keep"
    assert (event["leads"], event["qualified"], event["deals"], event["won"]) == (1, 1, 1, 0)
    assert event["revenue"] == D("0") and event["cost"] == D("88767.12")
    assert event["cost_per_won"] is None and event["return_on_spend"] == D("0.00")
    assert event["verdict"] == "cut"
    assert none["leads"] == 1 and none["verdict"] == "no cost" and none["cost_per_lead"] is None
    assert result.summary["leads"] == 4 and result.summary["cost"] == D("148767.12")
    assert result.summary["return_on_spend"] == D("0.60")  # 90 000 / 148 767.12
    assert any("USD are left out" in n for n in result.notes)


def test_thresholds_are_options(data):
    with data.session(readonly=True) as s:
        result = s.report("channels", period="2026-Q1", scale_at=1.5, cut_below=0.5)
    verdicts = {r["channel"]: r["verdict"] for r in result.rows}
    assert verdicts == {"website": "scale", "event": "cut", "(none)": "no cost"}


def test_a_manager_counts_only_their_clients(data):
    with data.session(as_user="anna", readonly=True) as s:
        result = s.report("channels", period="2026-Q1")
    website = next(r for r in result.rows if r["channel"] == "website")
    assert (website["leads"], website["qualified"], website["won"]) == (1, 1, 1)
    assert [r["channel"] for r in result.rows if r["leads"]] == ["website"]


def test_filters_and_the_cli(data, tmp_path):
    from crmkit.cli import build_cli

    with data.session(readonly=True) as s:
        by_user = s.report("channels", period="2026-Q1", user="anna")
    assert next(r for r in by_user.rows if r["channel"] == "website")["leads"] == 1
    cli = build_cli(data.plugins)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["-C", str(data.config.root), *args], obj=data.plugins)

    as_json = run("report", "channels", "--period", "2026-Q1", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["rows"][0]["channel"] == "website"
    csv = run("report", "channels", "--period", "2026-Q1", "--format", "csv").output
    assert csv.splitlines()[0].startswith("channel,leads,qualified,deals,won,revenue,cost")
    chart = tmp_path / "channels.svg"
    drawn = run("report", "channels", "--period", "2026-Q1", "--chart", str(chart))
    assert drawn.exit_code == 0 and "<svg" in chart.read_text("utf-8")
    assert "Return on spend" in chart.read_text("utf-8")
    bad = run("report", "channels", "--period", "2026-Q1", "--scale-at", "0")
    assert bad.exit_code == 2 and "scale_at" in bad.output
