"""Access policies on the lifecycle: deals, interactions, invoices, tasks and stage history.

Every role of the built-in policies against every lifecycle repository, for
reads, lists, counts, creates and updates: no path returns what a policy
denies, a record the user may not read is not found exactly like a missing
one, refusals of readable records name the action, and the automatic
effects of an allowed interaction are made on the user's behalf. Runs on
SQLite and on PostgreSQL (``CRMKIT_TEST_DATABASE=postgresql``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from crmkit import CRM, Conflict, FollowUp, NotFound, PermissionDenied, ValidationError, hookimpl

MISSING = 987_654  #: an id no record has
REPOS = ("deals", "interactions", "invoices", "tasks")


@pytest.fixture
def org(crm: CRM) -> dict[str, dict[str, Any]]:
    """Teams north (north-a nested in it) and south; a head of north, two managers, a marketer.

    Each manager makes their own client, deal, interaction, task and invoice,
    as themselves: what the policies let a manager create.
    """
    with crm.session() as s:
        s.teams.add("north")
        s.teams.add("north-a", parent="north")
        s.teams.add("south")
        s.users.add("helen", role="head", team="north")
        s.users.add("anna", role="manager", team="north-a")
        s.users.add("boris", role="manager", team="south")
        s.users.add("mark", role="marketer")
    made: dict[str, dict[str, Any]] = {}
    for login in ("anna", "boris"):
        with crm.session(as_user=login) as s:
            client = s.clients.create(f"{login.title()} Ltd", email=f"{login}@clients.example")
            deal = s.deals.open(client.id, pipeline="b2b", amount=1000, title=f"{login}'s deal")
            logged = s.interactions.log(
                client.id,
                "call",
                direction="outbound",
                topic="first_contact",
                outcome="callback_requested",
                deal_id=deal.id,
                note=f"{login} called",
            )
            task = s.tasks.add(
                f"{login}'s task", due="2030-01-01", client_id=client.id, steps=["one", "two"]
            )
            invoice = s.invoices.issue(deal.id, 500, number=f"INV-{login}")
            made[login] = {
                "client": client.id,
                "deals": deal.id,
                "interactions": logged.interaction.id,
                "tasks": task.id,
                "invoices": invoice.id,
                "number": invoice.number,
            }
    return made


def _ids(found: list[Any]) -> set[int]:
    return {r.id for r in found}


def _same_as_missing(attempt: Callable[[int], Any], hidden_id: int) -> NotFound:
    """``attempt(hidden_id)`` fails exactly as ``attempt(MISSING)`` does: NotFound, same words."""
    with pytest.raises(NotFound) as hidden:
        attempt(hidden_id)
    with pytest.raises(NotFound) as missing:
        attempt(MISSING)
    assert str(hidden.value).replace(str(hidden_id), "N") == str(missing.value).replace(
        str(MISSING), "N"
    )
    assert hidden.value.field == missing.value.field
    return hidden.value


def _deployment_policy(crm: CRM, document: dict[str, Any]) -> CRM:
    """``crm`` reopened with ``document`` as its own policy file (``[access] policies``)."""
    root = Path(crm.config.root)
    (root / "policies.json").write_text(json.dumps(document), "utf-8")
    config = root / "crmkit.toml"
    text = config.read_text("utf-8").split("\n[access]\n")[0]
    config.write_text(text + '\n[access]\npolicies = ["policies.json"]\n', "utf-8")
    again = CRM.open(root, plugins=crm.plugins)
    crm.close()
    return again


@contextmanager
def _statements(crm: CRM) -> Iterator[list[str]]:
    """The SQL statements run on ``crm``'s engine inside the block."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(crm.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(crm.engine, "before_cursor_execute", record)


