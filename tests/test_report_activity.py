"""The ``activity`` report (issue 7): a small deployment where every figure is counted by hand.

The period is March 2026 (``2026-03``: 2026-03-01 <= t < 2026-04-01, the
deployment's zone is UTC) and ``--idle-days`` is 30, so the idle cut-off is
2026-03-02 00:00: a client in work is idle when it was created before then and
has no interaction from then to the period's end.

Teams and users: ``north`` (head ``hanna``, manager ``anna``), ``south``
(manager ``boris``); ``mark`` is a marketer and ``admin`` the admin, neither
listed. Every client was created on 2026-01-05 unless said otherwise.

====== ================================================================
anna   A1: call out 03-03, call in 03-10, letter 03-25, call out 04-02
       (after the period); mark's mailing 03-18 (a marketer's: not
       anna's). A2: meeting 03-15. A3: lost, no interaction. A4: created
       03-20, no interaction (too new to be idle). A5: email 02-20 (before
       the cut-off: idle).
boris  B1: call out 03-05, call out 03-06, email 03-07. B2: admin's email
       03-28 (not boris's, but B2 is contacted: not idle). B3: nothing
       (idle).
hanna  H1: meeting 03-12, call in 03-12.
====== ================================================================

So, per manager (interactions | out in meetings emails other | contacted | idle):

- anna: 4 (A1 x3 in March, A2 meeting) | 1 1 1 0 1 (the letter) | 2 (A1, A2) |
  1 (A5; A1, A2 contacted, A3 lost, A4 created after the cut-off);
- boris: 3 | 2 0 0 1 0 | 1 (B1) | 1 (B3);
- hanna: 2 | 0 1 1 0 0 | 1 (H1) | 0.

Tasks (created 02-01 unless said otherwise):

- anna: T1 due 03-10 done 03-08 (done); T2 due 03-10 done 03-12 (done,
  late); T3 due 03-20 open (overdue); T4 due 04-10 open (not yet due);
  T5 due 03-25 done 04-03 (open at the period's end: overdue); T6 created
  01-01 due 02-01 done 02-05 (late, but before the period: nothing). Done 2,
  overdue 3 (T2 late + T3, T5 open).
- boris: T7 due 02-15 open: overdue 1, done 0.

Totals: interactions 9, calls out 3, in 2, meetings 2, emails 1, other 1;
clients contacted 4 (A1, A2, B1, H1); idle 2; tasks done 2, overdue 4
(open 3, done late 1); interactions by other roles 2 (mark's mailing,
admin's email); by kind: call 5, meeting 2, email 1, letter 1.
"""

from __future__ import annotations

import datetime as dt

import pytest

from crmkit import PermissionDenied

UTC = dt.UTC


def at(month: int, day: int) -> dt.datetime:
    return dt.datetime(2026, month, day, 12, tzinfo=UTC)


