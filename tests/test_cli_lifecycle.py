"""The lifecycle CLI: log, pipeline, kind, deal, task, overdue, invoice, client stage, init."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

import click
import pytest
from sqlalchemy import func, select

from crmkit import Segment, hookimpl

UTC = dt.UTC


class RetailSegment:
    """A tiny segment, so that a client can satisfy the b2b proposal gate."""

    @hookimpl
    def crmkit_segments(self) -> list[Segment]:
        return [
            Segment(
                name="retail",
                title="Retail",
                schema={"type": "object", "properties": {"shops": {"type": "integer"}}},
            )
        ]


@pytest.fixture
def crmkit_plugins() -> list[object]:
    return [RetailSegment()]


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich folds cells to fit 80 columns; a wide console keeps words whole for the asserts."""
    monkeypatch.setenv("COLUMNS", "300")


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result
    return result


def when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


TABLES = (
    "clients",
    "deals",
    "stage_changes",
    "interactions",
    "interaction_respondents",
    "tasks",
    "invoices",
    "events",
)


def snapshot(crm: Any) -> dict[str, Any]:
    """Row counts of every lifecycle table, and the state of each deal and client."""
    with crm.session(readonly=True) as s:
        counts = {
            name: s.connection.execute(select(func.count()).select_from(s.table(name))).scalar()
            for name in TABLES
        }
        deals = [(d.id, d.stage, d.status, str(d.amount)) for d in s.deals.list(limit=None)]
        clients = [(c.id, c.stage) for c in s.clients.list(limit=None)]
    return {"counts": counts, "deals": deals, "clients": clients}


@pytest.fixture
def acme(invoke: Any) -> Any:
    """Client #1 Acme (segment retail) with contact #1, and deal #1 on the b2b pipeline."""
    ok(invoke("client", "add", "Acme", "--segment", "retail"))
    ok(invoke("contact", "add", "1", "Ivan", "--position", "CEO"))
    ok(invoke("deal", "open", "1", "--pipeline", "b2b", "--amount", "150000", "--title", "Pumps"))
    return invoke


# -- log ---------------------------------------------------------------------------------------
def test_log_prints_the_interaction_and_the_moves_it_caused(acme: Any) -> None:
    result = ok(
        acme(
            "log",
            "call",
            "1",
            "--topic",
            "first_contact",
            "--outcome",
            "meeting_scheduled",
            "--direction",
            "outbound",
            "--deal",
            "1",
        )
    )
    lines = result.output.splitlines()
    assert lines[0].startswith("Logged interaction #1 call with client #1 Acme, deal #1")
    assert "deal #1: qualification -> presentation" in lines
    assert "client #1: lead -> qualified" in lines
    assert result.stderr == ""
    shown = ok(acme("deal", "show", "1", json=True)).json
    assert shown["stage"] == "presentation"
    assert [h["cause"] for h in shown["history"]] == ["opened", "interaction"]
    assert shown["history"][1]["interaction_id"] == 1


def test_log_json_has_the_interaction_changes_tasks_and_refused(acme: Any) -> None:
    ok(acme("deal", "move", "1", "presentation"))
    data = ok(
        acme(
            "log",
            "meeting",
            "1",
            "--topic",
            "presentation",
            "--outcome",
            "proposal_requested",
            "--at",
            "2030-03-02T10:30:00+03:00",
            "--duration",
            "45",
            "--deal",
            "1",
            "--respondent",
            "1",
            "--note",
            "wants 20 pumps",
            json=True,
        )
    ).json
    assert set(data) == {"interaction", "changes", "tasks", "refused"}
    i = data["interaction"]
    assert (i["id"], i["kind"], i["topic"], i["outcome"], i["deal_id"]) == (
        1,
        "meeting",
        "presentation",
        "proposal_requested",
        1,
    )
    assert when(i["occurred_at"]) == dt.datetime(2030, 3, 2, 7, 30, tzinfo=UTC)
    assert i["duration_min"] == 45 and i["respondents"] == [1] and i["note"] == "wants 20 pumps"
    assert data["refused"] == []
    assert [(c["entity"], c["from_stage"], c["to_stage"], c["cause"]) for c in data["changes"]] == [
        ("deal", "presentation", "proposal", "interaction"),
        ("client", "lead", "qualified", "interaction"),
    ]
    assert [t["title"] for t in data["tasks"]] == ["Prepare and send the commercial proposal"]
    assert when(data["tasks"][0]["due_at"]) == dt.datetime(2030, 3, 3, 7, 30, tzinfo=UTC)