# -- lists and counts: no leakage ------------------------------------------------------------
def test_each_role_lists_and_counts_only_what_it_may_read(crm, org):
    anna, boris = org["anna"], org["boris"]
    every = {repo: {anna[repo], boris[repo]} for repo in REPOS}
    expected = {
        "anna": {repo: {anna[repo]} for repo in REPOS},
        "boris": {repo: {boris[repo]} for repo in REPOS},
        "helen": {repo: {anna[repo]} for repo in REPOS},  # north-a is nested in north
        "admin": every,
        "mark": {"deals": every["deals"]},  # deals only
    }
    for login, wanted in expected.items():
        with crm.session(as_user=login, readonly=True) as s:
            for repo in REPOS:
                repository = getattr(s, repo)
                if repo not in wanted:
                    with pytest.raises(PermissionDenied, match=f"'{login}' .* may not read"):
                        repository.list()
                    with pytest.raises(PermissionDenied, match="may not read"):
                        repository.count()
                    continue
                assert _ids(repository.list()) == wanted[repo], (login, repo)
                assert repository.count() == len(wanted[repo]), (login, repo)
            if "interactions" in wanted:
                assert _ids(s.interactions.iter(batch_size=1)) == wanted["interactions"]
            assert _ids(s.deals.iter(batch_size=1)) == wanted["deals"]


def test_filters_and_totals_of_a_manager_cover_only_their_records(crm, org):
    anna, boris = org["anna"], org["boris"]
    with crm.session() as s:  # more of boris's: none of it may show in anna's totals
        for n in range(3):
            extra = s.deals.open(boris["client"], pipeline="b2b", title=f"More {n}", owner="boris")
            s.tasks.add(f"More {n}", due="2020-01-01", assignee="boris", deal_id=extra.id)
    with crm.session(as_user="anna", readonly=True) as s:
        assert s.deals.count(pipeline="b2b", status="open") == 1
        assert s.deals.list(owner="boris") == [] and s.deals.count(owner="boris") == 0
        assert s.deals.list(client_id=boris["client"]) == []
        assert s.tasks.count(overdue=True) == 0 and s.tasks.list(assignee="boris") == []
        assert s.tasks.count(done=False) == 1
        assert s.interactions.count(kind="call") == 1
        assert s.interactions.list(client_id=boris["client"]) == []
        assert s.invoices.count(status="issued") == 1
        assert s.invoices.list(deal_id=boris["deals"]) == []
        assert [d.id for d in s.deals.list(limit=1, offset=0)] == [anna["deals"]]
        assert s.deals.list(limit=1, offset=1) == []
    with crm.session(as_user="boris", readonly=True) as s:
        assert s.deals.count() == 4 and s.tasks.count(overdue=True) == 3


def test_lists_do_not_query_per_row(crm, org):
    anna = org["anna"]
    with crm.session(as_user="anna", readonly=True) as s:
        s.deals.list(), s.interactions.list(), s.tasks.list(), s.invoices.list()  # warm up
        with _statements(crm) as few:
            s.deals.list(), s.interactions.list(), s.tasks.list(), s.invoices.list()
    with crm.session(as_user="anna") as s:
        for n in range(4):
            s.interactions.log(
                anna["client"], "call", direction="inbound", topic="service", outcome="resolved"
            )
            s.tasks.add(f"Task {n}", due="2030-01-01")
            s.deals.open(anna["client"], pipeline="b2b", title=f"Deal {n}")
    with crm.session(as_user="anna", readonly=True) as s:
        s.deals.list(), s.interactions.list(), s.tasks.list(), s.invoices.list()
        with _statements(crm) as more:
            found = (s.deals.list(), s.interactions.list(), s.tasks.list(), s.invoices.list())
            assert [len(f) for f in found] == [5, 5, 5, 1]
        with _statements(crm) as batches:
            assert len(list(s.interactions.iter(batch_size=2))) == 5
    assert len(more) == len(few)
    assert len(batches) <= 2 * 4  # three batches and an empty one: rows and respondents


