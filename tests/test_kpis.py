"""KPIs (issue 8): the contract, the built-in KPIs counted by hand, one statement per source.

The period is March 2026 (``2026-03``, UTC). Teams: ``north`` (head
``hanna``, managers ``anna`` and ``boris``), ``south`` (manager ``cora``).
Deals are in the pipeline ``quick`` (stages talk, offer; no gates; skipping allowed).

===== ======================================================================
anna  clients A1 (created 02-01), A2 (03-05), A3 (03-10, lost 03-12).
      Interactions in March: A1 call out 03-02, call out 03-03, meeting
      03-04 (on D1), email proposal sent 03-06; A2 call in 03-07; and A1
      call out 04-02 (after the period).
      Deals: D1 (A1, 1000) talk 03-01, offer 03-05, won 03-20: complete (the
      meeting is on it). D2 (A2, 500) talk 03-06, won 03-15 straight from
      the first stage, no interaction: incomplete. D3 (A1, 700) lost 03-18.
      D4 (A1, 900) won 04-05 (after the period).
      Invoices: D1 1000 issued 03-10 paid 03-25; D4 900 issued 03-28.
      Tasks: T1 due 03-05 done 03-07 (late); T2 due 03-20 open (overdue);
      T3 due 04-10 open (not due); T4 due 03-03 done 03-02.
boris client B1 (01-01). Call out 03-09 on D5. D5 (B1, 2000) talk 02-10,
      offer 02-20, won 03-15, complete. Invoice 2000 issued 02-25 paid 03-02.
cora  nothing.
===== ======================================================================

anna: calls out 2, in 1, meetings 1, proposals 1, contacts 5, clients in
work 2 (A3 lost), contact frequency 5 / 2 = 2.5, new clients 2 (A2, A3),
invoices issued 2, payments 1000, won 2, revenue 1500, attributed 1000,
win rate 2 / 3, average 750, complete records 1 / 2, tasks done 2 (T1, T4),
overdue 2 (T1 late, T2 open).

boris: calls out 1, contacts 1, clients in work 1, frequency 1.0, new 0,
invoices 0, payments 2000, won 1, revenue 2000, attributed 2000, win rate
1.0, average 2000, complete 1.0, tasks 0, overdue 0.

north together (anna + boris + hanna, who has nothing): revenue 3500, win
rate (2 + 1) / (3 + 1) = 0.75, contact frequency (5 + 1) / (2 + 1) = 2.0.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import event

import crmkit
from crmkit import KPI, Fact, KPISource, PluginError, ValidationError, Window, hookimpl
from crmkit.core.kpis import collect, run, total

UTC = dt.UTC


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
                "stages": [{"name": "talk"}, {"name": "offer"}],
            }
        ]


@pytest.fixture
def crmkit_plugins():
    return [Quick()]


@pytest.fixture
def base(crm):
    with crm.session() as s:
        s.teams.add("north")
        s.teams.add("south")
        s.users.add("hanna", role="head", team="north")
        s.users.add("anna", role="manager", team="north")
        s.users.add("boris", role="manager", team="north")
        s.users.add("cora", role="manager", team="south")
        c = {}
        for name, owner, created in [
            ("A1", "anna", at(2, 1)),
            ("A2", "anna", at(3, 5)),
            ("A3", "anna", at(3, 10)),
            ("B1", "boris", at(1, 1)),
        ]:
            c[name] = s.clients.create(name, owner=owner, created_at=created).id
        s.clients.move(c["A3"], "lost", reason="no_need", at=at(3, 12))

        def deal(client, owner, amount, opened):
            return s.deals.open(
                c[client], pipeline="quick", amount=amount, owner=owner, at=opened
            ).id

        d1 = deal("A1", "anna", 1000, at(3, 1))
        s.deals.move(d1, "offer", at=at(3, 5))
        d2 = deal("A2", "anna", 500, at(3, 6))
        d3 = deal("A1", "anna", 700, at(3, 2))
        d4 = deal("A1", "anna", 900, at(3, 3))
        d5 = deal("B1", "boris", 2000, at(2, 10))
        s.deals.move(d5, "offer", at=at(2, 20))
        i1 = s.invoices.issue(d1, 1000, at=at(3, 10))
        s.invoices.pay(i1.id, at=at(3, 25))
        s.invoices.issue(d4, 900, at=at(3, 28))
        i5 = s.invoices.issue(d5, 2000, at=at(2, 25))
        s.invoices.pay(i5.id, at=at(3, 2))

        def task(title, due, done=None):
            made = s.tasks.add(title, due=due, assignee="anna", at=at(2, 1))
            if done is not None:
                s.tasks.done(made.id, at=done)

        task("T1", at(3, 5), done=at(3, 7))
        task("T2", at(3, 20))
        task("T3", at(4, 10))
        task("T4", at(3, 3), done=at(3, 2))
    with crm.session(as_user="anna") as s:
        log = s.interactions.log
        call = {"topic": "first_contact", "outcome": "no_answer"}
        log(c["A1"], "call", direction="outbound", at=at(3, 2), **call)
        log(c["A1"], "call", direction="outbound", at=at(3, 3), **call)
        log(
            c["A1"], "meeting", topic="presentation", outcome="needs_identified",
            deal_id=d1, at=at(3, 4),
        )  # fmt: skip
        log(c["A1"], "email", topic="proposal", outcome="sent", at=at(3, 6))
        log(c["A2"], "call", direction="inbound", at=at(3, 7), **call)
        log(c["A1"], "call", direction="outbound", at=at(4, 2), **call)
        s.deals.win(d1, at=at(3, 20))
        s.deals.win(d2, at=at(3, 15))
    with crm.session() as s:
        s.deals.lose(d3, "price", at=at(3, 18))
        s.deals.move(d4, "offer", at=at(3, 29))
        s.deals.win(d4, at=at(4, 5))
    with crm.session(as_user="boris") as s:
        s.interactions.log(c["B1"], "call", direction="outbound", deal_id=d5, at=at(3, 9), **call)
        s.deals.win(d5, at=at(3, 15))
    return c


ANNA = {
    "calls_outbound": 2,
    "calls_inbound": 1,
    "meetings": 1,
    "proposals_sent": 1,
    "contacts": 5,
    "clients_in_work": 2,
    "contact_frequency": 2.5,
    "new_clients": 2,
    "invoices_issued": 2,
    "payments": Decimal("1000.00"),
    "won_deals": 2,
    "won_revenue": Decimal("1500.00"),
    "attributed_revenue": Decimal("1000.00"),
    "win_rate": 0.6667,
    "average_deal_size": Decimal("750.00"),
    "complete_records": 0.5,
    "tasks_done": 2,
    "overdue_tasks": 2,
}
BORIS = {
    **dict.fromkeys(ANNA, 0),
    "calls_outbound": 1,
    "contacts": 1,
    "clients_in_work": 1,
    "contact_frequency": 1.0,
    "payments": Decimal("2000.00"),
    "won_deals": 1,
    "won_revenue": Decimal("2000.00"),
    "attributed_revenue": Decimal("2000.00"),
    "win_rate": 1.0,
    "average_deal_size": Decimal("2000.00"),
    "complete_records": 1.0,
}


def test_every_built_in_kpi_counted_by_hand(crm, base):
    with crm.session(readonly=True) as s:
        result = s.report("kpi", period="2026-03")
    rows = {row["user"]: row for row in result.rows}
    assert sorted(rows) == ["anna", "boris", "cora", "hanna"]
    assert {k: rows["anna"][k] for k in ANNA} == ANNA
    assert {k: rows["boris"][k] for k in BORIS} == BORIS
    assert rows["cora"]["won_revenue"] == 0 and rows["cora"]["win_rate"] is None
    north = {}
    with crm.session(readonly=True) as s:
        north = s.report("kpi", period="2026-03", team="north").summary
    assert north["won_revenue"] == Decimal("3500.00")
    assert north["win_rate"] == 0.75
    assert north["contact_frequency"] == 2.0
    assert north["people"] == 3


def test_one_statement_per_source_for_the_whole_team(crm, base):
    """18 KPIs for everyone: five statements (one per source), not one per person per KPI."""
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    with crm.session(readonly=True) as s:
        ids = tuple(u.id for u in s.users.list())
        window = Window(at(3, 1).replace(day=1, hour=0), at(4, 1).replace(hour=0), ids)
        event.listen(crm.engine, "before_cursor_execute", count)
        try:
            facts = run(s, list(crm.kpis.values()), window)
        finally:
            event.remove(crm.engine, "before_cursor_execute", count)
    assert len(statements) == 5
    anna = s_id(crm, "anna")
    assert facts["win_rate"][anna] == Fact(2, 3)
    assert facts["contact_frequency"][anna] == Fact(5, 2)
    assert total(facts["win_rate"].values()).value == 0.75


def s_id(crm, login):
    with crm.session(readonly=True) as s:
        return s.users.get(login).id


def test_each_person_sees_their_own_figures_and_heads_their_team(crm, base):
    seen = {}
    for login in ("anna", "hanna", "cora", "admin"):
        with crm.session(as_user=login, readonly=True) as s:
            seen[login] = [r["user"] for r in s.report("kpi", period="2026-03").rows]
    assert seen == {
        "anna": ["anna"],
        "hanna": ["anna", "boris", "hanna"],
        "cora": ["cora"],
        "admin": ["anna", "boris", "cora", "hanna"],
    }


def test_the_kpis_option_and_the_cli(crm, base, invoke):
    listed = invoke("kpi", "list", json=True)
    assert listed.exit_code == 0
    ids = [k["id"] for k in listed.json]
    assert {"calls_outbound", "won_revenue", "overdue_tasks", "complete_records"} <= set(ids)
    overdue = next(k for k in listed.json if k["id"] == "overdue_tasks")
    assert (overdue["direction"], overdue["kind"], overdue["unit"]) == ("lower", "process", "count")
    out = invoke(
        "report", "kpi", "--period", "2026-03", "--user", "anna",
        "--kpis", "won_revenue,win_rate", json=True,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert out.json["rows"] == [
        {"user": "anna", "name": "anna", "won_revenue": "1500.00", "win_rate": 0.6667}
    ]
    bad = invoke("report", "kpi", "--period", "2026-03", "--kpis", "won_revenue,nope")
    assert bad.exit_code != 0
    assert "Error: kpi: no KPI 'nope' (known: " in bad.stderr and "Traceback" not in bad.stderr


def test_a_plugin_kpi_with_its_own_source_and_a_python_fallback(crm, base):
    from sqlalchemy import func, select

    def rows(session, window):
        t = session.table("deals")
        return select(t.c.owner_id.label("user_id"), t.c.amount).where(
            t.c.owner_id.in_(window.user_ids)
        )

    deals = KPISource("all_deals", rows)

    def zeros(session, window):
        return {uid: Fact(7) for uid in window.user_ids}

    class Mine:
        @hookimpl
        def crmkit_kpis(self):
            return [
                KPI("deal_money", "Money in deals", deals, lambda r: func.sum(r.c.amount)),
                KPI("seven", "Seven", compute=zeros, unit="number"),
            ]

    crm.plugins.pm.register(Mine(), name="mine")
    crm.refresh()
    with crm.session(readonly=True) as s:
        result = s.report("kpi", period="2026-03", user="anna", kpis="deal_money,seven")
    assert result.rows[0]["deal_money"] == Decimal("3100.00")  # 1000 + 500 + 700 + 900
    assert result.rows[0]["seven"] == 7


def test_bad_kpis_are_refused_with_the_field():
    with pytest.raises(ValidationError) as bad_id:
        KPI("Calls-Out", "x", compute=lambda s, w: {})
    assert bad_id.value.field == "kpi.id"
    with pytest.raises(ValidationError) as bad_unit:
        KPI("calls", "x", compute=lambda s, w: {}, unit="apples")
    assert bad_unit.value.field == "kpi.unit" and "count, money" in bad_unit.value.message
    with pytest.raises(ValidationError, match="needs a source and a value"):
        KPI("calls", "x")
    one = KPI("calls", "x", compute=lambda s, w: {})
    with pytest.raises(PluginError, match="two plugins register the KPI 'calls'"):
        collect([one, one])
    with pytest.raises(PluginError, match="per 'nope', which no plugin registers"):
        collect([KPI("calls", "x", compute=lambda s, w: {}, per="nope")])


def test_attainment_in_each_direction():
    up = KPI("calls", "x", compute=lambda s, w: {})
    down = KPI("late", "x", compute=lambda s, w: {}, direction="lower")
    assert up.attainment(80, 100) == 0.8 and up.attainment(5, 0) is None
    assert down.attainment(4, 2) == 0.5 and down.attainment(0, 2) == float("inf")
    assert up.better(100, 100) and not down.better(3, 2)


def test_exports():
    assert crmkit.KPISource is KPISource