@pytest.fixture
def base(crm):
    with crm.session() as s:
        s.teams.add("north")
        s.teams.add("south")
        s.users.add("hanna", role="head", team="north", name="Hanna Head")
        s.users.add("anna", role="manager", team="north", name="Anna Petrova")
        s.users.add("boris", role="manager", team="south", name="Boris Ivanov")
        s.users.add("mark", role="marketer")
        ids = {}
        for name, owner, created in [
            ("A1", "anna", at(1, 5)),
            ("A2", "anna", at(1, 5)),
            ("A3", "anna", at(1, 5)),
            ("A4", "anna", at(3, 20)),
            ("A5", "anna", at(1, 5)),
            ("B1", "boris", at(1, 5)),
            ("B2", "boris", at(1, 5)),
            ("B3", "boris", at(1, 5)),
            ("H1", "hanna", at(1, 5)),
        ]:
            ids[name] = s.clients.create(name, owner=owner, created_at=created).id
        s.clients.move(ids["A3"], "lost", reason="no_need", at=at(2, 1))
        s.interactions.log(ids["B2"], "email", topic="followup", outcome="sent", at=at(3, 28))

        def task(title, who, due, created=None, done=None):
            made = s.tasks.add(title, due=due, assignee=who, at=created or at(2, 1))
            if done is not None:
                s.tasks.done(made.id, at=done)

        task("T1", "anna", at(3, 10), done=at(3, 8))
        task("T2", "anna", at(3, 10), done=at(3, 12))
        task("T3", "anna", at(3, 20))
        task("T4", "anna", at(4, 10))
        task("T5", "anna", at(3, 25), done=at(4, 3))
        task("T6", "anna", at(2, 1), created=at(1, 1), done=at(2, 5))
        task("T7", "boris", at(2, 15))
    with crm.session(as_user="anna") as s:
        log = s.interactions.log
        log(
            ids["A1"],
            "call",
            topic="first_contact",
            outcome="no_answer",
            direction="outbound",
            at=at(3, 3),
        )
        log(
            ids["A1"],
            "call",
            topic="service",
            outcome="resolved",
            direction="inbound",
            at=at(3, 10),
        )
        log(ids["A1"], "letter", topic="contract", outcome="sent", at=at(3, 25))
        log(
            ids["A1"],
            "call",
            topic="service",
            outcome="resolved",
            direction="outbound",
            at=at(4, 2),
        )
        log(ids["A2"], "meeting", topic="presentation", outcome="postponed", at=at(3, 15))
        log(ids["A5"], "email", topic="followup", outcome="sent", at=at(2, 20))
    with crm.session(as_user="boris") as s:
        log = s.interactions.log
        log(
            ids["B1"],
            "call",
            topic="first_contact",
            outcome="no_answer",
            direction="outbound",
            at=at(3, 5),
        )
        log(
            ids["B1"],
            "call",
            topic="first_contact",
            outcome="no_answer",
            direction="outbound",
            at=at(3, 6),
        )
        log(ids["B1"], "email", topic="followup", outcome="sent", at=at(3, 7))
    with crm.session(as_user="hanna") as s:
        s.interactions.log(ids["H1"], "meeting", topic="service", outcome="postponed", at=at(3, 12))
        s.interactions.log(
            ids["H1"],
            "call",
            topic="service",
            outcome="resolved",
            direction="inbound",
            at=at(3, 12),
        )
    with crm.session(as_user="mark") as s:
        s.interactions.log(ids["A1"], "mailing", topic="newsletter", outcome="sent", at=at(3, 18))
    return ids


FIELDS = [
    "interactions",
    "calls_out",
    "calls_in",
    "meetings",
    "emails",
    "other",
    "clients_contacted",
    "idle_clients",
    "tasks_done",
    "tasks_overdue",
]
ANNA = (4, 1, 1, 1, 0, 1, 2, 1, 2, 3)
BORIS = (3, 2, 0, 0, 1, 0, 1, 1, 0, 1)
HANNA = (2, 0, 1, 1, 0, 0, 1, 0, 0, 0)


def figures(result):
    return {r["manager"]: tuple(r[f] for f in FIELDS) for r in result.rows}


def run(crm, as_user=None, **given):
    with crm.session(readonly=True, as_user=as_user) as s:
        return s.report("activity", period=given.pop("period", "2026-03"), **given)


def test_every_figure_by_hand(crm, base):
    result = run(crm)
    assert [r["manager"] for r in result.rows] == ["anna", "boris", "hanna"]
    assert figures(result) == {"anna": ANNA, "boris": BORIS, "hanna": HANNA}
    assert result.rows[0]["name"] == "Anna Petrova"
    assert [c.name for c in result.columns] == ["manager", *FIELDS]
    assert result.summary == {
        "managers": 3,
        "interactions": 9,
        "calls_out": 3,
        "calls_in": 2,
        "meetings": 2,
        "emails": 1,
        "other": 1,
        "by_kind": {"call": 5, "meeting": 2, "email": 1, "letter": 1},
        "clients_contacted": 4,
        "idle_clients": 2,
        "tasks_done": 2,
        "tasks_overdue": 4,
        "tasks_overdue_open": 3,
        "tasks_done_late": 1,
        "interactions_by_other_roles": 2,
    }