# -- single records: a hidden one reads like a missing one -----------------------------------
def test_a_record_the_user_may_not_read_is_not_found_like_a_missing_one(crm, org):
    boris = org["boris"]
    for login in ("anna", "helen"):
        with crm.session(as_user=login) as s:
            for repo in REPOS:
                err = _same_as_missing(getattr(s, repo).get, boris[repo])
                assert "boris" not in str(err).lower()
            # every write on a hidden record says the same as on a missing one
            for attempt in (
                lambda i: s.deals.move(i, "presentation"),
                lambda i: s.deals.win(i),
                lambda i: s.deals.lose(i, "price"),
                lambda i: s.deals.update(i, title="Mine"),
                lambda i: s.deals.update(i, owner="anna"),
                s.deals.history,
                lambda i: s.deals.stage_at(i, "2030-01-01"),
                lambda i: s.history.of("deal", i),
            ):
                _same_as_missing(attempt, boris["deals"])
            for attempt in (s.invoices.pay, s.invoices.cancel):
                _same_as_missing(attempt, boris["invoices"])
            for attempt in (lambda i: s.tasks.step(i, 1), lambda i: s.tasks.done(i, force=True)):
                _same_as_missing(attempt, boris["tasks"])
            _same_as_missing(lambda i: s.history.of("client", i), boris["client"])
            _same_as_missing(lambda i: s.invoices.issue(i, 10), boris["deals"])
            _same_as_missing(
                lambda i: s.interactions.log(
                    i, "call", direction="inbound", topic="service", outcome="resolved"
                ),
                boris["client"],
            )
            _same_as_missing(lambda i: s.deals.open(i, pipeline="b2b"), boris["client"])
            assert s.invoices.find(boris["number"]) is None
            assert s.invoices.find("no such number") is None
            # a task on a hidden deal or client: the same problem as with a missing one
            problems = []
            for ref in (boris["deals"], MISSING):
                with pytest.raises(ValidationError) as err:
                    s.tasks.add("Spy", due="2030-01-01", deal_id=ref)
                problems.append(str(err.value).replace(str(ref), "N"))
            assert problems[0] == problems[1]
            with pytest.raises(ValidationError) as err:
                s.interactions.log(
                    org["anna"]["client"],
                    "call",
                    direction="inbound",
                    topic="service",
                    outcome="resolved",
                    deal_id=boris["deals"],
                )
            assert f"no deal with id {boris['deals']}" in str(err.value)
    with crm.session(as_user="admin", readonly=True) as s:  # nothing was changed
        assert s.deals.get(boris["deals"]).stage == "qualification"
        assert s.deals.get(boris["deals"]).title == "boris's deal"
        assert s.tasks.get(boris["tasks"]).done_at is None
        assert s.invoices.get(boris["invoices"]).status.value == "issued"


def test_a_deal_of_a_managers_client_owned_by_another_is_read_only_for_them(crm, org):
    anna = org["anna"]
    with crm.session() as s:
        handed = s.deals.open(anna["client"], pipeline="b2b", title="Boris sells", owner="boris")
    with crm.session(as_user="anna") as s:
        assert s.deals.get(handed.id).owner == "boris"
        assert handed.id in _ids(s.deals.list()) and s.deals.count() == 2
        assert [c.to_stage for c in s.deals.history(handed.id)] == ["qualification"]
        with pytest.raises(
            PermissionDenied, match=f"'anna' \\(manager\\) may not update deal #{handed.id}"
        ):
            s.deals.move(handed.id, "presentation")
        with pytest.raises(PermissionDenied, match="may not update deal"):
            s.deals.update(handed.id, title="Mine")
        with pytest.raises(PermissionDenied, match="may not create"):
            s.invoices.issue(handed.id, 100)
    with crm.session(as_user="boris") as s:  # the owner works with it
        assert s.deals.move(handed.id, "presentation").to_stage == "presentation"