def test_log_moves_the_deal_through_a_gate_that_is_satisfied(acme: Any) -> None:
    ok(acme("deal", "move", "1", "presentation"))
    result = ok(
        acme(
            "log",
            "email",
            "1",
            "--topic",
            "followup",
            "--outcome",
            "proposal_requested",
            "--deal",
            "1",
        )
    )
    assert "deal #1: presentation -> proposal" in result.output.splitlines()
    assert "Created task #1 Prepare and send the commercial proposal (due " in result.output
    assert result.stderr == ""


def test_a_refused_move_is_a_warning_and_the_interaction_is_kept(invoke: Any, crm: Any) -> None:
    ok(invoke("client", "add", "Beta"))  # no segment: the proposal gate refuses
    ok(invoke("deal", "open", "1", "--pipeline", "b2b", "--amount", "0"))
    ok(invoke("deal", "move", "1", "presentation"))
    args = ["log", "email", "1", "--topic", "followup", "--outcome", "proposal_requested"]
    result = invoke(*args, "--deal", "1")
    assert result.exit_code == 0, result
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("Warning: deal #1 stays: ")
    assert "client.segment" in warning[0] and "deal.amount" in warning[0]
    assert "Created task #1" in result.output
    data = ok(invoke(*args, "--deal", "1", json=True)).json
    assert len(data["refused"]) == 1 and data["changes"] == []
    with crm.session(readonly=True) as s:
        assert s.deals.get(1).stage == "presentation"
        assert len(s.interactions.list(deal_id=1)) == 2


def test_log_table_shows_local_time_json_keeps_iso(acme: Any, crm: Any) -> None:
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text().replace('timezone = "UTC"', 'timezone = "Europe/Moscow"'))
    args = ["log", "event", "1", "--topic", "webinar", "--outcome", "attended"]
    table = ok(acme(*args, "--at", "2026-03-01T10:00:00+00:00"))
    assert "2026-03-01 13:00" in table.output
    data = ok(acme(*args, "--at", "2026-03-01 10:00", json=True)).json  # naive: Moscow time
    assert when(data["interaction"]["occurred_at"]) == dt.datetime(2026, 3, 1, 7, 0, tzinfo=UTC)


def test_interaction_list(acme: Any) -> None:
    ok(acme("log", "email", "1", "--topic", "first_contact", "--outcome", "sent"))
    ok(acme("log", "meeting", "1", "--topic", "presentation", "--outcome", "postponed"))
    listed = ok(acme("interaction", "list", "--client", "1", json=True)).json
    assert [i["kind"] for i in listed] == ["meeting", "email"]
    assert [
        i["id"] for i in ok(acme("interaction", "list", "--kind", "email", json=True)).json
    ] == [1]
    table = ok(acme("interaction", "list"))
    assert "postponed" in table.output and "first_contact" in table.output
    assert acme("interaction", "list", "--kind", "fax").exit_code == 2


# -- registries: kinds and pipelines -----------------------------------------------------------
def test_kind_list_and_show(invoke: Any) -> None:
    kinds = ok(invoke("kind", "list", json=True)).json
    names = [k["name"] for k in kinds]
    assert {"call", "meeting", "email", "letter", "mailing", "campaign", "event"} <= set(names)
    call = next(k for k in kinds if k["name"] == "call")
    assert call["direction_required"] is True
    assert call["outcomes"]["proposal_requested"] == "Asked for a commercial proposal"
    assert "first_contact" in ok(invoke("kind", "list")).output
    shown = ok(invoke("kind", "show", "call", json=True)).json
    assert shown["topics"]["first_contact"] == "First contact"
    table = ok(invoke("kind", "show", "call")).output
    assert "Asked for a commercial proposal" in table and "direction required" in table
    assert "b2b: -> presentation" in table  # what the outcome meeting_scheduled moves
    bad = invoke("kind", "show", "fax")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("Error: kind: unknown interaction kind 'fax' (allowed: call")


