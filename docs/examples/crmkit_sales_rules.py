"""crmkit-sales-rules: an example plugin for the lifecycle hooks.

A company's own sales rules, kept in one module:

* registration: the kind ``letter`` learns the topic ``tender`` and a new kind
  ``demo`` appears (``crmkit_interaction_kinds``); a ``tender`` pipeline for
  public tenders (``crmkit_pipelines``);
* gate: no commercial proposal before the client has a contact person
  (``crmkit_check_stage_entry``);
* events: an unanswered call asks for another call, a "not interested" loses
  the deal (``crmkit_interaction_logged``); a lost deal gets a review task
  (``crmkit_stage_changed``); a paid invoice moves a B2B deal on to payment
  and shipment (``crmkit_invoice_status_changed``).

Load it by name from a deployment's ``crmkit.toml``
(``[plugins] modules = ["crmkit_sales_rules"]``) with ``docs/examples`` on
``PYTHONPATH``. Like every plugin module, it imports only ``crmkit.hookimpl``
at the top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:  # for the annotations only
    from crmkit import Client, Deal, Interaction, Invoice, Session, Stage, StageChange

TENDER: dict[str, Any] = {
    "name": "tender",
    "title": "Public tender",
    "stages": [
        {"name": "announced", "probability": 0.05, "days": 14, "marks": ["mql"]},
        {
            "name": "documents",
            "title": "Documents submitted",
            "probability": 0.2,
            "days": 30,
            "marks": ["sql", "proposal"],
            # the tender's closing date must be known before the documents go out
            "gate": {
                "properties": {"deal": {"properties": {"expected_close": {"type": "string"}}}}
            },
        },
        {"name": "awarded", "probability": 0.8, "days": 30},
    ],
    "lost_reasons": ["price", "disqualified", "cancelled", "no_need"],
    "rules": [
        {"kind": "letter", "topic": "tender", "outcome": "delivered", "move_to": "documents"},
        {
            "outcome": "contract_signed",
            "move_to": "awarded",
            "task": {"title": "Provide the performance guarantee", "due_in_hours": 72},
        },
    ],
}


# -- registration hooks ------------------------------------------------------------
@hookimpl
def crmkit_interaction_kinds() -> list[dict[str, Any]]:
    return [
        # merged into the built-in kind: its topics and outcomes stay
        {"name": "letter", "topics": {"tender": "Tender documents"}},
        {
            "name": "demo",
            "title": "Product demo",
            "topics": ["online", "on_site"],
            "outcomes": ["interested", "proposal_requested", "not_interested"],
        },
    ]


@hookimpl
def crmkit_pipelines() -> list[dict[str, Any]]:
    return [TENDER]


# -- gate hook --------------------------------------------------------------------
@hookimpl
def crmkit_check_stage_entry(
    session: Session, stage: Stage, deal: Deal | None, client: Client
) -> list[str]:
    if deal is not None and "proposal" in stage.marks and not session.contacts.list(client.id):
        return [f"client #{client.id} has no contact person to send the proposal to"]
    return []


# -- event hooks ------------------------------------------------------------------
@hookimpl
def crmkit_interaction_logged(interaction: Interaction) -> list[Any]:
    from crmkit import FollowUp, MoveTo

    if interaction.kind == "call" and interaction.outcome == "no_answer":
        return [FollowUp("Call again", due_in_hours=4)]
    if interaction.outcome == "not_interested" and interaction.deal_id is not None:
        return [MoveTo("lost", reason="no_need")]
    return []


@hookimpl
def crmkit_stage_changed(session: Session, change: StageChange) -> None:
    import datetime as dt

    if change.entity == "deal" and change.to_stage == "lost":
        session.tasks.add(
            "Review the lost deal",
            due=change.at + dt.timedelta(days=3),
            deal_id=change.entity_id,
            steps=["Read the interactions", "Talk to the owner", "Write down the lesson"],
        )


@hookimpl
def crmkit_invoice_status_changed(
    session: Session, invoice: Invoice, old_status: str | None
) -> None:
    if old_status != "issued" or invoice.status != "paid":
        return
    deal = session.deals.get(invoice.deal_id)
    if deal.pipeline == "b2b" and deal.stage == "contract_invoice":
        session.deals.move(deal.id, "payment_shipment", at=invoice.paid_at, cause="automation")
