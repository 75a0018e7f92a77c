"""Plans (``s.plans``, ``crmkit plan``) and the ``plan`` report, every figure counted by hand.

The KPIs are this module's own (``t_calls``: calls logged, higher is better;
``t_letters``: letters logged, lower is better), so the tests do not depend
on the built-in ones. The deployment's zone is UTC.

Teams: ``north`` (head ``hanna``, managers ``anna`` and ``boris``) with
``north-east`` nested in it (manager ``dima``); ``south`` (manager ``vera``).

Interactions in March 2026 (``2026-03``, 31 days), the report looking from the
end of 2026-03-10 (``--as-of 2026-03-10``: 10 days elapsed, 21 remaining):

====== =================================================================
anna   calls 03-02, 03-05, 03-09 (3); a call 03-20 (after the as-of day:
       not counted); a letter 03-04 (1)
boris  a call 03-03 (1)
dima   calls 03-04, 03-06 (2)
vera   ten calls 03-01 .. 03-10 (10)
====== =================================================================

Plans of March: team north t_calls 310, anna t_calls 62, anna t_letters 3,
vera t_calls 31. So (plan | fact | attainment | projection | on track | gap/day):

- north t_calls: 310 | 6 (anna 3 + boris 1 + dima 2 + hanna 0, north-east
  included) | 6/310 = 0.0194 | 6/10*31 = 18.6 | no | (310-6)/21 = 14.48;
- anna t_calls: 62 | 3 | 3/62 = 0.0484 | 9.3 | no | (62-3)/21 = 2.81;
- anna t_letters (lower): 3 | 1 | 3/1 = 3.0 | 3.1 | no (3.1 > 3) |
  allowance (3-1)/21 = 0.10;
- vera t_calls: 31 | 10 | 10/31 = 0.3226 | 31.0 | yes (31 >= 31) | 21/21 = 1.0.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest
from sqlalchemy import case, func, select

import crmkit
from crmkit import NotFound, PermissionDenied, ValidationError, hookimpl
from crmkit.core.plans import split_amounts

UTC = dt.UTC
D = decimal.Decimal


def _rows(session, window):
    t = session.table("interactions")
    return select(t.c.user_id, t.c.kind).where(
        t.c.user_id.in_(window.user_ids),
        t.c.occurred_at >= window.start,
        t.c.occurred_at < window.end,
    )


class TestKPIs:
    @hookimpl
    def crmkit_kpis(self):
        source = crmkit.KPISource("t_interactions", _rows)
        return [
            crmkit.KPI(
                "t_calls",
                "Calls (test)",
                source=source,
                value=lambda r: func.sum(case((r.c.kind == "call", 1), else_=0)),
            ),
            crmkit.KPI(
                "t_letters",
                "Letters (test)",
                source=source,
                value=lambda r: func.sum(case((r.c.kind == "letter", 1), else_=0)),
                direction="lower",
            ),
        ]


@pytest.fixture
def crmkit_plugins():
    return [TestKPIs()]


def at(month: int, day: int) -> dt.datetime:
    return dt.datetime(2026, month, day, 12, tzinfo=UTC)


@pytest.fixture
def base(crm):
    with crm.session() as s:
        s.teams.add("north")
        s.teams.add("north-east", parent="north")
        s.teams.add("south")
        s.users.add("hanna", role="head", team="north", name="Hanna Head")
        s.users.add("anna", role="manager", team="north", name="Anna Petrova")
        s.users.add("boris", role="manager", team="north")
        s.users.add("dima", role="manager", team="north-east")
        s.users.add("vera", role="manager", team="south")
        s.users.add("olga", role="manager", team="north")
        for login in ("anna", "boris", "dima", "vera"):
            s.clients.create(f"Client of {login}", owner=login)
    calls = {
        "anna": [at(3, 2), at(3, 5), at(3, 9), at(3, 20)],
        "boris": [at(3, 3)],
        "dima": [at(3, 4), at(3, 6)],
        "vera": [at(3, d) for d in range(1, 11)],
    }
    for login, times in calls.items():
        with crm.session(as_user=login) as s:
            client = s.clients.list()[0]
            for when in times:
                s.interactions.log(
                    client.id,
                    "call",
                    topic="first_contact",
                    outcome="no_answer",
                    direction="outbound",
                    at=when,
                )
            if login == "anna":
                s.interactions.log(
                    client.id, "letter", topic="contract", outcome="sent", at=at(3, 4)
                )
    with crm.session() as s:
        s.users.update("olga", active=False)
    return crm


def count_plans(crm) -> int:
    with crm.connect() as conn:
        return conn.execute(select(func.count()).select_from(crm.metadata.tables["plans"])).scalar()


# -- the Python API -----------------------------------------------------------------------
def test_set_replaces_and_lists(base):
    with base.session() as s:
        first = s.plans.set("t_calls", period="2026-03", target="62", user="anna", note="q1")
        again = s.plans.set("t_calls", period="2026-03-01..2026-03-31", target=70, user="anna")
        team = s.plans.set("t_calls", period="2026-03", target="310.5", team="north")
        assert again.id == first.id and again.target == D("70.00") and again.note == "q1"
        assert (again.start, again.end) == (dt.date(2026, 3, 1), dt.date(2026, 4, 1))
        assert again.period == "2026-03-01..2026-03-31" and again.team == "north"
        assert (team.scope, team.user, team.team, team.target) == (
            "team",
            None,
            "north",
            D("310.50"),
        )
        s.plans.set("t_letters", period="2026-Q1", target=3, user="vera")
        listed = s.plans.list(period="2026-03")
        assert [(p.kpi, p.who, p.period) for p in listed] == [
            ("t_letters", "vera", "2026-Q1"),
            ("t_calls", "north", "2026-03"),
            ("t_calls", "anna", "2026-03-01..2026-03-31"),
        ]
        assert [p.who for p in s.plans.list(period="2026-03", exact=True)] == ["north", "anna"]
        assert [p.who for p in s.plans.list(team="north")] == ["north", "anna"]
        assert [p.who for p in s.plans.list(user="vera")] == ["vera"]
        assert [p.who for p in s.plans.list(kpi="t_letters")] == ["vera"]
        assert [e["action"] for e in s.events("plan", first.id)] == ["created", "updated"]
        gone = s.plans.delete(team.id)
        assert gone.id == team.id and len(s.plans.list()) == 2
        with pytest.raises(NotFound):
            s.plans.get(team.id)


def test_bad_input_names_every_field_and_writes_nothing(base):
    with base.session() as s:
        with pytest.raises(ValidationError) as err:
            s.plans.set("nope", period="2026-13", target="-5", user="anna", team="north")
        fields = {p.field: p.reason for p in err.value.problems}
        assert set(fields) == {"kpi", "period", "target", "user"}
        assert "t_calls" in fields["kpi"] and "t_letters" in fields["kpi"]
        assert "not both" in fields["user"] and "zero or more" in fields["target"]
        cases = [
            ({"target": "lots", "user": "anna"}, "target", "not a number"),
            ({"target": "1.005", "user": "anna"}, "target", "two decimals"),
            ({"target": 1}, "user", "a user or a team"),
            ({"target": 1, "user": "nobody"}, "user", "nobody"),
            ({"target": 1, "team": "west"}, "team", "west"),
            ({"target": 1, "user": "olga"}, "user", "not active"),
        ]
        for given, field, words in cases:
            with pytest.raises(ValidationError) as err:
                s.plans.set("t_calls", period="2026-03", **given)
            assert err.value.problems[0].field == field and words in str(err.value)
    assert count_plans(base) == 0


def test_split_rounds_to_the_cent_and_replaces_the_earlier_split(base):
    assert split_amounts(D("100.00"), [1, 1, 1]) == [D("33.34"), D("33.33"), D("33.33")]
    assert split_amounts(D("0.05"), [1, 1]) == [D("0.03"), D("0.02")]
    assert split_amounts(D("10.00"), [D("0.5"), 2, D("2.5")]) == [D("1.00"), D("4.00"), D("5.00")]
    with base.session() as s:
        team = s.plans.set("t_calls", period="2026-04", target="100.01", team="north")
        # the active members of north and north-east: anna, boris, dima, hanna (olga is inactive)
        equal = s.plans.split("t_calls", period="2026-04", team="north")
        assert [(p.user, p.target, p.split_from) for p in equal] == [
            ("anna", D("25.01"), team.id),
            ("boris", D("25.00"), team.id),
            ("dima", D("25.00"), team.id),
            ("hanna", D("25.00"), team.id),
        ]
        assert equal[2].team == "north-east"
        weighted = s.plans.split(
            "t_calls", period="2026-04", team="north", weights={"dima": 1, "anna": 1, "boris": "1"}
        )
        assert [(p.user, p.target) for p in weighted] == [
            ("anna", D("33.34")),  # 10001 cents / 3 = 3333.67: two cents left over
            ("boris", D("33.34")),
            ("dima", D("33.33")),
        ]
        assert weighted[0].id == equal[0].id  # the member's plan is replaced, not duplicated
        members = s.plans.list(period="2026-04", exact=True, kpi="t_calls")
        assert [p.who for p in members] == ["north", "anna", "boris", "dima"]  # hanna's is gone
        assert sum(p.target for p in members if p.scope == "user") == team.target
        # weights of 3 and 1 on 100.01: 75.0075 -> 75.01, 25.0025 -> 25.00
        by_three = s.plans.split(
            "t_calls", period="2026-04", team="north", weights={"anna": 3, "boris": 1}
        )
        assert [(p.user, p.target) for p in by_three] == [
            ("anna", D("75.01")),
            ("boris", D("25.00")),
        ]
        assert sum(p.target for p in by_three) == team.target
        with pytest.raises(ValidationError) as err:
            s.plans.split(
                "t_calls", period="2026-04", team="north", weights={"vera": 1, "anna": -1}
            )
        assert {p.field for p in err.value.problems} == {"weights.vera", "weights.anna"}
        with pytest.raises(NotFound, match="no plan of t_calls"):
            s.plans.split("t_calls", period="2026-05", team="north")
    assert count_plans(base) == 3


def test_access_managers_read_own_and_team_heads_plan_their_team(base):
    with base.session() as s:
        s.plans.set("t_calls", period="2026-03", target=310, team="north")
        south = s.plans.set("t_calls", period="2026-03", target=31, team="south")
        s.plans.set("t_calls", period="2026-03", target=62, user="anna")
        s.plans.set("t_calls", period="2026-03", target=40, user="boris")
        s.plans.set("t_calls", period="2026-03", target=31, user="vera")
        s.plans.set("t_calls", period="2026-03", target=20, user="dima")
    with base.session(as_user="anna") as s:
        assert [p.who for p in s.plans.list()] == ["north", "anna"]
        with pytest.raises(PermissionDenied):
            s.plans.set("t_calls", period="2026-03", target=100, user="anna")
        with pytest.raises(PermissionDenied):
            s.plans.set("t_calls", period="2026-04", target=100, user="anna")
    with base.session(as_user="dima") as s:
        assert [p.who for p in s.plans.list()] == ["dima"]  # north-east has no team plan
    with base.session(as_user="hanna") as s:
        assert [p.who for p in s.plans.list()] == ["north", "anna", "boris", "dima"]
        done = s.plans.set("t_calls", period="2026-03", target=45, user="boris")
        assert done.target == D("45.00")
        s.plans.set("t_calls", period="2026-04", target=5, team="north-east")
        with pytest.raises(PermissionDenied):
            s.plans.set("t_calls", period="2026-03", target=1, user="vera")
        with pytest.raises(PermissionDenied):
            s.plans.set("t_calls", period="2026-03", target=1, team="south")
        with pytest.raises(NotFound):  # a plan a head may not read is not found
            s.plans.delete(south.id)
    assert count_plans(base) == 7


# -- the report ---------------------------------------------------------------------------
@pytest.fixture
def planned(base):
    with base.session() as s:
        s.plans.set("t_calls", period="2026-03", target=310, team="north")
        s.plans.set("t_calls", period="2026-03", target=62, user="anna")
        s.plans.set("t_letters", period="2026-03", target=3, user="anna")
        s.plans.set("t_calls", period="2026-03", target=31, user="vera")
        s.plans.set("t_calls", period="2026-04", target=99, user="vera")  # another period
    return base


FIGURES = ("plan", "fact", "attainment", "projection", "on_track", "gap_per_day")


def figures(result):
    return {(r["who"], r["kpi"]): tuple(r[k] for k in FIGURES) for r in result.rows}


def test_the_plan_report_by_hand(planned):
    with planned.session(readonly=True) as s:
        result = s.report("plan", period="2026-03", as_of="2026-03-10")
    assert figures(result) == {
        ("north", "t_calls"): (310.0, 6.0, 0.0194, 18.6, False, 14.48),
        ("anna", "t_calls"): (62.0, 3.0, 0.0484, 9.3, False, 2.81),
        ("anna", "t_letters"): (3.0, 1.0, 3.0, 3.1, False, 0.1),
        ("vera", "t_calls"): (31.0, 10.0, 0.3226, 31.0, True, 1.0),
    }
    assert [r["who"] for r in result.rows] == ["north", "anna", "vera", "anna"]
    assert result.summary["plans"] == 4 and result.summary["on_track"] == 1
    assert result.summary["behind"] == 3
    assert (result.summary["elapsed_days"], result.summary["period_days"]) == (10.0, 31.0)
    with planned.session(readonly=True) as s:
        north = s.report("plan", period="2026-03", as_of="2026-03-10", team="north")
        vera = s.report("plan", period="2026-03", as_of="2026-03-10", user="vera")
        # the period over: projection = fact, no gap per day (no day left)
        over = s.report("plan", period="2026-03", as_of="2026-04-15", user="anna")
        # not started: no projection; the gap is spread over the whole period
        ahead = s.report("plan", period="2026-04", as_of="2026-03-10")
        default = s.report("plan", as_of="2026-04-02")
    assert [r["who"] for r in north.rows] == ["north", "anna", "anna"]
    assert [r["who"] for r in vera.rows] == ["vera"]
    assert figures(over)[("anna", "t_calls")] == (62.0, 4.0, 0.0645, 4.0, False, None)
    assert figures(ahead) == {("vera", "t_calls"): (99.0, 0.0, 0.0, None, None, 3.3)}
    assert default.period.label == "2026-04" and len(default.rows) == 1


def test_lower_is_better_met_with_nothing(planned):
    with planned.session() as s:
        s.plans.set("t_letters", period="2026-03", target=2, user="vera")
    with planned.session(readonly=True) as s:
        result = s.report("plan", period="2026-03", as_of="2026-03-10", user="vera")
    assert figures(result)[("vera", "t_letters")] == (2.0, 0.0, None, 0.0, True, 0.1)


def test_the_report_follows_access(planned):
    with planned.session(readonly=True, as_user="anna") as s:
        mine = s.report("plan", period="2026-03", as_of="2026-03-10")
    # anna sees her plans and her team's, with the team's fact
    assert figures(mine)[("north", "t_calls")][1] == 6.0
    assert sorted(figures(mine)) == [
        ("anna", "t_calls"),
        ("anna", "t_letters"),
        ("north", "t_calls"),
    ]
    with planned.session(readonly=True) as s, pytest.raises(ValidationError) as err:
        s.report("plan", period="2026-03", as_of="2026-02-30")
    assert err.value.problems[0].field == "as_of"


# -- the command line ---------------------------------------------------------------------
def test_plan_commands(base, invoke, tmp_path):
    done = invoke(
        "plan",
        "set",
        "--kpi",
        "t_calls",
        "--period",
        "2026-03",
        "--target",
        "310",
        "--team",
        "north",
    )
    assert done.exit_code == 0, done
    assert done.output == "Plan #1: t_calls 310.00 for team north, 2026-03\n"
    invoke(
        "plan", "set", "--kpi", "t_calls", "--period", "2026-03", "--target", "62", "--user", "anna"
    )
    split = invoke(
        "plan", "split", "--kpi", "t_calls", "--period", "2026-03", "--team", "north",
        "--weight", "anna=2", "--weight", "boris=1",
    )  # fmt: skip
    assert split.exit_code == 0, split
    assert split.output == (
        "Plan #2: t_calls 206.67 for user anna, 2026-03\n"
        "Plan #3: t_calls 103.33 for user boris, 2026-03\n"
    )
    listed = invoke("plan", "list", "--period", "2026-03", json=True)
    assert [
        (p["who"] if "who" in p else p["user"] or p["team"], p["target"]) for p in listed.json
    ] == [
        ("north", "310.00"),
        ("anna", "206.67"),
        ("boris", "103.33"),
    ]
    csv_out = invoke("plan", "list", "--user", "anna", "--format", "csv")
    assert csv_out.output.splitlines() == [
        "id,kpi,period,scope,user,team,target,split_from,note",
        "2,t_calls,2026-03,user,anna,north,206.67,1,",
    ]
    table = invoke("plan", "list", as_user="anna")
    assert "north" in table.output and "boris" not in table.output
    report = invoke("report", "plan", "--period", "2026-03", "--as-of", "2026-03-10", json=True)
    assert report.exit_code == 0, report
    rows = {(r["who"], r["kpi"]): r for r in report.json["rows"]}
    assert rows[("north", "t_calls")]["fact"] == 6.0
    assert rows[("anna", "t_calls")]["attainment"] == round(3 / 206.67, 4)
    chart = tmp_path / "plan.svg"
    drawn = invoke(
        "report", "plan", "--period", "2026-03", "--as-of", "2026-03-10", "--chart", chart
    )
    assert drawn.exit_code == 0, drawn
    assert "<svg" in chart.read_text("utf-8")
    gone = invoke("plan", "delete", "3")
    assert gone.exit_code == 0 and gone.output.startswith("Deleted plan #3: ")


def test_plan_command_errors(base, invoke):
    bad = invoke(
        "plan", "set", "--kpi", "nope", "--period", "soon", "--target", "x", "--user", "anna"
    )
    assert (bad.exit_code == 2 and bad.exception is None) or isinstance(bad.exception, SystemExit)
    for words in ("kpi", "period", "target", "t_calls"):
        assert words in bad.stderr
    assert "Traceback" not in bad.stderr + bad.output
    denied = invoke(
        "plan", "set", "--kpi", "t_calls", "--period", "2026-03", "--target", "1", "--user", "anna",
        as_user="anna",
    )  # fmt: skip
    assert denied.exit_code == 5 and "may not create" in denied.stderr
    missing = invoke("plan", "delete", "42")
    assert missing.exit_code == 3 and "no plan with id 42" in missing.stderr
    weight = invoke(
        "plan", "split", "--kpi", "t_calls", "--period", "2026-03", "--team", "north",
        "--weight", "anna",
    )  # fmt: skip
    assert weight.exit_code != 0 and "KEY=VALUE" in weight.stderr
    assert count_plans(base) == 0
    assert json.loads(invoke("plan", "list", json=True).output) == []