def test_pipeline_list_and_show(invoke: Any, crm: Any) -> None:
    listed = ok(invoke("pipeline", "list", json=True)).json
    rows = {p["name"]: p for p in listed}
    assert rows["b2b"]["stages"] == 5 and rows["b2b"]["allow_skip"] is False
    assert rows["webshop"]["allow_skip"] is True and rows["lifecycle"]["entity"] == "client"
    assert "B2B sales" in ok(invoke("pipeline", "list")).output
    assert ok(invoke("pipeline", "show", "b2b", json=True)).json == crm.pipelines["b2b"].to_dict()
    table = ok(invoke("pipeline", "show", "b2b")).output
    for text in ("Commercial proposal", "50%", "qualification", "mql"):
        assert text in table, text
    assert '"required":["segment"]' in table and '"exclusiveMinimum":0' in table
    assert "Lost reasons: price, competitor" in table
    assert "proposal_requested -> proposal (+ task: Prepare and send the commercial" in table
    lifecycle = ok(invoke("pipeline", "show", "lifecycle")).output
    assert "repeat_customer" in lifecycle and "interested -> qualified" in lifecycle


def test_pipeline_rule_text_names_kind_and_topic(crm: Any, invoke: Any) -> None:
    path = crm.config.root / "crmkit.toml"
    path.write_text(
        path.read_text()
        + """
[pipelines.tiny]
title = "Tiny"
stages = [{name = "one", gate = {required = ["deal"]}}, {name = "two", days = 3}]
lost_reasons = ["price"]
rules = [{outcome = "agreed", kind = "call", topic = "negotiation", move_to = "two"},
         {outcome = "sent", topic = "proposal", task = {title = "Chase"}}]
"""
    )
    table = ok(invoke("pipeline", "show", "tiny")).output
    assert "agreed [call/negotiation] -> two" in table
    assert "sent [*/proposal] no move (+ task: Chase)" in table
    assert '{"required":["deal"]}' in table


# -- deals -------------------------------------------------------------------------------------
def test_deal_open_and_update(acme: Any) -> None:
    data = ok(
        acme(
            "deal",
            "open",
            "1",
            "--pipeline",
            "webshop",
            "--amount",
            "1 500,50",
            "--currency",
            "eur",
            "--close-by",
            "2026-12-31",
            json=True,
        )
    ).json
    assert data["id"] == 2 and data["stage"] == "ad" and data["status"] == "open"
    assert data["amount"] == "1500.50" and data["currency"] == "EUR"
    assert data["expected_close"] == "2026-12-31" and data["client"] == "Acme"
    assert data["stalled"] is False and data["owner"] == "admin"
    table = ok(acme("deal", "open", "1", "--pipeline", "b2b", "--amount", "10"))
    assert table.output.startswith("Created deal #3 Acme (b2b: qualification)")
    ok(acme("user", "add", "anna", "--role", "manager"))
    updated = ok(acme("deal", "update", "3", "--amount", "99.90", "--owner", "anna", json=True))
    assert updated.json["amount"] == "99.90" and updated.json["owner"] == "anna"
    assert ok(acme("deal", "update", "3", "--title", "Valves")).output.startswith(
        "Updated deal #3 Valves"
    )
    nothing = acme("deal", "update", "3")
    assert nothing.exit_code == 1 and "nothing to change" in nothing.stderr


def test_deal_walks_the_funnel_to_won(acme: Any, crm: Any) -> None:
    for stage in ("presentation", "proposal", "contract_invoice"):
        moved = ok(acme("deal", "move", "1", stage, "--note", f"to {stage}"))
        assert moved.output.startswith("deal #1: ")
    data = ok(acme("deal", "move", "1", "payment_shipment", json=True)).json
    assert data["change"]["from_stage"] == "contract_invoice"
    assert data["change"]["to_stage"] == "payment_shipment"
    assert data["deal"]["stage"] == "payment_shipment" and data["deal"]["status"] == "open"
    won = ok(acme("deal", "win", "1"))
    assert won.output.splitlines() == [
        "deal #1: payment_shipment -> won",
        "client #1: lead -> customer",
    ]
    shown = ok(acme("deal", "show", "1", json=True)).json
    assert shown["status"] == "won" and shown["closed_at"] is not None
    assert [h["to_stage"] for h in shown["history"]] == [
        "qualification",
        "presentation",
        "proposal",
        "contract_invoice",
        "payment_shipment",
        "won",
    ]
    assert shown["history"][1]["note"] == "to presentation"
    with crm.session(readonly=True) as s:  # the history gives the same answer as the state
        for change in s.deals.history(1):
            assert s.deals.stage_at(1, change.at) == change.to_stage
        assert s.clients.get(1).stage == "customer"


