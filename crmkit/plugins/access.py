"""Built-in plugin: the default access policies, and telling heads about read quotas.

The policies (``default_policies.json`` beside this module, shown on the
"Access policies" page of the docs):

* admins may do everything;
* heads read, export, create, update and reassign everything of their team
  and of the teams nested in it, and what they own;
* managers read, create and update their own clients and what belongs to
  them (contacts, deals, interactions, invoices, tasks), read every deal of
  their clients, and the interactions they logged and tasks they set;
* marketers read client cards without email, phone and requisites, and deals;
* everyone may run reports (which count only what the reader may read);
* a manager opens at most 300 distinct client cards a day.

A deployment replaces a rule or quota by writing one with the same id in a
policy file of its own (``[access] policies``), or drops them all with
``[plugins] disable = ["crmkit.plugins.access"]``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.access import Quota
    from crmkit.core.app import CRM
    from crmkit.core.model import User

POLICY_FILE = Path(__file__).with_name("default_policies.json")


def default_policies() -> dict[str, Any]:
    """The default policy document."""
    data: dict[str, Any] = json.loads(POLICY_FILE.read_text("utf-8"))
    return data


@hookimpl(trylast=True)
def crmkit_access_policies() -> list[dict[str, Any]]:
    return [default_policies()]


@hookimpl(trylast=True)
def crmkit_read_quota_exceeded(crm: CRM, user: User, quota: Quota, heads: list[User]) -> None:
    """Give each head a task: look into why this user opens so many client cards."""
    with crm.session() as s:
        for head in heads:
            s.tasks.add(
                f"{user.name} ({user.login}) reached the limit of {quota.per_day} client "
                f"cards a day ({quota.id}); check why",
                due=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
                assignee=head.id,
            )
