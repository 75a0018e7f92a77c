"""``crmkit automation list|show|test|log|run``, and the example automation plugin of the docs."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from crmkit import CRM

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

import crmkit_automation_example  # noqa: E402  (lives in docs/examples, added to sys.path above)

RULES = """
[automation.rules.interested_call]
title = "An interested call opens a deal and a follow-up"
event = "interaction.logged"
when = { properties = { interaction = { properties = { outcome = { const = "interested" } } } } }
actions = [
    { do = "open_deal", pipeline = "b2b", title = "{client.name}: first order" },
    { do = "create_task", title = "Follow up {client.name}", due = "+1d", assignee = { user = "boris" } },
]

[automation.rules.stalled]
title = "A stuck deal: a task for its owner"
schedule = "deal.stalled"
params = { days = 7 }
actions = [{ do = "create_task", title = "Deal {deal.title} is stuck in {stage}", due = "+4h" }]

[automation.rules.switched_off]
event = "deal.won"
enabled = false
actions = [{ do = "create_task", title = "Say thank you" }]
"""  # noqa: E501


@pytest.fixture
def deployment(crm: CRM) -> CRM:
    """anna and boris of team sales, anna's client Acme, and the rules above in crmkit.toml."""
    with crm.session() as s:
        s.teams.add("sales")
        for login in ("anna", "boris"):
            s.users.add(login, role="manager", team="sales")
    with crm.session(as_user="anna") as s:
        s.clients.create("Acme", email="buy@acme.example", owner="anna")
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + RULES, "utf-8")
    return crm  # the CLI opens the deployment anew, with the rules


def reopened(crm: CRM) -> CRM:
    return CRM.open(crm.config.root, plugins=crm.plugins)