def test_deal_lose_with_reason(acme: Any) -> None:
    data = ok(acme("deal", "lose", "1", "--reason", "price", "--note", "too dear", json=True)).json
    assert data["deal"]["status"] == "lost" and data["deal"]["lost_reason"] == "price"
    assert data["change"]["note"] == "too dear"
    ok(acme("deal", "open", "1", "--pipeline", "b2b", "--amount", "5"))
    assert ok(acme("deal", "lose", "2", "--reason", "timing")).output.strip() == (
        "deal #2: qualification -> lost (timing)"
    )
    closed = acme("deal", "move", "1", "presentation")
    assert closed.exit_code == 2 and "already lost" in closed.stderr


def test_deal_list_filters_and_stalled(acme: Any) -> None:
    ok(acme("user", "add", "anna", "--role", "manager"))
    ok(acme("client", "add", "Beta"))
    # deal #2: opened 30 days ago, still in qualification (7 days allotted): stalled
    ok(acme("deal", "open", "2", "--pipeline", "b2b", "--amount", "7", "--at", "-30d"))
    ok(acme("deal", "open", "2", "--pipeline", "webshop", "--amount", "1", "--owner", "anna"))
    ok(acme("deal", "move", "1", "presentation"))
    ok(acme("deal", "lose", "3", "--reason", "other"))

    def ids(*args: str) -> list[int]:
        return [d["id"] for d in ok(acme("deal", "list", *args, json=True)).json]

    assert ids() == [3, 2, 1]
    assert ids("--stalled") == [2]
    assert ids("--pipeline", "b2b") == [2, 1]
    assert ids("--stage", "presentation") == [1]
    assert ids("--status", "lost") == [3]
    assert ids("--status", "open") == [2, 1]
    assert ids("--owner", "anna") == [3]
    assert ids("--client", "2") == [3, 2]
    assert ids("--limit", "1") == [3]
    listed = ok(acme("deal", "list", json=True)).json
    assert [(d["stalled"], d["client"]) for d in listed] == [
        (False, "Beta"),
        (True, "Beta"),
        (False, "Acme"),
    ]
    table = ok(acme("deal", "list", "--pipeline", "b2b")).output
    assert "stalled" in table and "yes" in table and "no" in table and "Pumps" in table


def test_deal_show_with_history(acme: Any) -> None:
    ok(acme("log", "call", "1", "--topic", "qualification", "--outcome", "meeting_scheduled",
            "--direction", "inbound", "--deal", "1"))  # fmt: skip
    table = ok(acme("deal", "show", "1")).output
    assert "Deal #1" in table and "Stage history" in table and "Pumps" in table
    assert "interaction" in table and "opened" in table and "stalled" in table
    data = ok(acme("deal", "show", "1", json=True)).json
    assert data["stalled"] is False and data["amount"] == "150000.00"
    assert [(h["from_stage"], h["to_stage"], h["cause"]) for h in data["history"]] == [
        (None, "qualification", "opened"),
        ("qualification", "presentation", "interaction"),
    ]
    assert data["history"][1]["user"] == "admin" and data["history"][1]["interaction_id"] == 1
    assert acme("deal", "show", "9").exit_code == 3