# -- writes: refusals name the action ----------------------------------------------------------
def test_writes_of_readable_records_are_checked_and_name_the_action(crm, org):
    anna = org["anna"]
    with crm.session(as_user="anna") as s:
        with pytest.raises(
            PermissionDenied, match=f"may not reassign deal #{anna['deals']}"
        ) as err:
            s.deals.update(anna["deals"], owner="boris")
        assert err.value.field == "access"
        with pytest.raises(PermissionDenied, match="'anna' \\(manager\\) may not create"):
            s.tasks.add("For Boris", due="2030-01-01", assignee="boris")
        with pytest.raises(PermissionDenied, match="may not create"):
            s.deals.open(anna["client"], pipeline="b2b", owner="boris")
        # her own: all allowed
        assert s.deals.update(anna["deals"], title="Renamed", amount=1500).title == "Renamed"
        assert s.deals.move(anna["deals"], "presentation").to_stage == "presentation"
        assert s.tasks.step(anna["tasks"], 1).steps[0].done_at is not None
        assert s.tasks.done(anna["tasks"], force=True).done_at is not None
        assert s.invoices.pay(anna["invoices"]).status.value == "paid"
    with crm.session(as_user="mark") as s:
        assert s.deals.get(anna["deals"]).title == "Renamed"  # marketers read deals
        for attempt, action in (
            (lambda: s.deals.move(anna["deals"], "proposal"), "update deal"),
            (lambda: s.deals.update(anna["deals"], title="Campaign"), "update deal"),
            (lambda: s.deals.open(anna["client"], pipeline="b2b"), "create"),
            (
                lambda: s.interactions.log(
                    anna["client"], "call", direction="inbound", topic="service", outcome="resolved"
                ),
                "create",
            ),
            (lambda: s.interactions.get(anna["interactions"]), "read interactions"),
            (lambda: s.tasks.get(anna["tasks"]), "read tasks"),
            (lambda: s.tasks.step(anna["tasks"], 2), "update tasks"),
            (lambda: s.tasks.add("Campaign", due="2030-01-01"), "create"),
            (lambda: s.invoices.list(), "read invoices"),
            (lambda: s.invoices.cancel(anna["invoices"]), "update invoices"),
            (lambda: s.invoices.issue(anna["deals"], 5), "create"),
        ):
            with pytest.raises(PermissionDenied, match=f"'mark' \\(marketer\\) may not {action}"):
                attempt()
        assert s.deals.history(anna["deals"])[-1].to_stage == "presentation"
        refusals = [e for e in s.audit_buffer if not e.allowed]
        assert {(e.action, e.resource) for e in refusals} >= {
            ("update", "deal"),
            ("create", "deal"),
            ("create", "interaction"),
            ("read", "interaction"),
            ("read", "task"),
            ("update", "invoice"),
        }
    with crm.session(as_user="admin", readonly=True) as s:
        assert s.deals.get(anna["deals"]).stage == "presentation"  # not moved by mark


def test_the_head_works_with_the_nested_team(crm, org):
    anna, boris = org["anna"], org["boris"]
    with crm.session(as_user="helen") as s:
        assert s.deals.get(anna["deals"]).owner == "anna"
        assert s.deals.move(anna["deals"], "presentation").user == "helen"
        logged = s.interactions.log(
            anna["client"],
            "meeting",
            topic="presentation",
            outcome="postponed",
            deal_id=anna["deals"],
            note="with the head",
        )
        assert s.interactions.get(logged.interaction.id).note == "with the head"
        assert s.tasks.add("Coach anna", due="2030-01-01", assignee="anna").assignee == "anna"
        assert s.tasks.step(anna["tasks"], 2).steps[1].done_at is not None
        invoice = s.invoices.issue(anna["deals"], 250)
        assert s.invoices.find(invoice.number) == invoice
        assert s.invoices.cancel(anna["invoices"]).status.value == "cancelled"
        # she may take a deal of her team, not give it away outside her team
        assert s.deals.update(anna["deals"], owner="helen").owner == "helen"
        with pytest.raises(PermissionDenied, match="may not reassign deal"):
            s.deals.update(anna["deals"], owner="boris")
        with pytest.raises(PermissionDenied, match="may not create"):
            s.tasks.add("Boris, do this", due="2030-01-01", assignee="boris")
        assert s.deals.count() == 1 and s.tasks.count() == 2 and s.invoices.count() == 2
        _same_as_missing(s.deals.get, boris["deals"])
    with crm.session(as_user="anna", readonly=True) as s:
        assert s.deals.count(owner="anna") == 0  # helen owns it now
        assert s.deals.count() == 1  # the client is still anna's: she reads its deals
        with pytest.raises(PermissionDenied, match="may not update deal"):
            s.deals.move(anna["deals"], "proposal")


