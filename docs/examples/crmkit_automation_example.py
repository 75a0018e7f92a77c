"""An example automation plugin: a time trigger, an action, and a rule that uses both.

* the time trigger ``deal.closing_soon``: an open deal whose expected close
  date is at most ``days`` days away (3 unless the rule's ``params`` say);
* the action ``note``: a note on the event's client (an event in its
  history, ``session.events("client", id)``), its text with
  ``{deal.title}``-style placeholders filled in;
* the rule ``closing_soon_note`` that the plugin ships: a note three days
  before a deal's expected close. A deployment replaces it with a rule of
  the same name in ``crmkit.toml`` (``enabled = false`` turns it off).

Install it like any plugin (an entry point in the group ``crmkit``, or
``[plugins] modules = ["crmkit_automation_example"]``); crmkit's test suite
runs it (``tests/test_cli_automation.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from crmkit import hookimpl
from crmkit.core.automation import Action, Context, TimeTrigger, payload_of


# -- the time trigger --------------------------------------------------------------------------
def closing_soon(
    session: Any, now: dt.datetime, params: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Open deals whose expected close date is at most ``days`` days after ``now``."""
    deals = session.table("deals")
    until = (now + dt.timedelta(days=params.get("days", 3))).date()
    found = session.connection.execute(
        select(deals.c.id).where(
            deals.c.status == "open",
            deals.c.expected_close.is_not(None),
            deals.c.expected_close <= until,
        )
    ).scalars()
    for deal_id in found:
        deal = session.deals.get(deal_id)
        payload = payload_of(
            deal=deal,
            client=session.clients.get(deal.client_id),
            days_left=(deal.expected_close - now.date()).days,
        )
        # the occasion: this deal and this date; a new date is a new occasion
        yield f"closing_soon:{deal.id}:{deal.expected_close.isoformat()}", payload


# -- the action --------------------------------------------------------------------------------
def note(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A note on the event's client, recorded in its history."""
    client = context.payload.get("client") or {}
    if not client.get("id"):
        from crmkit import ValidationError

        raise ValidationError("the event has no client", field="client")
    text = context.render(params["text"])
    # in the rule's transaction: rolled back with it, and by a dry run
    context.session.record("client", client["id"], "note", {"text": text})
    return {"client": client["id"], "note": text}


# -- registration ------------------------------------------------------------------------------
@hookimpl
def crmkit_automation_triggers() -> list[TimeTrigger]:
    return [
        TimeTrigger(
            "deal.closing_soon",
            closing_soon,
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"days": {"type": "integer", "minimum": 0, "maximum": 365}},
            },
            "An open deal whose expected close date is at most N days away",
        )
    ]


@hookimpl
def crmkit_automation_actions() -> list[Action]:
    return [
        Action(
            "note",
            note,
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["text"],
                "properties": {"text": {"type": "string", "minLength": 1}},
            },
            "A note in the client's history",
        )
    ]


@hookimpl
def crmkit_automation_rules() -> list[dict[str, Any]]:
    return [
        {
            "name": "closing_soon_note",
            "title": "A note three days before a deal's expected close",
            "schedule": "deal.closing_soon",
            "params": {"days": 3},
            "actions": [
                {"do": "note", "text": "{deal.title} should close in {days_left} days"},
            ],
        }
    ]