# -- tasks -------------------------------------------------------------------------------------
def test_task_add_step_done_show(acme: Any) -> None:
    ok(acme("user", "add", "anna", "--role", "manager"))
    created = ok(
        acme(
            "task",
            "add",
            "Send the proposal",
            "--due",
            "2030-01-10T18:00+00:00",
            "--assignee",
            "anna",
            "--deal",
            "1",
            "--step",
            "Draft",
            "--step",
            "Send",
        )
    )
    assert created.output.startswith("Created task #1 Send the proposal")
    assert "2030-01-10 18:00" in created.output and "Draft" in created.output
    data = ok(acme("task", "show", "1", json=True)).json
    assert data["assignee"] == "anna" and data["client_id"] == 1 and data["deal_id"] == 1
    assert [s["text"] for s in data["steps"]] == ["Draft", "Send"]
    assert when(data["due_at"]) == dt.datetime(2030, 1, 10, 18, 0, tzinfo=UTC)
    assert data["overdue"] is False
    stepped = ok(acme("task", "step", "1", "1"))
    assert stepped.output.startswith("Task #1 step 1 done: Draft")
    assert "[x]" in stepped.output and "[ ]" in stepped.output
    refused = acme("task", "done", "1")
    assert refused.exit_code == 2 and "step 2 is not done yet" in refused.stderr
    undone = ok(acme("task", "step", "1", "1", "--undo", json=True)).json
    assert [s["done_at"] for s in undone["steps"]] == [None, None]
    assert acme("task", "step", "1", "3").exit_code == 2
    done = ok(acme("task", "done", "1", "--force", "--at", "2030-01-10T12:00+00:00"))
    assert done.output.startswith("Done task #1 Send the proposal\n")
    again = acme("task", "done", "1")
    assert again.exit_code == 4 and "already done" in again.stderr
    late = ok(acme("task", "add", "Call back", "--due", "-2h", json=True)).json
    closed = ok(acme("task", "done", str(late["id"]), json=True)).json
    assert closed["done_late"] is True and closed["overdue"] is True
    table = ok(acme("task", "show", "2")).output
    assert "done late" in table


def test_task_list_overdue_and_the_overdue_command(acme: Any) -> None:
    ok(acme("user", "add", "anna", "--role", "manager"))
    ok(acme("task", "add", "Late and open", "--due", "-1d", "--assignee", "anna"))
    ok(acme("task", "add", "Not yet", "--due", "+1d", "--step", "one"))
    ok(acme("task", "add", "Done late", "--due", "-3h"))
    ok(acme("task", "done", "3"))
    ok(acme("task", "add", "Mine, late", "--due", "-2d", "--client", "1"))

    def titles(*args: str) -> list[str]:
        return [t["title"] for t in ok(acme(*args, json=True)).json]

    assert titles("task", "list") == ["Mine, late", "Late and open", "Done late", "Not yet"]
    assert titles("task", "list", "--overdue") == ["Mine, late", "Late and open", "Done late"]
    assert titles("task", "list", "--open") == ["Mine, late", "Late and open", "Not yet"]
    assert titles("task", "list", "--overdue", "--open") == ["Mine, late", "Late and open"]
    assert titles("task", "list", "--assignee", "anna") == ["Late and open"]
    assert titles("task", "list", "--client", "1") == ["Mine, late"]
    assert titles("task", "list", "--limit", "1") == ["Mine, late"]
    assert titles("overdue") == ["Mine, late", "Late and open"]
    assert titles("overdue", "--assignee", "anna") == ["Late and open"]
    assert [t["overdue"] for t in ok(acme("task", "list", json=True)).json] == [
        True,
        True,
        True,
        False,
    ]
    table = ok(acme("task", "list")).output
    assert "overdue" in table and "late" in table and "0/1" in table
    manager = ok(acme("overdue")).output
    assert "Overdue tasks" in manager and "late_by" in manager and "1d 0h" in manager
    assert acme("overdue", "--assignee", "ghost").exit_code == 3


