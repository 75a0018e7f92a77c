"""Motivation schemes and the ``bonus`` report (issue 8), every amount computed by hand.

The period is March 2026 (``2026-03``, 31 days, UTC). Deals are in the
pipeline ``quick`` (stages talk, probability 0.4, and offer, 0.6; skipping
allowed). Teams: ``north`` (head ``hanna``, managers ``anna`` and
``boris``), ``south`` (manager ``cora``).

``[plugin.motivation]``: base manager 10000, head 20000; weights
attributed_revenue 0.5, calls_outbound 0.3, overdue_tasks 0.2 (lower is
better); the defaults otherwise: threshold 0.8, accelerator 2, cap 1.5,
5% per overdue task, at most 30%.

====== ==================================================================
anna   D1 (1000) talk 03-01, offer 03-05, a meeting on it 03-04, won 03-20,
       expected 03-25: complete. D2 (500) talk 03-06, won 03-15 straight
       from the first stage, nothing logged on it: **unattributed** ("won
       straight from the first stage", "no interaction logged on the
       deal"). D3 (700) talk 03-02, expected 03-31, lost 03-18.
       Outbound calls 03-02, 03-03. Tasks: T1 due 03-05 done 03-07 (late),
       T2 due 03-20 open, T3 due 04-10 open, T4 due 03-03 done 03-02.
       Plans: attributed_revenue 1000, calls_outbound 2.5, overdue_tasks 2.
boris  D5 (2000) talk 02-10, offer 02-20, a call on it 03-09, won 03-15:
       complete. Six outbound calls in March. No tasks.
       Plans: attributed_revenue 1000, calls_outbound 5, overdue_tasks 1.
cora   D6 (1000) talk 03-01, offer 03-05, a meeting on it 03-06, won 03-20:
       complete. Three outbound calls. Seven tasks due 03-02 .. 03-08, open.
       Plans: attributed_revenue 1000, calls_outbound 3.8, overdue_tasks 3.
hanna  H1 (700) talk 03-01, moved to offer 03-10 and won 03-12 by an
       import, a meeting on it: **unattributed** ("its moves were
       imported, not made in crmkit"). No plans.
====== ==================================================================

The period over (``--as-of 2026-04-15``; overdue judged at 04-01 00:00):

- anna: attributed 1000 / 1000 = 1.0 -> factor 1 -> 10000 x 0.5 x 1 = 5000.00;
  calls 2 / 2.5 = 0.8 (the threshold: linear) -> 10000 x 0.3 x 0.8 = 2400.00;
  overdue 2 (T1 late, T2 open), plan 2 -> 2 / 2 = 1.0 -> 2000.00.
  Gross 9400.00; penalty 2 x 5% = 10% -> 940.00; bonus 8460.00.
- boris: attributed 2000 / 1000 = 2.0 -> 1 + 1.0 x 2 = 3, capped 1.5 -> 7500.00;
  calls 6 / 5 = 1.2 -> 1 + 0.2 x 2 = 1.4 -> 4200.00; overdue 0 against 1:
  nothing overdue counts as the cap 1.5 -> 3000.00. Gross 14700.00, no penalty.
- cora: attributed 1.0 -> 5000.00; calls 3 / 3.8 = 0.7895 < 0.8 -> 0.00;
  overdue 7 against 3 -> 3 / 7 = 0.4286 -> 0.00. Gross 5000.00; penalty
  7 x 5% = 35%, capped at 30% -> 1500.00; bonus 3500.00.
- hanna: no plan for any weighted KPI -> 0.00, three notes "no plan for ...";
  H1 listed as unattributed.

``--forecast --as-of 2026-03-16`` (16 of 31 days elapsed, judged at 03-17 00:00), anna:
calls 2 -> 2 / 16 x 31 = 3.875 -> 3.88; 3.88 / 2.5 = 1.552 -> 1 + 0.552 x 2
= 2.104, capped 1.5 -> 4500.00. attributed: nothing won yet (D1 is won on
03-20), 0 projected, plus the open pipeline expected in March: D1 at offer
1000 x 0.6 = 600 and D3 at talk 700 x 0.4 = 280 -> 880; 880 / 1000 = 0.88 ->
10000 x 0.5 x 0.88 = 4400.00. overdue: T1 (done late 03-07) -> 1 / 16 x 31
= 1.9375 -> 1.94; 2 / 1.94 = 1.030928 -> 1 + 0.030928 x 2 = 1.061856 ->
10000 x 0.2 x 1.061856 = 2123.712 -> 2123.71. Gross 11023.71; one task
overdue now: 5% -> 551.1855 -> 551.19; bonus 10472.52.

The example scheme ``flat`` (``docs/examples/crmkit_flat_bonus.py``), 1000
per complete won deal minus 100 per overdue task: anna 1000 - 200 = 800,
boris 1000, cora 1000 - 700 = 300, hanna 0.
"""

