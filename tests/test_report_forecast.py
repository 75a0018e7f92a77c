"""The ``forecast`` report, by hand.

Pipeline ``fc``: one stage ``a`` (probability 0.5), then won or lost. All
times are midnights (UTC), counted from today (``T``).

History (closed in the last 12 months): six deals entered ``a`` at T-200;
four were won after 10, 20, 30 and 40 days, two lost. Win chance of ``a``:
4 / 6; days from ``a`` to the win: 10, 20, 30, 40.

Open deals: X (1 000) entered ``a`` at T-15, expected to close at T+10;
Y (3 000) entered at T-35, no expected close date.

Period T+5 .. T+15 (days 5 to 16 from today, 16 excluded):

* weighted: X closes in it: 1 000 x 0.5 = 500; Y is undated (left out);
* statistical: X is 15 days in (and a bit of today): of the wins from ``a``,
  20, 30, 40 take longer; 20 and 30 fall 20..31 days after X's entry, the
  period: 2 / 3; X gives 1 000 x 4/6 x 2/3 = 444.44. Y is 35 days in: only
  40 takes longer, and 40 falls in 40..51 days after Y's entry: 1 / 1;
  Y gives 3 000 x 4/6 = 2 000.00. Total 2 444.44.
"""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from crmkit import hookimpl

D = decimal.Decimal


class Fc:
    @hookimpl
    def crmkit_pipelines(self):
        return [{"name": "fc", "stages": [{"name": "a", "probability": 0.5}]}]


@pytest.fixture
def today():
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def data(crm, register_plugin, today):
    register_plugin(Fc())
    with crm.session() as s:
        s.users.add("anna", role="manager")
        client = s.clients.create("Client", created_at=today - dt.timedelta(days=300))
        start = today - dt.timedelta(days=200)
        for days in (10, 20, 30, 40):
            deal = s.deals.open(client.id, pipeline="fc", amount=100, at=start)
            s.deals.win(deal.id, at=start + dt.timedelta(days=days))
        for _ in range(2):
            deal = s.deals.open(client.id, pipeline="fc", amount=100, at=start)
            s.deals.lose(deal.id, "no_budget", at=start + dt.timedelta(days=5))
        s.deals.open(
            client.id,
            pipeline="fc",
            amount=1000,
            at=today - dt.timedelta(days=15),
            expected_close=(today + dt.timedelta(days=10)).date(),
            owner="anna",
        )
        s.deals.open(client.id, pipeline="fc", amount=3000, at=today - dt.timedelta(days=35))
    return crm


def period(today, first, last):
    return (
        f"{(today + dt.timedelta(days=first)).date()}..{(today + dt.timedelta(days=last)).date()}"
    )


def test_both_methods_by_hand(data, today):
    with data.session(readonly=True) as s:
        result = s.report("forecast", pipeline="fc", period=period(today, 5, 15))
    (row,) = result.rows
    assert (row["stage"], row["open_deals"], row["amount"]) == ("a", 2, D("4000.00"))
    assert row["win_chance"] == pytest.approx(4 / 6, abs=1e-4)
    assert row["weighted"] == D("500.00") and row["undated"] == 1
    assert row["statistical"] == D("2444.44")
    assert result.summary == {
        "open_deals": 2,
        "weighted": D("500.00"),
        "statistical": D("2444.44"),
        "undated_deals": 1,
    }


def test_a_thin_history_falls_back_on_the_pipeline_probability(data, today):
    with data.session(readonly=True) as s:
        result = s.report("forecast", pipeline="fc", period=period(today, 5, 15), history_months=1)
    (row,) = result.rows
    assert row["win_chance"] == 0.5  # no deal closed in the last month: the probability
    assert row["statistical"] == D("0.00")  # and no time to close to learn from
    assert any("fewer than 5 closed deals" in n for n in result.notes)


def test_a_manager_forecasts_their_own_deals(data, today):
    with data.session(as_user="anna", readonly=True) as s:
        result = s.report("forecast", pipeline="fc", period=period(today, 5, 15))
    (row,) = result.rows
    assert row["open_deals"] == 1 and row["weighted"] == D("500.00")


def test_backtest_replays_past_months(data, today):
    """The wins fell 200 - 10..40 days ago: each month's actual is what was won in it."""
    with data.session(readonly=True) as s:
        result = s.report("forecast", pipeline="fc", backtest=True, backtest_months=12)
    assert len(result.rows) == 12
    won = {}
    start = today - dt.timedelta(days=200)
    for days in (10, 20, 30, 40):
        month = (start + dt.timedelta(days=days)).strftime("%Y-%m")
        won[month] = won.get(month, 0) + 100
    for row in result.rows:
        assert row["actual"] == D(won.get(row["period"], 0)).quantize(D("0.01"))
        if row["actual"]:
            assert row["weighted_error"] == pytest.approx(
                float((row["weighted"] - row["actual"]) / row["actual"]), abs=1e-4
            )
        else:
            assert row["weighted_error"] is None
    errors = [
        abs(r["statistical_error"]) for r in result.rows if r["statistical_error"] is not None
    ]
    assert result.summary["statistical_mape"] == pytest.approx(sum(errors) / len(errors), abs=1e-4)


def test_cli_and_charts(data, today, tmp_path):
    from click.testing import CliRunner

    from crmkit.cli import build_cli

    cli = build_cli(data.plugins)

    def run(*args):
        return CliRunner().invoke(cli, ["-C", str(data.config.root), *args], obj=data.plugins)

    plain = run(
        "report",
        "forecast",
        "--pipeline",
        "fc",
        "--period",
        period(today, 5, 15),
        "--format",
        "csv",
        "--chart",
        str(tmp_path / "f.svg"),
    )
    assert plain.exit_code == 0, plain.output
    assert "a,2,4000.00,0.5," in plain.output and "<svg" in (tmp_path / "f.svg").read_text()
    back = run(
        "report",
        "forecast",
        "--pipeline",
        "fc",
        "--backtest",
        "--backtest-months",
        "3",
        "--chart",
        str(tmp_path / "b.png"),
    )
    assert back.exit_code == 0, back.output
    assert "statistical mape" in back.output and (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