def test_idle_days_moves_the_cut_off(crm, base):
    """60 days: the cut-off is 2026-01-30; A5's email (02-20) is recent enough; B3 still idle."""
    result = run(crm, idle_days=60)
    assert {r["manager"]: r["idle_clients"] for r in result.rows} == {
        "anna": 0,
        "boris": 1,
        "hanna": 0,
    }
    assert result.columns[8].title == "Idle 60d+"


def test_filters_team_and_user(crm, base):
    assert figures(run(crm, team="north")) == {"anna": ANNA, "hanna": HANNA}
    by_user = run(crm, user="boris")
    assert figures(by_user) == {"boris": BORIS}
    assert by_user.summary["clients_contacted"] == 1
    assert by_user.summary["interactions_by_other_roles"] == 0  # admin's email is not boris's


def test_a_period_without_activity_lists_the_managers_with_zeros(crm, base):
    """2025-06: nothing happened; nobody is idle (every client was created in 2026)."""
    result = run(crm, period="2025-06")
    assert figures(result) == {m: (0,) * len(FIELDS) for m in ("anna", "boris", "hanna")}


def test_a_manager_sees_only_themselves(crm, base):
    result = run(crm, as_user="anna")
    assert figures(result) == {"anna": ANNA}
    # mark's mailing on anna's client A1 is readable by anna; admin's email on B2 is not
    assert result.summary["interactions_by_other_roles"] == 1
    assert result.summary["clients_contacted"] == 2
    with crm.session(readonly=True, as_user="boris") as s:
        assert figures(s.report("activity", period="2026-03")) == {"boris": BORIS}


def test_a_head_sees_their_team(crm, base):
    result = run(crm, as_user="hanna")
    assert figures(result) == {"anna": ANNA, "hanna": HANNA}
    assert result.summary["clients_contacted"] == 3


def test_a_marketer_may_not_read_interactions(crm, base):
    with crm.session(readonly=True, as_user="mark") as s, pytest.raises(PermissionDenied):
        s.report("activity", period="2026-03")


def test_cli_table_json_csv(crm, base, invoke):
    table = invoke("report", "activity", "--period", "2026-03")
    assert table.exit_code == 0, table.output
    assert "Manager activity, 2026-03" in table.output
    assert "anna" in table.output and "interactions by other roles: 2" in table.output
    done = invoke("report", "activity", "--period", "2026-03", "--idle-days", "60", json=True)
    assert done.exit_code == 0, done.output
    assert {r["manager"]: r["idle_clients"] for r in done.json["rows"]} == {
        "anna": 0,
        "boris": 1,
        "hanna": 0,
    }
    csv = invoke("report", "activity", "--period", "2026-03", "--format", "csv")
    lines = csv.output.splitlines()
    assert lines[0] == "manager," + ",".join(FIELDS)
    assert lines[1] == "anna," + ",".join(map(str, ANNA))
    mine = invoke("report", "activity", "--period", "2026-03", as_user="boris", json=True)
    assert [r["manager"] for r in mine.json["rows"]] == ["boris"]
    refused = invoke("report", "activity", "--period", "2026-03", as_user="mark")
    assert refused.exit_code == 5 and "may not read interactions" in refused.stderr
    bad = invoke("report", "activity", "--idle-days", "0")
    assert bad.exit_code == 2 and "idle_days" in bad.output + bad.stderr


def test_the_chart_is_a_real_png_and_svg(crm, base, invoke, tmp_path):
    png = tmp_path / "activity.png"
    drawn = invoke("report", "activity", "--period", "2026-03", "--chart", png)
    assert drawn.exit_code == 0, drawn.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = run(crm)
    svg = crm.report("activity").draw(result, tmp_path / "activity.svg")
    text = svg.read_text("utf-8")
    assert "<svg" in text and "Activity per manager, 2026-03" in text
    empty = run(crm, period="2025-06")
    assert crm.report("activity").draw(empty, tmp_path / "empty.png").stat().st_size > 0