def log_call(invoke: Any, outcome: str = "interested") -> Any:
    result = invoke(
        "log", "call", "1", "--topic", "first_contact", "--outcome", outcome,
        "--direction", "outbound", as_user="anna", json=True,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return result.json


def stalled_deal(invoke: Any) -> int:
    result = invoke(
        "deal", "open", "1", "--pipeline", "b2b", "--amount", "50000", "--title", "Pumps",
        "--at", "-30d", as_user="anna", json=True,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return int(result.json["id"])


# -- list, show -------------------------------------------------------------------------------
def test_list_names_every_rule_with_its_trigger(deployment: CRM, invoke: Any) -> None:
    listed = invoke("automation", "list", json=True).json
    assert listed == [
        {
            "name": "interested_call",
            "trigger": "event interaction.logged",
            "title": "An interested call opens a deal and a follow-up",
            "actions": 2,
            "enabled": True,
            "plugin": None,
        },
        {
            "name": "stalled",
            "trigger": "schedule deal.stalled",
            "title": "A stuck deal: a task for its owner",
            "actions": 1,
            "enabled": True,
            "plugin": None,
        },
        {
            "name": "switched_off",
            "trigger": "event deal.won",
            "title": "",
            "actions": 1,
            "enabled": False,
            "plugin": None,
        },
    ]
    table = invoke("automation", "list")
    assert table.exit_code == 0 and "│ stalled " in table.output and " no " in table.output


def test_show_gives_everything_about_a_rule(deployment: CRM, invoke: Any) -> None:
    shown = invoke("automation", "show", "interested_call", json=True).json
    assert shown["trigger"] == "event interaction.logged"
    assert shown["when"] == {
        "properties": {"interaction": {"properties": {"outcome": {"const": "interested"}}}}
    }
    assert shown["actions"][1] == {
        "do": "create_task",
        "params": {
            "title": "Follow up {client.name}",
            "due": "+1d",
            "assignee": {"user": "boris"},
        },
    }
    assert shown["runs"] == {"total": 0, "by_status": {}, "last_at": None}
    log_call(invoke)
    assert invoke("automation", "show", "interested_call", json=True).json["runs"]["total"] == 1
    table = invoke("automation", "show", "stalled").output
    assert "trigger:   schedule deal.stalled" in table
    assert 'params:    {"days": 7}' in table
    assert "condition: (none: always)" in table
    assert "1. create_task" in table and "runs:      none yet" in table


def test_an_unknown_rule_is_not_found_and_the_known_ones_are_named(
    deployment: CRM, invoke: Any, tmp_path: Path
) -> None:
    event = tmp_path / "event.json"
    event.write_text("{}")
    for args in (
        ("show", "nope"),
        ("test", "nope", "--event", str(event)),
        ("log", "--rule", "nope"),
    ):
        result = invoke("automation", *args)
        assert result.exit_code == 3, (args, result)
        assert "no rule 'nope' (rules: interested_call, stalled, switched_off)" in result.stderr
        assert "Traceback" not in result.output + result.stderr


# -- test: the dry run -------------------------------------------------------------------------
def test_a_dry_run_says_what_would_happen_and_stores_nothing(
    deployment: CRM, invoke: Any, tmp_path: Path
) -> None:
    event = tmp_path / "call.json"
    event.write_text(
        json.dumps(
            {
                "interaction": {"outcome": "interested", "direction": "outbound"},
                "client": {"id": 1, "name": "Acme", "owner_id": 2},
            }
        )
    )
    answer = invoke("automation", "test", "interested_call", "--event", str(event), json=True)
    assert answer.exit_code == 0, answer.stderr
    assert answer.json["fires"] is True
    assert [a["do"] for a in answer.json["actions"]] == ["open_deal", "create_task"]
    table = invoke("automation", "test", "interested_call", "--event", str(event))
    lines = table.output.splitlines()
    assert lines[0] == "Rule interested_call would fire; its actions would do:"
    assert lines[1].startswith("  1. open_deal: deal #") and lines[1].endswith("assignee admin")
    assert lines[2].startswith("  2. create_task: tasks #") and lines[2].endswith("assignee boris")
    assert lines[3] == "(a dry run: nothing was stored)"
    assert table.stderr == ""  # no warning either
    as_anna = invoke(
        "automation", "test", "interested_call", "--event", str(event), "--actor", "anna"
    )
    assert as_anna.output.splitlines()[1].endswith("assignee anna")  # open_deal's owner: the actor
    ghost = invoke("automation", "test", "interested_call", "--event", str(event), "--actor", "gh")
    assert ghost.exit_code == 3 and "gh" in ghost.stderr
    with reopened(deployment) as crm, crm.session() as s:
        assert s.deals.list() == [] and s.tasks.list() == []
    assert invoke("automation", "log", json=True).json == []


def test_a_dry_run_that_would_not_fire_or_would_fail_exits_0(
    deployment: CRM, invoke: Any, tmp_path: Path
) -> None:
    busy = invoke(
        "automation", "test", "interested_call", "--event", "-",
        input='{"interaction": {"outcome": "busy"}}',
    )  # fmt: skip
    assert busy.exit_code == 0
    assert busy.output == "Rule interested_call would not fire: the condition does not hold\n"
    no_client = invoke(
        "automation", "test", "interested_call", "--event", "-",
        input='{"interaction": {"outcome": "interested"}}', json=True,
    )  # fmt: skip
    assert no_client.exit_code == 0
    assert no_client.json["fires"] is False and no_client.json["status"] == "failed"
    assert "the event has no client" in no_client.json["error"]
    table = invoke(
        "automation", "test", "interested_call", "--event", "-",
        input='{"interaction": {"outcome": "interested"}}',
    )  # fmt: skip
    assert "would fire and fail" in table.output
    assert "1. open_deal: FAILS: client: the event has no client" in table.output


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"interaction": ', "is not valid JSON: Expecting value (line 1, column 17)"),
        ("[1, 2]", "must hold a JSON object"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
    ],
)
def test_a_malformed_event_file_is_a_clear_error_naming_it(
    deployment: CRM, invoke: Any, tmp_path: Path, content: Any, reason: str
) -> None:
    event = tmp_path / "bad-event.json"
    if isinstance(content, bytes):
        event.write_bytes(content)
    else:
        event.write_text(content)
    result = invoke("automation", "test", "interested_call", "--event", str(event))
    assert result.exit_code == 2, result
    assert result.stderr.startswith(f"Error: event: {event} ")
    assert reason in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_event_file_and_a_bad_stdin_are_named(deployment: CRM, invoke: Any) -> None:
    missing = invoke("automation", "test", "stalled", "--event", "no-such-file.json")
    assert missing.exit_code == 2
    assert "cannot read no-such-file.json" in missing.stderr
    piped = invoke("automation", "test", "stalled", "--event", "-", input="not json")
    assert piped.exit_code == 2 and "Error: event: stdin is not valid JSON" in piped.stderr


def test_only_admins_dry_run_and_read_the_log(deployment: CRM, invoke: Any, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text("{}")
    assert invoke("automation", "list", as_user="anna").exit_code == 0
    assert invoke("automation", "show", "stalled", as_user="anna").exit_code == 0
    for args in (("test", "stalled", "--event", str(event)), ("log",)):
        refused = invoke("automation", *args, as_user="anna")
        assert refused.exit_code == 5 and "needs the role admin" in refused.stderr


# -- log ---------------------------------------------------------------------------------------
def test_log_lists_the_runs_newest_first_with_filters(deployment: CRM, invoke: Any) -> None:
    logged = log_call(invoke)
    stalled_deal(invoke)
    assert invoke("automation", "run", "--once").exit_code == 0
    runs = invoke("automation", "log", json=True).json
    assert [(r["rule"], r["status"]) for r in runs] == [
        ("stalled", "fired"),
        ("interested_call", "fired"),
    ]
    assert runs[1]["key"] == f"interaction:{logged['interaction']['id']}"
    assert runs[1]["results"][0]["do"] == "open_deal"
    only = invoke("automation", "log", "--rule", "interested_call", json=True).json
    assert [r["rule"] for r in only] == ["interested_call"]
    assert len(invoke("automation", "log", "--limit", "1", json=True).json) == 1
    assert invoke("automation", "log", "--since", "+1d", json=True).json == []
    assert len(invoke("automation", "log", "--since", "today", json=True).json) == 2
    table = invoke("automation", "log")
    assert table.exit_code == 0 and "│ stalled " in table.output


def test_log_refuses_a_garbage_since(deployment: CRM, invoke: Any) -> None:
    result = invoke("automation", "log", "--since", "the day before")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: since: 'the day before' is not a date or time")


def test_a_failed_run_shows_its_error(deployment: CRM, invoke: Any) -> None:
    path = deployment.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8").replace('user = "boris"', 'user = "ghost"'), "utf-8")
    log_call(invoke)
    [run] = invoke("automation", "log", json=True).json
    assert run["status"] == "failed" and "ghost" in run["error"]
    assert "ghost" in invoke("automation", "log").output
    with reopened(deployment) as crm, crm.session() as s:
        assert s.deals.list() == []  # the rule's deal was rolled back; the call is kept
        assert len(s.interactions.list()) == 1


# -- run: the scheduler ------------------------------------------------------------------------
def test_run_once_fires_each_occasion_once(deployment: CRM, invoke: Any) -> None:
    deal_id = stalled_deal(invoke)
    first = invoke("automation", "run", "--once")
    assert first.exit_code == 0, first.stderr
    [line] = first.output.splitlines()
    assert f"stalled fired on deal_stalled:{deal_id}:" in line
    assert line.endswith("create_task: tasks #1, assignee anna")
    again = invoke("automation", "run", "--once", json=True)
    assert again.exit_code == 0 and again.json == []
    assert invoke("automation", "run", "--once").output == ""  # nothing new: silent, for cron
    with reopened(deployment) as crm, crm.session() as s:
        [task] = s.tasks.list()
    assert task.title.startswith("Deal Pumps is stuck in ") and task.assignee == "anna"


def test_run_once_as_json_and_as_the_configured_user(deployment: CRM, invoke: Any) -> None:
    stalled_deal(invoke)
    path = deployment.config.root / "crmkit.toml"
    text = path.read_text("utf-8").replace(
        "[automation.rules.interested_call]", '[automation]\nas_user = "boris"\n\n'
        "[automation.rules.interested_call]"
    )  # fmt: skip
    path.write_text(text, "utf-8")
    runs = invoke("automation", "run", "--once", json=True).json
    assert [(r["rule"], r["status"]) for r in runs] == [("stalled", "fired")]
    with reopened(deployment) as crm, crm.session() as s:
        [task] = s.tasks.list()
        [event] = [e for e in s.events("task", task.id) if e["action"] == "created"]
    assert event["user"] == "boris"  # the rule acted as [automation] as_user


def test_the_scheduler_loop_stops_cleanly_on_sigterm(deployment: CRM, invoke: Any) -> None:
    stalled_deal(invoke)
    child = subprocess.Popen(
        [
            sys.executable, "-m", "crmkit", "-C", str(deployment.config.root),
            "automation", "run", "--interval", "0.2", "--format", "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CRMKIT_LOAD_PLUGINS": ""},
    )  # fmt: skip
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # the first round fires the stalled deal
        run = json.loads(line)
        assert (run["rule"], run["status"]) == ("stalled", "fired")
        time.sleep(0.5)  # a few more rounds, which fire nothing
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert out == ""  # the occasion fired once
    assert "crmkit automation scheduler: 1 time-triggered rule(s), every 0.2 s" in err
    assert err.rstrip().endswith("crmkit automation scheduler: stopped")
    assert "Traceback" not in err


# -- the example plugin of docs/automation.rst ----------------------------------------------------
def test_the_example_plugin_adds_a_trigger_an_action_and_a_rule(
    crm: CRM, register_plugin: Any, invoke: Any
) -> None:
    register_plugin(crmkit_automation_example)
    assert crm.automation.triggers["deal.closing_soon"].plugin == "crmkit_automation_example"
    assert crm.automation.actions["note"].plugin == "crmkit_automation_example"
    listed = invoke("automation", "list", json=True).json
    assert {r["name"]: r["plugin"] for r in listed} == {
        "closing_soon_note": "crmkit_automation_example"
    }
    today = dt.datetime.now(dt.UTC).date()
    close = today + dt.timedelta(days=2)
    with crm.session() as s:
        client = s.clients.create("Acme")
        soon = s.deals.open(client.id, pipeline="b2b", title="Pumps", amount=100)
        s.deals.update(soon.id, expected_close=close)
        later = s.deals.open(client.id, pipeline="b2b", title="Valves", amount=100)
        s.deals.update(later.id, expected_close=today + dt.timedelta(days=30))
    fired = invoke("automation", "run", "--once", json=True).json
    assert [(r["rule"], r["key"]) for r in fired] == [
        ("closing_soon_note", f"closing_soon:{soon.id}:{close.isoformat()}")
    ]
    assert fired[0]["results"] == [
        {"do": "note", "client": client.id, "note": "Pumps should close in 2 days"}
    ]
    assert invoke("automation", "run", "--once", json=True).json == []
    with crm.session() as s:
        notes = [e["data"] for e in s.events("client", client.id) if e["action"] == "note"]
    assert notes == [{"text": "Pumps should close in 2 days"}]


def test_the_example_plugins_rule_is_replaced_by_the_deployments(
    crm: CRM, register_plugin: Any, invoke: Any
) -> None:
    register_plugin(crmkit_automation_example)
    path = crm.config.root / "crmkit.toml"
    path.write_text(
        path.read_text("utf-8")
        + """
[automation.rules.closing_soon_note]
schedule = "deal.closing_soon"
params = { days = 10 }
enabled = false
actions = [{ do = "note", text = "{deal.title}: {days_left} days left" }]
""",
        "utf-8",
    )
    [rule] = invoke("automation", "list", json=True).json
    assert (rule["name"], rule["enabled"], rule["plugin"]) == ("closing_soon_note", False, None)
    bad = path.read_text("utf-8").replace("days = 10", "days = -1")
    path.write_text(bad, "utf-8")
    refused = invoke("automation", "list")
    assert refused.exit_code == 6
    assert "automation.rules.closing_soon_note.params" in refused.stderr


def test_a_condition_compares_amounts_as_numbers(deployment: CRM, invoke: Any) -> None:
    path = deployment.config.root / "crmkit.toml"
    path.write_text(
        path.read_text("utf-8")
        + """
[automation.rules.big_loss]
event = "deal.lost"
when = { properties = { deal = { properties = { amount = { minimum = 100000 } } } } }
actions = [{ do = "create_task", title = "Why did we lose {deal.title} ({deal.amount})?" }]
""",
        "utf-8",
    )
    ids = []
    for amount in ("50000", "150000.50"):
        opened = invoke(
            "deal", "open", "1", "--pipeline", "b2b", "--amount", amount, "--title", amount,
            as_user="anna", json=True,
        )  # fmt: skip
        ids.append(opened.json["id"])
    for deal_id in ids:
        lost = invoke("deal", "lose", str(deal_id), "--reason", "price", as_user="anna")
        assert lost.exit_code == 0, lost.stderr
    [run] = invoke("automation", "log", "--rule", "big_loss", json=True).json
    assert run["key"].startswith("stage_change:")
    with reopened(deployment) as crm, crm.session() as s:
        assert [t.title for t in s.tasks.list()] == ["Why did we lose 150000.50 (150000.5)?"]


# -- docs/automation.rst ---------------------------------------------------------------------
PAGE = EXAMPLES.parent / "automation.rst"


def _toml_blocks(text: str) -> list[str]:
    """The ``.. code-block:: toml`` blocks of a reST page, dedented."""
    import re
    import textwrap

    blocks = re.findall(r"^\.\. code-block:: toml\n\n((?:(?:   .*)?\n)+)", text, re.MULTILINE)
    return [textwrap.dedent(b) for b in blocks]


def test_the_pages_rules_are_valid_rules(crm: CRM) -> None:
    """Every TOML example of docs/automation.rst that defines rules loads in a deployment."""
    import tomllib

    blocks = [b for b in _toml_blocks(PAGE.read_text("utf-8")) if "[automation.rules." in b]
    assert len(blocks) >= 3
    with crm.session() as s:
        s.teams.add("sales")
    names = set()
    for block in blocks:
        rules = tomllib.loads(block)["automation"]["rules"]
        names |= set(rules)
        path = crm.config.root / "crmkit.toml"
        original = path.read_text("utf-8")
        path.write_text(original + "\n" + block, "utf-8")
        try:
            reopened(crm).close()  # a bad rule is a ConfigError here
        finally:
            path.write_text(original, "utf-8")
    assert {"interested_call", "stalled_deal", "silent_client"} <= names
    # the conditions shown are valid JSON Schemas over the payload
    [conditions] = [b for b in _toml_blocks(PAGE.read_text("utf-8")) if "# a deal of" in b]
    from crmkit.core.validation import check_schema

    for line in conditions.splitlines():
        if line.startswith("when = "):
            check_schema(tomllib.loads(line)["when"], field="when")


def test_the_page_describes_every_event_action_parameter_and_trigger(crm: CRM) -> None:
    from crmkit.core.automation import EVENTS

    text = PAGE.read_text("utf-8")
    for event in EVENTS:
        assert f"``{event}``" in text, event
    for name, action in crm.automation.actions.items():
        assert f"``{name}``" in text, name
        for param in action.schema.get("properties", {}):
            assert f"``{param}``" in text, f"{name}.{param}"
    for name, trigger in crm.automation.triggers.items():
        assert f"``{name}``" in text, name
        for param in trigger.schema.get("properties", {}):
            assert f"``{param}``" in text, f"{name}.{param}"
    forms = ['``"owner"``', '``"actor"``', '``"head"``', 'by = "workload"', 'by = "round_robin"']
    for form in forms:
        assert form in text, form
