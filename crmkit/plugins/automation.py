"""Built-in automation: the core's events, actions and time triggers (:doc:`/automation`).

This module holds only the hook implementations, so that loading the
plugin (every ``crmkit`` command does) imports nothing heavy; the work is in
:mod:`crmkit.plugins.automation_impl`.

* **Events**: ``client.created``, ``interaction.logged``,
  ``deal.stage_changed``, ``deal.won``, ``deal.lost``,
  ``invoice.status_changed``, ``email.opened`` (raised from the core's hooks
  in the transaction of the change); ``lead.captured`` comes from
  ``POST /api/leads``.
* **Actions**: ``create_task``, ``assign_owner``, ``move_stage``,
  ``open_deal``, ``set_field``.
* **Time triggers**: ``deal.stalled``, ``client.no_contact``,
  ``task.due_soon``, ``task.overdue``.
"""

from __future__ import annotations

from typing import Any

from crmkit import hookimpl


@hookimpl(trylast=True)
def crmkit_client_saved(session: Any, client: Any, created: bool) -> None:
    """``client.created``."""
    from .automation_impl import client_saved

    client_saved(session, client, created)


@hookimpl(trylast=True)
def crmkit_interaction_logged(session: Any, interaction: Any) -> None:
    """``interaction.logged``."""
    from .automation_impl import interaction_logged

    interaction_logged(session, interaction)


@hookimpl(trylast=True)
def crmkit_stage_changed(session: Any, change: Any) -> None:
    """``deal.stage_changed``, and ``deal.won`` or ``deal.lost``."""
    from .automation_impl import stage_changed

    stage_changed(session, change)


@hookimpl(trylast=True)
def crmkit_invoice_status_changed(session: Any, invoice: Any, old_status: str | None) -> None:
    """``invoice.status_changed``."""
    from .automation_impl import invoice_status_changed

    invoice_status_changed(session, invoice, old_status)


@hookimpl(trylast=True)
def crmkit_email_opened(session: Any, message: dict[str, Any], first: bool, document: bool) -> None:
    """``email.opened`` (when the email tracking plugin is installed)."""
    from .automation_impl import email_opened

    email_opened(session, message, first, document)


@hookimpl(trylast=True)
def crmkit_automation_actions() -> list[Any]:
    """``create_task``, ``assign_owner``, ``move_stage``, ``open_deal``, ``set_field``."""
    from .automation_impl import actions

    return actions()


@hookimpl(trylast=True)
def crmkit_automation_triggers() -> list[Any]:
    """``deal.stalled``, ``client.no_contact``, ``task.due_soon``, ``task.overdue``."""
    from .automation_impl import triggers

    return triggers()


@hookimpl(trylast=True)
def crmkit_startup(crm: Any) -> None:
    """Check every rule when the deployment opens (a ConfigError naming the rule)."""
    crm.automation  # noqa: B018 - loading checks
