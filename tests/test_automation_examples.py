"""The example rule set shipped with crmkit (crmkit/automation_examples.toml), end to end.

The examples that need no plugin: an interested outbound call opens a deal
and a follow-up task in the caller's team by workload; a deal stalled past its
stage's days reminds its owner and tells the head. (The email examples are
tested with the email plugin: plugins/email_tracking/tests/test_email_automation.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from crmkit import CRM


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
