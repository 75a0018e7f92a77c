"""The example rule set shipped with crmkit (crmkit/automation_examples.toml), end to end.

The examples that need no plugin: an interested outbound call opens a deal
and a follow-up task in the caller's team by workload; a deal stalled past its
stage's days reminds its owner and tells the head. (The email examples are
tested with the email plugin: plugins/email_tracking/tests/test_email_automation.py.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from crmkit import CRM, ConfigError
from crmkit.core.schema import utcnow

CORE = files("crmkit").joinpath("automation_examples.toml").read_text("utf-8")
EMAIL = files("crmkit").joinpath("automation_examples_email.toml").read_text("utf-8")


def configure(crm: CRM, text: str) -> CRM:
    """The deployment reopened with ``text`` appended to its crmkit.toml."""
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n" + text, "utf-8")
    return CRM.open(crm.config.root, plugins=crm.plugins)


def runs(crm: CRM) -> list[Any]:
    with crm.connect(readonly=True) as conn:
        table = crm.metadata.tables["automation_runs"]
        return list(conn.execute(select(table).order_by(table.c.id)).all())


@pytest.fixture
def teams(crm: CRM) -> CRM:
    """Two sales teams: north (anna, boris, vera; head hanna) and south (sam, sue)."""
    with crm.session() as s:
        s.teams.add("north")
        s.teams.add("south")
        s.users.add("hanna", role="head", team="north", name="Hanna Head")
        for login in ("anna", "boris", "vera"):
            s.users.add(login, role="manager", team="north")
        for login in ("sam", "sue"):
            s.users.add(login, role="manager", team="south")
        s.users.add("loner", role="manager")
    with crm.session(as_user="anna") as s:
        s.clients.create("Acme", email="buy@acme.example", owner="anna")
    return crm


ACTOR_TEAM = """
[automation.rules.follow_up]
event = "interaction.logged"
actions = [{ do = "create_task", title = "Follow up {client.name}", assignee = { team = "actor", by = "workload" } }]
"""  # noqa: E501


def test_the_team_actor_is_the_acting_users_team(teams: CRM) -> None:
    opened = configure(teams, ACTOR_TEAM)
    try:
        with opened.session(as_user="anna") as s:
            client = s.clients.list()[0]
            for _ in range(3):
                s.interactions.log(
                    client.id,
                    "call",
                    topic="first_contact",
                    outcome="interested",
                    direction="outbound",
                )
        with opened.session() as s:
            tasks = sorted(s.tasks.list(), key=lambda t: t.id)
        # anna's team is north: anna, boris, vera by workload (none of south)
        assert [t.assignee for t in tasks] == ["anna", "boris", "vera"]
        with opened.session(as_user="loner") as s:
            client = s.clients.create("Solo Ltd", owner="loner")
            s.interactions.log(
                client.id,
                "call",
                topic="first_contact",
                outcome="interested",
                direction="outbound",
            )
        failed = [r for r in runs(opened) if r.status == "failed"]
        assert len(failed) == 1 and "'loner' is in no team" in failed[0].error
    finally:
        opened.close()


@pytest.fixture
def examples(teams: CRM) -> Any:
    opened = configure(teams, CORE)
    yield opened
    opened.close()


def test_every_example_rule_has_a_title() -> None:
    for text in (CORE, EMAIL):
        for name, rule in tomllib.loads(text)["automation"]["rules"].items():
            assert rule.get("title"), name


def call(crm: CRM, outcome: str = "interested", direction: str = "outbound") -> Any:
    with crm.session(as_user="anna") as s:
        client = s.clients.list()[0]
        return s.interactions.log(
            client.id, "call", topic="first_contact", outcome=outcome, direction=direction
        )


def test_an_interested_call_opens_a_deal_and_a_follow_up_by_workload(examples: CRM) -> None:
    crm = examples
    call(crm, "not_interested")
    call(crm, "interested", "inbound")
    with crm.session() as s:
        assert s.deals.list() == [] and s.tasks.list() == []
    logged = call(crm)
    with crm.session() as s:
        [deal] = s.deals.list()
        [task] = s.tasks.list()
    assert (deal.pipeline, deal.title, deal.owner) == ("b2b", "Acme: first order", "anna")
    assert (task.title, task.deal_id, task.client_id) == (
        "Follow up Acme: send the offer",
        deal.id,
        deal.client_id,
    )
    assert [step.text for step in task.steps] == [
        "Call back and qualify the need",
        "Send the commercial proposal",
    ]
    # anna's team (north) by workload: anna now has the new deal, boris and vera nothing
    assert task.assignee == "boris"
    # once per event: the same interaction fired again does nothing
    with crm.session(as_user="anna") as s:
        payload = {
            "interaction": {"kind": "call", "outcome": "interested", "direction": "outbound"},
            "client": {"id": deal.client_id, "name": "Acme"},
        }
        key = f"interaction:{logged.interaction.id}"
        assert crm.automation.fire(s, "interaction.logged", payload, key) == []
    [run] = runs(crm)
    assert (run.rule, run.event_key, run.status) == ("interested_call", key, "fired")
    assert [r["do"] for r in run.results] == ["open_deal", "create_task"]
    # the next interested call goes to vera, then the least loaded again
    call(crm)
    call(crm)
    with crm.session() as s:
        tasks = sorted(s.tasks.list(), key=lambda t: t.id)
    assert [t.assignee for t in tasks] == ["boris", "vera", "boris"]


def test_a_stalled_deal_reminds_its_owner_and_tells_the_head(examples: CRM) -> None:
    crm = examples
    with crm.session(as_user="anna") as s:
        client = s.clients.list()[0]
        at = utcnow() - dt.timedelta(days=30)
        deal = s.deals.open(client.id, pipeline="b2b", title="Pumps", at=at)
        fresh = s.deals.open(client.id, pipeline="b2b", title="Valves")
    stage = crm.pipelines["b2b"].first
    assert stage.days and stage.days < 30
    first = crm.automation.run_schedule()
    assert [(r.rule, r.status) for r in first] == [("stalled_deal", "fired")]
    assert crm.automation.run_schedule() == []  # once per stalled stay
    with crm.session() as s:
        tasks = {t.assignee: t for t in s.tasks.list()}
    assert set(tasks) == {"anna", "hanna"}
    assert tasks["anna"].title == f"Deal Pumps has been in {stage.name} for 30 days: move it on"
    assert tasks["hanna"].title == f"anna's deal Pumps is stalled in {stage.name} (30 days)"
    assert {t.deal_id for t in tasks.values()} == {deal.id}  # not the fresh deal
    assert fresh.id != deal.id


def test_the_email_examples_are_refused_without_the_email_plugin(crm: CRM) -> None:
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n" + EMAIL, "utf-8")
    with pytest.raises(ConfigError) as info:
        CRM.open(crm.config.root, plugins=crm.plugins)
    assert info.value.field == "automation.rules.web_lead_presentation.actions.0"
    assert "unknown action 'send_email'" in str(info.value)
    assert "it comes with the email tracking plugin (crmkit-email-tracking)" in str(info.value)


def run_crmkit(*args: str, plugins: str = "", cwd: Path | None = None) -> Any:
    """The real console script, with only the entry-point plugins named by ``plugins``."""
    return subprocess.run(
        [sys.executable, "-m", "crmkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "CRMKIT_LOAD_PLUGINS": plugins},
        timeout=120,
    )


def _database(url: str | None) -> list[str]:
    return ["--database", url] if url else []


def test_init_rules_examples_without_the_email_plugin(
    tmp_path: Path, crmkit_database_url: str | None
) -> None:
    target = tmp_path / "mycrm"
    args = ["init", str(target), "--rules", "examples", *_database(crmkit_database_url)]
    result = run_crmkit(*args)
    assert result.returncode == 0, result.stderr
    assert "automation rules (examples): interested_call, stalled_deal" in result.stdout
    assert "not added: web_lead_presentation, thank_paid_invoice" in result.stdout
    text = (target / "crmkit.toml").read_text("utf-8")
    assert "# -- automation rules: crmkit's 'examples' set (crmkit init --rules examples)" in text
    assert set(tomllib.loads(text)["automation"]["rules"]) == {"interested_call", "stalled_deal"}
    opened = CRM.open(target, entry_points=False)
    try:
        assert {"interested_call", "stalled_deal"} <= set(opened.automation.rules)
    finally:
        opened.close()


def test_init_rules_examples_with_the_email_plugin(
    tmp_path: Path, crmkit_database_url: str | None
) -> None:
    pytest.importorskip("crmkit_email_tracking")
    target = tmp_path / "mycrm"
    args = ["init", str(target), "--rules", "examples", *_database(crmkit_database_url)]
    result = run_crmkit(*args, "--format", "json", plugins="email_tracking")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["rules"] == [
        "interested_call",
        "stalled_deal",
        "web_lead_presentation",
        "thank_paid_invoice",
    ]
    assert info["rules_left_out"] == []
    text = (target / "crmkit.toml").read_text("utf-8")
    assert len(tomllib.loads(text)["automation"]["rules"]) == 4


def test_init_refuses_an_unknown_rule_set(tmp_path: Path) -> None:
    result = run_crmkit("init", str(tmp_path / "c"), "--rules", "exampels")
    assert result.returncode != 0
    assert "unknown rule set 'exampels' (known: examples)" in result.stderr
    assert not (tmp_path / "c").exists()  # nothing written