from __future__ import annotations

import datetime as dt
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import crmkit
from crmkit import CRM, Bonus, ConfigError, PluginError, Scheme, Standing, hookimpl
from crmkit.plugins.motivation import factor

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

import crmkit_flat_bonus  # noqa: E402  (lives in docs/examples, added to sys.path above)

UTC = dt.UTC
D = Decimal

CONFIG = """
[plugin.motivation.base]
manager = 10000
head = 20000

[plugin.motivation.weights]
attributed_revenue = 0.5
calls_outbound = 0.3
overdue_tasks = 0.2
"""


def at(month: int, day: int) -> dt.datetime:
    return dt.datetime(2026, month, day, 12, tzinfo=UTC)


class Quick:
    @hookimpl
    def crmkit_pipelines(self):
        return [
            {
                "name": "quick",
                "allow_skip": True,
                "lost_reasons": ["price"],
                "stages": [
                    {"name": "talk", "probability": 0.4},
                    {"name": "offer", "probability": 0.6},
                ],
            }
        ]


@pytest.fixture
def crmkit_plugins():
    return [Quick(), crmkit_flat_bonus]


def configure(crm, text: str) -> Path:
    """Append ``text`` to the deployment's crmkit.toml; returns its folder."""
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n" + text, "utf-8")
    return crm.config.root


@pytest.fixture
def base(crm):
    with crm.session() as s:
        s.teams.add("north")
        s.teams.add("south")
        s.users.add("hanna", role="head", team="north")
        s.users.add("anna", role="manager", team="north")
        s.users.add("boris", role="manager", team="north")
        s.users.add("cora", role="manager", team="south")
        c = {
            name: s.clients.create(name, owner=owner, created_at=at(1, 1)).id
            for name, owner in [("A1", "anna"), ("B1", "boris"), ("C1", "cora"), ("H1", "hanna")]
        }

        def deal(client, owner, amount, opened, expected=None):
            return s.deals.open(
                c[client], pipeline="quick", amount=amount, owner=owner, at=opened,
                expected_close=expected,
            ).id  # fmt: skip

        d1 = deal("A1", "anna", 1000, at(3, 1), dt.date(2026, 3, 25))
        s.deals.move(d1, "offer", at=at(3, 5))
        d2 = deal("A1", "anna", 500, at(3, 6))
        d3 = deal("A1", "anna", 700, at(3, 2), dt.date(2026, 3, 31))
        d5 = deal("B1", "boris", 2000, at(2, 10))
        s.deals.move(d5, "offer", at=at(2, 20))
        d6 = deal("C1", "cora", 1000, at(3, 1))
        s.deals.move(d6, "offer", at=at(3, 5))
        h1 = deal("H1", "hanna", 700, at(3, 1))
        s.deals.move(h1, "offer", at=at(3, 10), cause="import")
        s.deals.move(h1, "won", at=at(3, 12), cause="import")

        def task(title, due, who, done=None):
            made = s.tasks.add(title, due=due, assignee=who, at=at(2, 1))
            if done is not None:
                s.tasks.done(made.id, at=done)

        task("T1", at(3, 5), "anna", done=at(3, 7))
        task("T2", at(3, 20), "anna")
        task("T3", at(4, 10), "anna")
        task("T4", at(3, 3), "anna", done=at(3, 2))
        for day in range(2, 9):
            task(f"C{day}", at(3, day), "cora")
        plans = {
            "anna": (1000, "2.5", 2),
            "boris": (1000, 5, 1),
            "cora": (1000, "3.8", 3),
        }
        for login, (revenue, calls, overdue) in plans.items():
            s.plans.set("attributed_revenue", period="2026-03", target=revenue, user=login)
            s.plans.set("calls_outbound", period="2026-03", target=calls, user=login)
            s.plans.set("overdue_tasks", period="2026-03", target=overdue, user=login)
    call = {"topic": "first_contact", "outcome": "no_answer", "direction": "outbound"}
    meeting = {"topic": "presentation", "outcome": "needs_identified"}
    with crm.session(as_user="anna") as s:
        s.interactions.log(c["A1"], "meeting", deal_id=d1, at=at(3, 4), **meeting)
        s.interactions.log(c["A1"], "call", at=at(3, 2), **call)
        s.interactions.log(c["A1"], "call", at=at(3, 3), **call)
        s.deals.win(d1, at=at(3, 20))
        s.deals.win(d2, at=at(3, 15))
        s.deals.lose(d3, "price", at=at(3, 18))
    with crm.session(as_user="boris") as s:
        s.interactions.log(c["B1"], "call", deal_id=d5, at=at(3, 9), **call)
        for day in (10, 11, 12, 13, 14):
            s.interactions.log(c["B1"], "call", at=at(3, day), **call)
        s.deals.win(d5, at=at(3, 15))
    with crm.session(as_user="cora") as s:
        s.interactions.log(c["C1"], "meeting", deal_id=d6, at=at(3, 6), **meeting)
        for day in (2, 3, 4):
            s.interactions.log(c["C1"], "call", at=at(3, day), **call)
        s.deals.win(d6, at=at(3, 20))
    with crm.session(as_user="hanna") as s:
        s.interactions.log(c["H1"], "meeting", deal_id=h1, at=at(3, 11), **meeting)
    opened = CRM.open(configure(crm, CONFIG), plugins=crm.plugins)
    yield opened
    opened.close()


