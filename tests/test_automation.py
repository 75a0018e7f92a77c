"""Automation rules: triggers, conditions, actions, once per event, rollback, the loop limit."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from crmkit import CRM, ConfigError, hookimpl
from crmkit.core.automation import Action, Context
from crmkit.core.schema import utcnow

UTC = dt.UTC

INTERESTED = """
[automation.rules.interested_call]
title = "An interested outbound call opens a deal and a follow-up by workload"
event = "interaction.logged"
when = { properties = { interaction = { properties = { outcome = { const = "interested" }, direction = { const = "outbound" } } } } }
actions = [
    { do = "open_deal", pipeline = "b2b", title = "{client.name}: first order" },
    { do = "create_task", title = "Follow up {client.name}", due = "+1d", steps = ["Call", "Send the offer"], assignee = { team = "sales", by = "workload" } },
]
"""  # noqa: E501


def configure(crm: CRM, text: str) -> CRM:
    """The deployment reopened with ``text`` appended to its crmkit.toml."""
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n" + text, "utf-8")
    return CRM.open(crm.config.root, plugins=crm.plugins)


@pytest.fixture
def team(crm: CRM) -> CRM:
    """A sales team: anna (who logs the calls), boris and vera; a client of anna's."""
    with crm.session() as s:
        s.teams.add("sales")
        s.users.add("hanna", role="head", team="sales", name="Hanna Head")
        for login in ("anna", "boris", "vera"):
            s.users.add(login, role="manager", team="sales")
    with crm.session(as_user="anna") as s:
        s.clients.create("Acme", email="buy@acme.example", owner="anna")
    return crm


@pytest.fixture
def rules(team: CRM) -> Iterator[CRM]:
    opened = configure(team, INTERESTED)
    yield opened
    opened.close()


def runs(crm: CRM) -> list[Any]:
    with crm.connect(readonly=True) as conn:
        table = crm.metadata.tables["automation_runs"]
        return list(conn.execute(select(table).order_by(table.c.id)).all())


def call(crm: CRM, outcome: str = "interested", *, user: str = "anna") -> Any:
    with crm.session(as_user=user) as s:
        client = s.clients.list()[0]
        return s.interactions.log(
            client.id, "call", topic="first_contact", outcome=outcome, direction="outbound"
        )


def test_an_event_fires_its_rule_and_the_actions_run_in_order(rules: CRM) -> None:
    logged = call(rules)
    with rules.session() as s:
        [deal] = s.deals.list()
        [task] = s.tasks.list()
    assert (deal.pipeline, deal.title, deal.owner) == ("b2b", "Acme: first order", "anna")
    assert task.title == "Follow up Acme" and task.deal_id == deal.id
    assert [step.text for step in task.steps] == ["Call", "Send the offer"]
    # anna's new deal counts as her work: the least loaded are boris and vera, boris first
    assert task.assignee == "boris"
    [run] = runs(rules)
    assert (run.rule, run.event, run.event_key, run.status) == (
        "interested_call",
        "interaction.logged",
        f"interaction:{logged.interaction.id}",
        "fired",
    )
    assert run.results[0] == {"do": "open_deal", "deal": deal.id, "assignee_id": deal.owner_id}


def test_the_condition_decides(rules: CRM) -> None:
    call(rules, outcome="not_interested")
    with rules.session() as s:
        assert s.deals.list() == [] and s.tasks.list() == []
    assert runs(rules) == []


def test_workload_spreads_the_tasks_and_breaks_ties_fairly(rules: CRM) -> None:
    for _ in range(4):
        call(rules)
    with rules.session() as s:
        assignees = [t.assignee for t in sorted(s.tasks.list(), key=lambda t: t.id)]
    # boris (tie with vera, lower id), vera, then the one assigned longest ago, ...
    assert assignees == ["boris", "vera", "boris", "vera"]


def test_a_rule_fires_once_per_event(rules: CRM) -> None:
    logged = call(rules)
    with rules.session(as_user="anna") as s:
        payload = {"interaction": {"outcome": "interested", "direction": "outbound"}}
        payload["client"] = {"id": logged.interaction.client_id, "name": "Acme"}
        again = rules.automation.fire(
            s, "interaction.logged", payload, f"interaction:{logged.interaction.id}"
        )
    assert again == []
    with rules.session() as s:
        assert len(s.deals.list()) == 1 and len(s.tasks.list()) == 1
    assert len(runs(rules)) == 1


def test_a_failing_action_rolls_back_its_rule_only(team: CRM) -> None:
    broken = configure(
        team,
        """
[automation.rules.broken]
event = "interaction.logged"
actions = [
    { do = "open_deal", pipeline = "b2b" },
    { do = "create_task", title = "For nobody", assignee = { user = "ghost" } },
]
[automation.rules.fine]
event = "interaction.logged"
actions = [{ do = "create_task", title = "Call back {client.name}" }]
""",
    )
    try:
        logged = call(broken)
        with broken.session() as s:
            assert s.deals.list() == []  # the broken rule's deal went with it
            assert [t.title for t in s.tasks.list()] == ["Call back Acme"]
            assert [i.id for i in s.interactions.list()] == [logged.interaction.id]  # kept
        by_rule = {r.rule: r for r in runs(broken)}
        assert by_rule["broken"].status == "failed"
        assert "ghost" in by_rule["broken"].error
        assert by_rule["fine"].status == "fired"
    finally:
        broken.close()