# -- effects of an interaction: on behalf of the allowed logging -------------------------------
def test_effects_of_an_allowed_interaction_are_made_on_the_users_behalf(crm, org):
    anna = org["anna"]
    crm = _deployment_policy(
        crm,
        {
            "version": 1,
            "rules": [
                {
                    "id": "marketer-logs-interactions",
                    "effect": "allow",
                    "roles": ["marketer"],
                    "actions": ["create"],
                    "resource": "interaction",
                }
            ],
        },
    )
    with crm.session(as_user="mark") as s:
        logged = s.interactions.log(
            anna["client"],
            "call",
            direction="outbound",
            topic="presentation",
            outcome="meeting_scheduled",
            deal_id=anna["deals"],
        )
        # the deal moved by the b2b rule, the client by the lifecycle's; mark may do neither
        assert {(c.entity, c.to_stage) for c in logged.changes} == {
            ("deal", "presentation"),
            ("client", "qualified"),
        }
        assert logged.interaction.user == "mark" and logged.refused == []
        with pytest.raises(PermissionDenied, match="may not update deal"):
            s.deals.move(anna["deals"], "proposal")
        with pytest.raises(PermissionDenied, match="may not read interactions"):
            s.interactions.get(logged.interaction.id)
    with crm.session(as_user="anna", readonly=True) as s:
        assert s.deals.get(anna["deals"]).stage == "presentation"
        assert s.clients.get(anna["client"]).stage == "qualified"
        assert logged.interaction.id in _ids(s.interactions.list())  # her client's
    crm.close()


class _FollowUpForBoris:
    """A plugin answering every interaction with a follow-up task for boris."""

    @hookimpl
    def crmkit_interaction_logged(self, session: Any, interaction: Any) -> list[Any]:
        return [FollowUp(title=f"Follow up on #{interaction.id}", assignee="boris")]


def test_a_follow_up_for_a_colleague_is_set_and_both_may_follow_it(crm, org, register_plugin):
    anna = org["anna"]
    register_plugin(_FollowUpForBoris())
    with crm.session(as_user="anna") as s:
        logged = s.interactions.log(
            anna["client"], "call", direction="inbound", topic="service", outcome="resolved"
        )
        (task,) = logged.tasks
        assert task.assignee == "boris"  # anna may not set that task by hand
        with pytest.raises(PermissionDenied, match="may not create"):
            s.tasks.add("By hand", due="2030-01-01", assignee="boris")
        assert s.tasks.get(task.id).title.startswith("Follow up")  # a task she set
    with crm.session(as_user="boris") as s:
        assert task.id in _ids(s.tasks.list())
        assert s.tasks.done(task.id).done_at is not None
    with crm.session(as_user="helen", readonly=True) as s:
        _same_as_missing(s.tasks.get, task.id)  # boris's task: south is not hers