def figures(result):
    return {
        r["user"]: (r["base"], r["gross"], r["penalty"], r["bonus"], r["overdue"])
        for r in result.rows
    }


def lines(row):
    return {
        line["kpi"]: (
            line["fact"],
            line["plan"],
            line["attainment"],
            line["factor"],
            line["contribution"],
        )
        for line in row["breakdown"]["lines"]
    }


# -- the standard scheme ------------------------------------------------------------------------
def test_thresholds_linear_accelerated_and_capped():
    assert [factor(a, 0.8, 2.0, 1.5) for a in (0.79, 0.8, 0.9, 1.0, 1.2, 2.0)] == [
        0.0, 0.8, 0.9, 1.0, 1.4, 1.5,
    ]  # fmt: skip


def test_the_bonus_of_each_person_by_hand(base):
    with base.session(readonly=True) as s:
        result = s.report("bonus", period="2026-03", as_of="2026-04-15")
    assert figures(result) == {
        "anna": (D("10000.00"), D("9400.00"), D("940.00"), D("8460.00"), 2),
        "boris": (D("10000.00"), D("14700.00"), D("0.00"), D("14700.00"), 0),
        "cora": (D("10000.00"), D("5000.00"), D("1500.00"), D("3500.00"), 7),
        "hanna": (D("20000.00"), D("0.00"), D("0.00"), D("0.00"), 0),
    }
    rows = {r["user"]: r for r in result.rows}
    assert lines(rows["anna"]) == {
        "attributed_revenue": ("1000.00", "1000.00", 1.0, 1.0, "5000.00"),
        "calls_outbound": (2, "2.50", 0.8, 0.8, "2400.00"),
        "overdue_tasks": (2, "2.00", 1.0, 1.0, "2000.00"),
    }
    assert lines(rows["boris"]) == {
        "attributed_revenue": ("2000.00", "1000.00", 2.0, 1.5, "7500.00"),
        "calls_outbound": (6, "5.00", 1.2, 1.4, "4200.00"),
        "overdue_tasks": (0, "1.00", None, 1.5, "3000.00"),
    }
    assert lines(rows["cora"]) == {
        "attributed_revenue": ("1000.00", "1000.00", 1.0, 1.0, "5000.00"),
        "calls_outbound": (3, "3.80", 0.7895, 0.0, "0.00"),
        "overdue_tasks": (7, "3.00", 0.4286, 0.0, "0.00"),
    }
    notes = {line["kpi"]: line["note"] for line in rows["boris"]["breakdown"]["lines"]}
    assert notes["overdue_tasks"] == "no overdue_tasks at all: counts as the cap"
    assert notes["attributed_revenue"] == "capped at 150%"
    hanna = rows["hanna"]["breakdown"]
    assert [line["note"] for line in hanna["lines"]] == [
        "no plan for attributed_revenue",
        "no plan for calls_outbound",
        "no plan for overdue_tasks",
    ]
    # penalties list the tasks; the cap applies
    anna = rows["anna"]["breakdown"]
    assert [(t["title"], t["done_at"] is None) for t in anna["penalties"]] == [
        ("T1", False),
        ("T2", True),
    ]
    assert [t["title"] for t in rows["cora"]["breakdown"]["penalties"]] == [
        f"C{d}" for d in range(2, 9)
    ]
    assert any(
        "35%" not in n and "30% of the gross" in n for n in rows["cora"]["breakdown"]["notes"]
    )
    # unattributed deals, with every reason
    assert [(d["amount"], d["reasons"]) for d in anna["unattributed"]] == [
        ("500.00", ["won straight from the first stage", "no interaction logged on the deal"])
    ]
    assert [(d["amount"], d["reasons"]) for d in hanna["unattributed"]] == [
        ("700.00", ["its moves were imported, not made in crmkit"])
    ]
    assert (rows["anna"]["unattributed"], rows["anna"]["unattributed_amount"]) == (1, D("500.00"))
    assert rows["boris"]["unattributed"] == 0
    assert result.summary["bonus"] == D("26660.00")  # 8460 + 14700 + 3500