# -- invoices ----------------------------------------------------------------------------------
def test_invoices(acme: Any) -> None:
    issued = ok(acme("invoice", "issue", "1", "--amount", "150000", "--number", "A-1"))
    assert issued.output.startswith("Issued invoice #1 A-1 for deal #1: 150000.00 RUB")
    second = ok(acme("invoice", "issue", "1", "--amount", "10", "--at", "2026-02-01", json=True))
    assert second.json["number"] == "2026-00001" and second.json["status"] == "issued"
    paid = ok(acme("invoice", "pay", "1", json=True)).json
    assert paid["status"] == "paid" and paid["paid_at"] is not None
    assert ok(acme("invoice", "cancel", "2")).output.startswith("Invoice #2 2026-00001 cancelled")
    assert [i["number"] for i in ok(acme("invoice", "list", json=True)).json] == [
        "A-1",
        "2026-00001",
    ]
    assert [i["id"] for i in ok(acme("invoice", "list", "--status", "paid", json=True)).json] == [1]
    assert [i["id"] for i in ok(acme("invoice", "list", "--deal", "2", json=True)).json] == []
    assert "150000.00" in ok(acme("invoice", "list")).output
    assert ok(acme("invoice", "show", "1", json=True)).json["amount"] == "150000.00"
    twice = acme("invoice", "pay", "1")
    assert twice.exit_code == 4 and "only an issued invoice" in twice.stderr
    duplicate = acme("invoice", "issue", "1", "--amount", "1", "--number", "A-1")
    assert duplicate.exit_code == 4 and "Error: number: invoice 'A-1' already exists" in (
        duplicate.stderr
    )


# -- clients' lifecycle ------------------------------------------------------------------------
def test_client_stage_and_its_display(acme: Any) -> None:
    assert ok(acme("client", "stage", "1", "qualified")).output.strip() == (
        "client #1: lead -> qualified"
    )
    data = ok(acme("client", "stage", "1", "customer", json=True)).json
    assert data["entity"] == "client" and data["to_stage"] == "customer"
    assert ok(acme("client", "show", "1", json=True)).json["stage"] == "customer"
    assert "customer" in ok(acme("client", "show", "1")).output
    listed = ok(acme("client", "list"))
    assert "stage" in listed.output and "customer" in listed.output
    back = acme("client", "stage", "1", "lead")
    assert back.exit_code == 2 and "goes backwards" in back.stderr
    lost = acme("client", "stage", "1", "lost")
    assert lost.exit_code == 2 and "give a reason" in lost.stderr
    gone = ok(acme("client", "stage", "1", "lost", "--reason", "closed_down", json=True)).json
    assert gone["to_stage"] == "lost" and gone["note"] == "closed_down"


# -- bad input: one line, a non-zero exit, nothing written -------------------------------------
@pytest.fixture
def world(invoke: Any) -> Any:
    """Acme (#1, segment) with deal #1 at presentation; Beta (#2, no segment) with deal #2 at 0."""
    ok(invoke("client", "add", "Acme", "--segment", "retail"))
    ok(invoke("client", "add", "Beta"))
    ok(invoke("deal", "open", "1", "--pipeline", "b2b", "--amount", "100"))
    ok(invoke("deal", "open", "2", "--pipeline", "b2b", "--amount", "0"))
    ok(invoke("deal", "move", "1", "presentation"))
    ok(invoke("deal", "move", "2", "presentation"))
    return invoke


CALL = ["log", "call", "1", "--direction", "outbound"]