# -- hidden fields, history, audit -------------------------------------------------------------
def test_a_hidden_note_reads_as_none_and_is_named(crm, org):
    anna = org["anna"]
    crm = _deployment_policy(
        crm,
        {
            "version": 1,
            "rules": [
                {
                    "id": "marketer-reads-interactions",
                    "effect": "allow",
                    "roles": ["marketer"],
                    "actions": ["read", "export"],
                    "resource": "interaction",
                    "hide": ["note"],
                }
            ],
        },
    )
    with crm.session(as_user="mark", readonly=True) as s:
        seen = s.interactions.get(anna["interactions"])
        assert seen.note is None and seen.hidden == ("note",)
        assert seen.outcome == "callback_requested"
        listed = s.interactions.list()
        assert len(listed) == 2 and all(i.note is None and i.hidden for i in listed)
        assert all(i.note is None for i in s.interactions.iter(action="export"))
    with crm.session(as_user="anna", readonly=True) as s:
        seen = s.interactions.get(anna["interactions"])
        assert seen.note == "anna called" and seen.hidden == ()
    crm.close()


def test_stage_history_is_readable_only_with_its_record(crm, org):
    anna, boris = org["anna"], org["boris"]
    with crm.session(as_user="anna") as s:
        s.deals.move(anna["deals"], "presentation")
        assert [c.to_stage for c in s.history.of("deal", anna["deals"])] == [
            "qualification",
            "presentation",
        ]
        assert s.deals.stage_at(anna["deals"], "2000-01-01") is None
        assert s.history.of("client", anna["client"]) == []
        _same_as_missing(lambda i: s.history.stage_at("client", i, "2030"), boris["client"])
    for login in ("helen", "mark", "admin"):
        with crm.session(as_user=login, readonly=True) as s:
            assert len(s.deals.history(anna["deals"])) == 2
    with crm.session(as_user="helen", readonly=True) as s:
        _same_as_missing(s.deals.history, boris["deals"])


def test_reads_and_lists_are_audited_with_their_ids(crm, org):
    anna = org["anna"]
    with crm.session(as_user="anna", readonly=True) as s:
        s.audit_buffer.clear()
        s.deals.get(anna["deals"])
        s.invoices.list()
        s.tasks.list()
        s.interactions.get(anna["interactions"])
        assert s.invoices.find(anna["number"]) is not None
        reads = [(e.action, e.resource, e.record_ids, e.detail) for e in s.audit_buffer]
    assert reads == [
        ("read", "deal", [anna["deals"]], {}),
        ("read", "invoice", [anna["invoices"]], {"listed": True}),
        ("read", "task", [anna["tasks"]], {"listed": True}),
        ("read", "interaction", [anna["interactions"]], {}),
        ("read", "invoice", [anna["invoices"]], {}),
    ]


def test_invoice_numbers_stay_unique_across_what_users_see(crm, org):
    anna, boris = org["anna"], org["boris"]
    with crm.session(as_user="boris") as s:
        first = s.invoices.issue(boris["deals"], 10)
    with crm.session(as_user="anna") as s:
        second = s.invoices.issue(anna["deals"], 10)  # numbered past boris's, unseen
        assert second.number != first.number
        with pytest.raises(Conflict, match="which you may not see") as err:
            s.invoices.issue(anna["deals"], 10, number=boris["number"])
        assert str(boris["deals"]) not in str(err.value)
        with pytest.raises(Conflict, match="already exists"):
            s.invoices.issue(anna["deals"], 10, number=anna["number"])


# -- the CLI -----------------------------------------------------------------------------------
def test_the_cli_applies_the_policies_too(crm, org, invoke):
    anna, boris = org["anna"], org["boris"]
    listed = invoke("deal", "list", as_user="anna", json=True).json
    assert [d["id"] for d in listed] == [anna["deals"]]
    assert [t["id"] for t in invoke("task", "list", as_user="anna", json=True).json] == [
        anna["tasks"]
    ]
    hidden = invoke("deal", "show", str(boris["deals"]), as_user="anna")
    missing = invoke("deal", "show", str(MISSING), as_user="anna")
    assert hidden.exit_code == missing.exit_code != 0
    assert hidden.stderr.replace(str(boris["deals"]), "N") == missing.stderr.replace(
        str(MISSING), "N"
    )
    refused = invoke("interaction", "list", as_user="mark")
    assert refused.exit_code != 0 and "may not read interactions" in refused.stderr