def test_the_python_api_gives_bonus_objects(base):
    from crmkit.core.reports import ReportQuery, parse_period
    from crmkit.plugins.motivation import bonuses

    query = ReportQuery(
        period=parse_period("2026-03"), user="anna", options={"as_of": "2026-04-15"}
    )
    with base.session(readonly=True) as s:
        [(standing, bonus)] = bonuses(s, query)
    assert isinstance(standing, Standing) and isinstance(bonus, Bonus)
    assert standing.user.login == "anna" and standing.user.team == "north"
    assert standing.plans["calls_outbound"] == D("2.50")
    assert standing.facts["won_revenue"].value == D("1500.00")
    assert bonus.total == D("8460.00") and [t.title for t in bonus.penalties] == ["T1", "T2"]
    assert bonus.unattributed[0].reasons == (
        "won straight from the first stage",
        "no interaction logged on the deal",
    )


def test_one_person_is_an_auditable_breakdown(base, invoke):
    out = invoke(
        "report", "bonus", "--period", "2026-03", "--as-of", "2026-04-15", "--user", "anna",
        json=True,
    )  # fmt: skip
    assert out.exit_code == 0, out
    parts = [(r["part"], r["item"], r["amount"]) for r in out.json["rows"]]
    assert parts == [
        ("base", None, "10000.00"),
        ("kpi", "attributed_revenue", "5000.00"),
        ("kpi", "calls_outbound", "2400.00"),
        ("kpi", "overdue_tasks", "2000.00"),
        ("gross", None, "9400.00"),
        ("overdue task", parts[5][1], None),
        ("overdue task", parts[6][1], None),
        ("penalty", None, "-940.00"),
        ("bonus", None, "8460.00"),
        ("unattributed deal", parts[9][1], "500.00"),
    ]
    assert out.json["rows"][9]["note"] == (
        "won straight from the first stage; no interaction logged on the deal"
    )
    assert out.json["summary"]["bonus"] == "8460.00"
    table = invoke(
        "report", "bonus", "--period", "2026-03", "--as-of", "2026-04-15", "--user", "anna"
    )
    assert table.exit_code == 0 and "bonus: 8460.00" in table.output
    assert "1 won deals (500.00) do not count" in table.output


def test_forecast_by_hand(base, invoke):
    with base.session(readonly=True) as s:
        result = s.report("bonus", period="2026-03", as_of="2026-03-16", forecast=True)
    anna = next(r for r in result.rows if r["user"] == "anna")
    assert lines(anna) == {
        "attributed_revenue": ("880.00", "1000.00", 0.88, 0.88, "4400.00"),
        "calls_outbound": (3.88, "2.50", 1.552, 1.5, "4500.00"),
        "overdue_tasks": (1.94, "2.00", 1.0309, 1.061856, "2123.71"),
    }
    assert (anna["gross"], anna["penalty"], anna["bonus"]) == (
        D("11023.71"),
        D("551.19"),
        D("10472.52"),
    )
    assert any(n.startswith("forecast: additive KPIs") for n in anna["breakdown"]["notes"])
    assert "forecast: open pipeline, weighted: 880.00" in anna["breakdown"]["notes"]
    assert result.summary["forecast"] is True
    out = invoke(
        "report", "bonus", "--period", "2026-03", "--as-of", "2026-03-16", "--forecast",
        "--user", "anna", json=True,
    )  # fmt: skip
    assert out.exit_code == 0, out
    assert out.json["summary"]["bonus"] == "10472.52"