class Echo:
    """A plugin action that logs another interaction: a rule on interactions loops."""

    @hookimpl
    def crmkit_automation_actions(self) -> list[Action]:
        def echo(context: Context, params: dict[str, Any]) -> dict[str, Any]:
            logged = context.session.interactions.log(
                context.payload["client"]["id"],
                "call",
                topic="first_contact",
                outcome="no_answer",
                direction="outbound",
            )
            return {"interaction": logged.interaction.id}

        return [Action("echo", echo, {"type": "object", "properties": {}}, "Log a call")]


def test_rules_triggering_rules_stop_at_the_depth_limit(team: CRM, register_plugin: Any) -> None:
    register_plugin(Echo())
    looping = configure(
        team,
        """
[automation]
max_depth = 3
[automation.rules.echo]
event = "interaction.logged"
actions = [{ do = "echo" }]
""",
    )
    try:
        call(looping, outcome="no_answer")
        with looping.session() as s:
            assert len(s.interactions.list()) == 4  # the call and three echoes
        statuses = [r.status for r in runs(looping)]
        assert statuses == ["fired", "fired", "fired", "loop_limit"]
        assert "depth limit of 3" in runs(looping)[-1].error
    finally:
        looping.close()


STALLED = """
[automation.rules.stalled]
schedule = "deal.stalled"
actions = [
    { do = "create_task", title = "Deal {deal.title} is stuck in {stage}", due = "+4h" },
    { do = "create_task", title = "{deal.owner}'s deal {deal.title} is stuck", assignee = "head" },
]
"""


def test_the_scheduler_fires_once_per_stalled_stay(team: CRM) -> None:
    with team.session(as_user="anna") as s:
        client = s.clients.list()[0]
        at = utcnow() - dt.timedelta(days=30)
        deal = s.deals.open(client.id, pipeline="b2b", title="Pumps", at=at)
    stalled = configure(team, STALLED)
    try:
        first = stalled.automation.run_schedule()
        again = stalled.automation.run_schedule()
        assert [r.status for r in first] == ["fired"] and again == []
        with stalled.session() as s:
            tasks = {t.assignee: t.title for t in s.tasks.list()}
        stage = stalled.pipelines["b2b"].first.name
        assert tasks == {
            "anna": f"Deal Pumps is stuck in {stage}",
            "hanna": "anna's deal Pumps is stuck",
        }
        # moved on and stuck again: a new stay, a new occasion
        with stalled.session(as_user="anna") as s:
            later = at + dt.timedelta(days=1)
            s.deals.move(deal.id, stalled.pipelines["b2b"].stages[1].name, at=later)
        assert len(stalled.automation.run_schedule()) == 1
    finally:
        stalled.close()


def test_two_schedulers_at_once_fire_each_occasion_once(team: CRM) -> None:
    with team.session(as_user="anna") as s:
        client = s.clients.list()[0]
        for n in range(6):
            s.deals.open(
                client.id, pipeline="b2b", title=f"D{n}", at=utcnow() - dt.timedelta(days=40)
            )
    stalled = configure(team, STALLED)
    other = CRM.open(stalled.config.root, plugins=stalled.plugins)
    errors: list[BaseException] = []

    def schedule(crm: CRM) -> None:
        try:
            crm.automation.run_schedule()
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    try:
        threads = [threading.Thread(target=schedule, args=(c,)) for c in (stalled, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(runs(stalled)) == 6
        with stalled.session() as s:
            assert len(s.tasks.list()) == 12  # two tasks per deal, once
    finally:
        other.close()
        stalled.close()


def test_dry_run_says_what_would_change_and_changes_nothing(rules: CRM) -> None:
    with rules.session(as_user="anna") as s:
        client = s.clients.list()[0]
        payload = {
            "interaction": {"outcome": "interested", "direction": "outbound"},
            "client": {"id": client.id, "name": "Acme"},
        }
        answer = rules.automation.test(s, "interested_call", payload)
        no = rules.automation.test(s, "interested_call", {"interaction": {"outcome": "x"}})
    assert answer["fires"] is True
    assert [a["do"] for a in answer["actions"]] == ["open_deal", "create_task"]
    assert no == {
        "rule": "interested_call",
        "fires": False,
        "reason": "the condition does not hold",
    }
    with rules.session() as s:
        assert s.deals.list() == [] and s.tasks.list() == []
    assert runs(rules) == []


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            'event = "deal.won"\nactions = [{ do = "launch" }]',
            "actions.0",
            "unknown action 'launch'",
        ),
        (
            'event = "deal.won"\nactions = [{ do = "send_email", template = "t" }]',
            "actions.0",
            "crmkit-email-tracking",
        ),
        (
            'event = "deal.wonn"\nactions = [{ do = "move_stage", to = "x" }]',
            "event",
            "unknown event",
        ),
        ('actions = [{ do = "move_stage", to = "x" }]', "", "needs one trigger"),
        (
            'schedule = "client.no_contact"\nactions = [{ do = "create_task", title = "x" }]',
            "params",
            "days",
        ),
        ('event = "deal.won"\nactions = [{ do = "create_task" }]', "actions.0", "title"),
    ],
)
def test_bad_rules_are_refused_when_the_deployment_opens(
    crm: CRM, text: str, field: str, reason: str
) -> None:
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n[automation.rules.bad]\n" + text + "\n", "utf-8")
    with pytest.raises(ConfigError) as info:
        CRM.open(crm.config.root, plugins=crm.plugins)
    assert info.value.field.startswith("automation.rules.bad")
    assert info.value.field.endswith(field) or field in info.value.field
    assert reason in str(info.value)