@pytest.mark.parametrize(
    ("args", "code", "starts", "contains"),
    [
        pytest.param(
            ["log", "fax", "1", "--topic", "x", "--outcome", "y"],
            2,
            "Error: kind: unknown interaction kind 'fax'",
            ["allowed: call, campaign, document, email, event, letter, mailing, meeting"],
            id="unknown-kind",
        ),
        pytest.param(
            [*CALL, "--topic", "weather", "--outcome", "interested"],
            2,
            "Error: topic: 'weather' is not a known call topic",
            ["allowed: first_contact, qualification"],
            id="unknown-topic",
        ),
        pytest.param(
            [*CALL, "--topic", "first_contact", "--outcome", "maybe"],
            2,
            "Error: outcome: 'maybe' is not a known call outcome",
            ["allowed: no_answer, callback_requested"],
            id="unknown-outcome",
        ),
        pytest.param(
            ["log", "call", "1", "--topic", "first_contact", "--outcome", "interested"],
            2,
            "Error: direction: is required for this kind",
            [],
            id="call-without-direction",
        ),
        pytest.param(
            [*CALL, "--topic", "first_contact", "--outcome", "agreed", "--deal", "2"],
            2,
            "Error: deal: deal #2 belongs to client #2, not to client #1",
            [],
            id="deal-of-another-client",
        ),
        pytest.param(
            [*CALL, "--topic", "first_contact", "--outcome", "agreed", "--at", "yesterday-ish"],
            2,
            "Error: at: 'yesterday-ish' is not a date or time",
            [],
            id="unparseable-at",
        ),
        pytest.param(
            [*CALL, "--topic", "first_contact", "--outcome", "agreed", "--respondent", "99"],
            2,
            "Error: respondent: contact #99 is not a contact of client #1",
            [],
            id="unknown-respondent",
        ),
        pytest.param(
            [*CALL, "--topic", "first_contact", "--outcome", "agreed", "--duration", "long"],
            2,
            "Error: duration: 'long' is not a number of minutes",
            [],
            id="bad-duration",
        ),
        pytest.param(
            ["deal", "move", "1", "signed"],
            2,
            "Error: stage: 'signed' is not a stage of pipeline 'b2b'",
            ["allowed: qualification, presentation, proposal, contract_invoice"],
            id="unknown-stage",
        ),
        pytest.param(
            ["deal", "list", "--stage", "signed"],
            2,
            "Error: stage: 'signed' is not a stage",
            ["allowed: qualification"],
            id="unknown-stage-filter",
        ),
        pytest.param(
            ["deal", "move", "1", "qualification"],
            2,
            "Error: stage: cannot move deal #1 to 'qualification'",
            ["moves forward only", "goes backwards"],
            id="backward-move",
        ),
        pytest.param(
            ["deal", "move", "1", "contract_invoice"],
            2,
            "Error: stage: cannot move deal #1 to 'contract_invoice'",
            ["does not allow skipping stages (proposal comes first)"],
            id="skipped-stage",
        ),
        pytest.param(
            ["deal", "move", "2", "proposal"],
            2,
            "Error: stage: cannot move deal #2 to 'proposal'",
            ["client.segment: is required", "deal.amount:"],
            id="gate-lists-every-requirement",
        ),
        pytest.param(
            ["deal", "win", "1"],
            2,
            "Error: stage: cannot move deal #1 to 'won'",
            ["does not allow skipping stages"],
            id="win-too-early",
        ),
        pytest.param(
            ["deal", "lose", "1", "--reason", "bad_luck"],
            2,
            "Error: stage: cannot move deal #1 to 'lost'",
            ["'bad_luck' is not a lost reason (allowed: price, competitor"],
            id="unknown-lost-reason",
        ),
        pytest.param(
            ["deal", "open", "1", "--pipeline", "retail_funnel", "--amount", "1"],
            2,
            "Error: pipeline: unknown pipeline 'retail_funnel' (allowed: b2b, webshop)",
            [],
            id="unknown-pipeline",
        ),
        pytest.param(
            ["deal", "open", "1", "--pipeline", "b2b", "--amount", "-5"],
            2,
            "Error: amount: must be a finite amount of zero or more",
            [],
            id="negative-amount",
        ),
        pytest.param(
            ["deal", "open", "1", "--pipeline", "b2b", "--amount", "1", "--close-by", "soon"],
            2,
            "Error: close_by: 'soon' is not a date",
            [],
            id="bad-close-date",
        ),
        pytest.param(
            ["deal", "open", "9", "--pipeline", "b2b", "--amount", "1"],
            3,
            "Error: client: no client with id 9",
            [],
            id="unknown-client",
        ),
        pytest.param(
            ["pipeline", "show", "nope"],
            2,
            "Error: pipeline: unknown pipeline 'nope' (allowed: b2b, webshop, lifecycle)",
            [],
            id="unknown-pipeline-show",
        ),
        pytest.param(
            ["task", "add", "Call", "--due", "next tuesday"],
            2,
            "Error: due: 'next tuesday' is not a date or time",
            [],
            id="unparseable-deadline",
        ),
        pytest.param(
            ["task", "add", "Call", "--due", "+1d", "--assignee", "ghost"],
            2,
            "Error: assignee: no user 'ghost'",
            [],
            id="unknown-assignee",
        ),
        pytest.param(
            ["task", "add", "Call", "--due", "+1d", "--deal", "9"],
            2,
            "Error: deal: no deal with id 9",
            [],
            id="task-for-unknown-deal",
        ),
        pytest.param(
            ["invoice", "issue", "1", "--amount", "ten"],
            2,
            "Error: amount: 'ten' is not an amount of money",
            [],
            id="bad-invoice-amount",
        ),
        pytest.param(
            ["invoice", "pay", "9"],
            3,
            "Error: invoice: no invoice with id 9",
            [],
            id="unknown-invoice",
        ),
        pytest.param(
            ["client", "stage", "1", "vip"],
            2,
            "Error: stage: 'vip' is not a stage of pipeline 'lifecycle'",
            ["allowed: lead, qualified, customer, repeat_customer"],
            id="unknown-client-stage",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    world: Any, crm: Any, args: list[str], code: int, starts: str, contains: list[str]
) -> None:
    before = snapshot(crm)
    for fmt in ([], ["--format", "json"]):
        result = world(*args, *fmt)
        assert result.exit_code == code, result
        assert result.stderr.startswith(starts), result.stderr
        for text in contains:
            assert text in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr + result.output
        assert result.output == ""
    assert snapshot(crm) == before


# -- help, and init --sample -------------------------------------------------------------------
LIFECYCLE_COMMANDS = (
    "log",
    "interaction",
    "kind",
    "pipeline",
    "deal",
    "task",
    "overdue",
    "invoice",
)


def _walk(command: click.Command, path: str = "crmkit") -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _walk(sub, f"{path} {name}")
    return found


def test_every_command_and_option_has_help(crm: Any) -> None:
    from crmkit.cli import build_cli

    root = build_cli(crm.plugins)
    for name in LIFECYCLE_COMMANDS:
        assert name in root.commands, name
    for path, command in _walk(root):
        assert (command.help or "").strip(), f"{path} has no help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"{path} {param.opts[0]} has no help"


def test_every_lifecycle_command_prints_json(crm: Any) -> None:
    """--format json is offered by every lifecycle command (they all print data)."""
    from crmkit.cli import build_cli

    for path, command in _walk(build_cli(crm.plugins)):
        words = path.split()
        ours = len(words) > 1 and words[1] in (*LIFECYCLE_COMMANDS, "client")
        if ours and not isinstance(command, click.Group):
            assert any("--format" in p.opts for p in command.params), path


def test_init_seed_needs_sample(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from crmkit.cli import build_cli
    from crmkit.core.plugins import load_plugins

    plugins = load_plugins(entry_points=False)
    result = CliRunner().invoke(
        build_cli(plugins), ["init", str(tmp_path / "c"), "--seed", "3"], obj=plugins
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: sample: --seed and --sample-clients apply only")
    assert not (tmp_path / "c").exists()


def test_init_sample_fills_the_deployment(tmp_path: Any, crmkit_database_url: str | None) -> None:
    """Needs crmkit.sample (populate); runs the real console script as a user does."""
    target = tmp_path / "demo"
    database = ["--database", crmkit_database_url] if crmkit_database_url else []
    env = {**os.environ}
    run = [sys.executable, "-m", "crmkit"]
    init = ["init", str(target), "--sample", "--seed", "3", "--sample-clients", "60"]
    result = subprocess.run(
        [*run, *init, *database, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    counts = info["sample"]
    assert isinstance(counts, dict) and counts and all(isinstance(v, int) for v in counts.values())
    listed = subprocess.run(
        [*run, "-C", str(target), "deal", "list", "--limit", "1000", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    deals = json.loads(listed.stdout)
    assert {"open", "won", "lost"} <= {d["status"] for d in deals}
    overdue = subprocess.run(
        [*run, "-C", str(target), "overdue", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert overdue.returncode == 0, overdue.stderr


def test_client_list_by_lifecycle_stage(invoke):
    invoke("client", "add", "Lead Ltd")
    invoke("client", "add", "Keen Ltd")
    invoke("client", "stage", "2", "qualified")
    listed = invoke("client", "list", "--stage", "qualified", json=True).json
    assert [c["name"] for c in listed] == ["Keen Ltd"]
    bad = invoke("client", "list", "--stage", "won")
    assert bad.exit_code == 2 and "not a stage of pipeline 'lifecycle'" in bad.stderr