# -- access -------------------------------------------------------------------------------------
def test_a_manager_sees_their_own_and_a_head_their_team(base):
    seen = {}
    for login in ("anna", "hanna", "cora", "admin"):
        with base.session(as_user=login, readonly=True) as s:
            result = s.report("bonus", period="2026-03", as_of="2026-04-15")
            seen[login] = [r["user"] for r in result.rows]
    assert seen == {
        "anna": ["anna"],
        "hanna": ["anna", "boris", "hanna"],
        "cora": ["cora"],
        "admin": ["anna", "boris", "cora", "hanna"],
    }
    with base.session(as_user="hanna", readonly=True) as s:
        result = s.report("bonus", period="2026-03", as_of="2026-04-15", team="north")
    assert figures(result)["boris"][3] == D("14700.00")


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[plugin.motivation.weights]\nnope = 1\n", "weights.nope", "names no KPI"),
        ("[plugin.motivation.base]\nmanager = -1\n", "base.manager", "zero or more"),
        ("[plugin.motivation.base]\nboss = 1\n", "base.boss", "names no role"),
        ('[plugin.motivation]\nthreshold = "high"\n', "threshold", "must be a number"),
        ("[plugin.motivation]\ncap = 0.5\n", "cap", "at least 1"),
        ("[plugin.motivation]\npenalty_cap = 2\n", "penalty_cap", "between 0 and 1"),
        ('[plugin.motivation]\nscheme = "nope"\n', "scheme", "flat, standard"),
    ],
)
def test_bad_config_names_the_key(crm, invoke, text, key, words):
    with crm.session() as s:
        s.users.add("anna", role="manager")
    bad = CRM.open(configure(crm, text), plugins=crm.plugins)
    with bad, bad.session(readonly=True) as s, pytest.raises(ConfigError) as err:
        s.report("bonus", period="2026-03")
    assert err.value.field == f"plugin.motivation.{key}" and words in err.value.message
    out = invoke("report", "bonus", "--period", "2026-03")
    assert out.exit_code != 0
    assert f"plugin.motivation.{key}" in out.stderr and words in out.stderr
    assert "Traceback" not in out.stderr + out.output


# -- a scheme of a plugin -----------------------------------------------------------------------
def test_the_example_scheme_selected_in_the_config(base):
    flat = CRM.open(configure(base, '[plugin.motivation]\nscheme = "flat"\n'), plugins=base.plugins)
    with flat, flat.session(readonly=True) as s:
        result = s.report("bonus", period="2026-03", as_of="2026-04-15")
    assert {r["user"]: r["bonus"] for r in result.rows} == {
        "anna": D("800.00"),
        "boris": D("1000.00"),
        "cora": D("300.00"),
        "hanna": D("0.00"),
    }
    assert result.summary["scheme"] == "flat"
    bad = CRM.open(configure(base, "flat_per_deal = -5\n"), plugins=base.plugins)
    with bad, bad.session(readonly=True) as s, pytest.raises(ConfigError) as err:
        s.report("bonus", period="2026-03")
    assert err.value.field == "plugin.motivation.flat_per_deal"


def test_two_schemes_with_one_name_are_a_plugin_error(crm, register_plugin):
    class Twin:
        @hookimpl
        def crmkit_motivation_schemes(self):
            return [Scheme("flat", "again", lambda s, st: Bonus(base=D(0)))]

    register_plugin(Twin())
    with pytest.raises(PluginError, match="two plugins register the motivation scheme 'flat'"):
        _ = crm.motivation_schemes


def test_exports():
    assert crmkit.Scheme is Scheme and crmkit.Standing is Standing and crmkit.Bonus is Bonus


def test_a_few_statements_for_everyone_and_a_chart(base, invoke, tmp_path):
    """The KPIs (one statement per source), plans, tasks, deals: not one query per person."""
    from sqlalchemy import event

    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    with base.session(readonly=True) as s:
        event.listen(base.engine, "before_cursor_execute", count)
        try:
            s.report("bonus", period="2026-03", as_of="2026-04-15", forecast=True)
        finally:
            event.remove(base.engine, "before_cursor_execute", count)
    # people, teams, 5 KPI sources, plans, overdue tasks, unattributed deals, open pipeline
    assert len(statements) <= 12, statements
    chart = tmp_path / "bonus.svg"
    drawn = invoke(
        "report", "bonus", "--period", "2026-03", "--as-of", "2026-04-15", "--chart", chart
    )
    assert drawn.exit_code == 0, drawn
    assert "<svg" in chart.read_text("utf-8")