EVERY_TRIGGER = """
[automation.rules.on_client]
event = "client.created"
actions = [{ do = "create_task", title = "Welcome {client.name}", assignee = "actor" }]
[automation.rules.on_move]
event = "deal.stage_changed"
when = { properties = { change = { properties = { from_stage = { type = "string" } } } } }
actions = [{ do = "create_task", title = "{deal.title} moved to {change.to_stage}" }]
[automation.rules.on_won]
event = "deal.won"
actions = [{ do = "create_task", title = "Thank {client.name} for {deal.title}" }]
[automation.rules.on_lost]
event = "deal.lost"
actions = [{ do = "set_field", record = "deal", field = "title", value = "{deal.title} (lost)" }]
[automation.rules.silent]
schedule = "client.no_contact"
params = { days = 10 }
actions = [{ do = "create_task", title = "No word from {client.name} for {days} days" }]
[automation.rules.due_soon]
schedule = "task.due_soon"
params = { hours = 2 }
actions = [{ do = "create_task", title = "Soon: {task.title}", assignee = "head" }]
[automation.rules.overdue]
schedule = "task.overdue"
actions = [{ do = "create_task", title = "Overdue: {task.title}", assignee = { user = "hanna" } }]
"""


def test_every_trigger_kind(team: CRM, quick_pipeline: None) -> None:
    every = configure(team, EVERY_TRIGGER)
    try:
        with every.session(as_user="anna") as s:
            beta = s.clients.create("Beta", email="beta@example.com", owner="anna")
            won = s.deals.open(beta.id, pipeline="quick", title="Won one")
            lost = s.deals.open(beta.id, pipeline="quick", title="Lost one")
            s.deals.win(won.id)
            s.deals.lose(lost.id, "price")
            s.tasks.add("Send the contract", due=utcnow() + dt.timedelta(hours=1))
            s.tasks.add("Call back", due=utcnow() - dt.timedelta(hours=1))
        with every.session() as s:
            titles = sorted(t.title for t in s.tasks.list())
            assert s.deals.get(lost.id).title == "Lost one (lost)"
        assert titles == sorted(
            [
                "Welcome Beta",
                "Won one moved to won",
                "Thank Beta for Won one",
                "Lost one moved to lost",
                "Send the contract",
                "Call back",
            ]
        )
        # ten days on: Acme and Beta have had no word; the tasks are due or overdue
        later = utcnow() + dt.timedelta(days=11)
        fired = every.automation.run_schedule(later)
        assert sorted(r.rule for r in fired).count("silent") == 2
        with every.session() as s:
            made = {t.title: t.assignee for t in s.tasks.list()}
        assert made["No word from Acme for 10 days"] == "anna"
        assert made["Overdue: Call back"] == "hanna"
        assert "Overdue: Send the contract" in made  # overdue by then too
        soon = every.automation.run_schedule(utcnow())
        assert [r.rule for r in soon if r.rule == "due_soon"] == ["due_soon"]
        with every.session() as s:
            assert {t.title: t.assignee for t in s.tasks.list()}["Soon: Send the contract"] == (
                "hanna"
            )
    finally:
        every.close()


def test_round_robin_takes_turns(team: CRM) -> None:
    turns = configure(
        team,
        """
[automation.rules.turns]
event = "interaction.logged"
actions = [{ do = "create_task", title = "Call {client.name}", assignee = { team = "sales", by = "round_robin" } }]
""",  # noqa: E501
    )
    try:
        for _ in range(4):
            call(turns, outcome="no_answer")
        with turns.session() as s:
            order = [t.assignee for t in sorted(s.tasks.list(), key=lambda t: t.id)]
        assert order == ["anna", "boris", "vera", "anna"]
    finally:
        turns.close()
