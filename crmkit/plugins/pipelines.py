"""Built-in plugin: pipeline templates and the client lifecycle.

* ``b2b``: the B2B funnel of the source documents: qualification,
  presentation, commercial proposal, contract and invoice, payment and
  shipment; ``won`` and ``lost`` are terminal.
* ``webshop``: ad, visit, product view, cart, payment, delivery.
* ``lifecycle``: the client's lifecycle (lead, qualified, customer, repeat
  customer; ``lost``), moved by the same outcome rules and, when a deal is
  won, to customer (or repeat customer). A won deal is the one way back from
  ``lost``: a lost client who buys again is a customer again.
"""

from __future__ import annotations

from typing import Any

from crmkit import hookimpl

LOST_REASONS = [
    "price",
    "competitor",
    "no_budget",
    "no_need",
    "no_response",
    "timing",
    "bad_fit",
    "other",
]

B2B: dict[str, Any] = {
    "name": "b2b",
    "title": "B2B sales",
    "description": "The written funnel of a B2B sales department.",
    "entity": "deal",
    "stages": [
        {
            "name": "qualification",
            "title": "Qualification",
            "probability": 0.1,
            "days": 7,
            "marks": ["mql"],
        },
        {
            "name": "presentation",
            "title": "Presentation",
            "probability": 0.25,
            "days": 14,
            "marks": ["sql"],
        },
        {
            "name": "proposal",
            "title": "Commercial proposal",
            "probability": 0.5,
            "days": 10,
            "marks": ["proposal"],
            # the segment and the deal's amount must be known before a proposal
            "gate": {
                "properties": {
                    "client": {
                        "required": ["segment"],
                        "properties": {"segment": {"type": "string"}},
                    },
                    "deal": {"properties": {"amount": {"exclusiveMinimum": 0}}},
                }
            },
        },
        {
            "name": "contract_invoice",
            "title": "Contract and invoice",
            "probability": 0.7,
            "days": 10,
        },
        {
            "name": "payment_shipment",
            "title": "Payment and shipment",
            "probability": 0.9,
            "days": 14,
        },
    ],
    "lost_reasons": LOST_REASONS,
    "rules": [
        {"outcome": "meeting_scheduled", "move_to": "presentation"},
        {
            "outcome": "proposal_requested",
            "move_to": "proposal",
            "task": {
                "title": "Prepare and send the commercial proposal",
                "due_in_hours": 24,
                "steps": [
                    "Check the client card",
                    "Fill in the proposal template",
                    "Send it and log the email",
                ],
            },
        },
        {
            "outcome": "agreed",
            "move_to": "contract_invoice",
            "task": {"title": "Send the contract and the invoice", "due_in_hours": 24},
        },
        {"outcome": "contract_signed", "move_to": "contract_invoice"},
        {"outcome": "payment_promised", "move_to": "payment_shipment"},
        # documents fix the move: a prepared proposal, a signed contract
        {"kind": "document", "topic": "proposal", "outcome": "prepared", "move_to": "proposal"},
        {
            "kind": "document",
            "topic": "contract",
            "outcome": "signed",
            "move_to": "contract_invoice",
        },
    ],
}

WEBSHOP: dict[str, Any] = {
    "name": "webshop",
    "title": "Web shop",
    "description": "An online shop's funnel; visitors may jump ahead.",
    "entity": "deal",
    "allow_skip": True,
    "stages": [
        {"name": "ad", "title": "Advertisement", "probability": 0.01, "days": 3, "marks": ["mql"]},
        {"name": "visit", "title": "Visit", "probability": 0.03, "days": 3},
        {
            "name": "product_view",
            "title": "Product view",
            "probability": 0.08,
            "days": 3,
            "marks": ["sql"],
        },
        {"name": "cart", "title": "Cart", "probability": 0.3, "days": 2, "marks": ["proposal"]},
        {"name": "payment", "title": "Payment", "probability": 0.85, "days": 2},
        {"name": "delivery", "title": "Delivery", "probability": 0.97, "days": 7},
    ],
    "lost_reasons": ["abandoned_cart", "payment_failed", "out_of_stock", "returned", "other"],
}

LIFECYCLE: dict[str, Any] = {
    "name": "lifecycle",
    "title": "Client lifecycle",
    "description": "Where a client stands with us.",
    "entity": "client",
    "allow_skip": True,
    "stages": [
        {"name": "lead", "title": "Lead"},
        {"name": "qualified", "title": "Qualified"},
        {"name": "customer", "title": "Customer"},
        {"name": "repeat_customer", "title": "Repeat customer"},
    ],
    "lost_reasons": ["no_need", "competitor", "closed_down", "no_response", "other"],
    "rules": [
        {"outcome": "interested", "move_to": "qualified"},
        {"outcome": "meeting_scheduled", "move_to": "qualified"},
        {"outcome": "needs_identified", "move_to": "qualified"},
        {"outcome": "proposal_requested", "move_to": "qualified"},
    ],
}


@hookimpl(trylast=True)
def crmkit_pipelines() -> list[dict[str, Any]]:
    return [B2B, WEBSHOP, LIFECYCLE]


@hookimpl
def crmkit_stage_changed(session: Any, change: Any) -> None:
    """A won deal makes its client a customer, or a repeat customer if it was one."""
    if change.entity != "deal" or change.to_stage != "won":
        return
    lifecycle = session.crm.lifecycle
    if lifecycle is None:
        return
    # an effect of the allowed win: the winner need not be allowed to move the client's card
    with session.access.on_behalf("a won deal makes its client a customer"):
        _client_bought(session, lifecycle, change)


def _client_bought(session: Any, lifecycle: Any, change: Any) -> None:
    client_id = session.deals.get(change.entity_id).client_id
    current = session.clients.get(client_id).stage
    bought_before = current in ("customer", "repeat_customer") or (
        current == "lost"
        and any(
            h.to_stage in ("customer", "repeat_customer")
            for h in session.history.of("client", client_id)
        )
    )
    target = "repeat_customer" if bought_before else "customer"
    if current != target and target in lifecycle.stage_names:
        # never before the client's last lifecycle move (a win recorded after the fact)
        client = session.clients.get(client_id)
        entered = [h.at for h in session.history.of("client", client_id)]
        at = max([change.at, *entered, *([client.created_at] if client.created_at else [])])
        # a lost client who buys again is a customer again (the one way back from lost)
        session.clients.move(
            client_id, target, cause="automation", at=at, reactivate=current == "lost"
        )


@hookimpl
def crmkit_records_imported(
    session: Any, kind: str, inserted_ids: list[int], updated_ids: list[int]
) -> None:
    """Imported won deals make their clients customers too, in bulk (one batch at a time).

    The same rule as for a deal won live (:func:`crmkit_stage_changed`), applied
    with a few queries per import batch instead of per deal: the client becomes
    a customer at its first won deal and a repeat customer at the next, each
    move recorded with the deal's closing time and the cause ``import``.
    """
    lifecycle = session.crm.lifecycle
    if kind != "deals" or not inserted_ids or lifecycle is None:
        return
    names = set(lifecycle.stage_names)
    if not {"customer", "repeat_customer"} <= names:
        return
    from sqlalchemy import bindparam, func, select, update

    from crmkit.core.lifecycle import close_stays
    from crmkit.transfer.importer import BulkInsert

    deals, clients = session.table("deals"), session.table("clients")
    changes = session.table("stage_changes")
    conn = session.connection
    wins: dict[int, list[Any]] = {}
    for client_id, closed_at in conn.execute(
        select(deals.c.client_id, deals.c.closed_at)
        .where(deals.c.id.in_(inserted_ids), deals.c.status == "won")
        .order_by(deals.c.closed_at, deals.c.id)
    ):
        wins.setdefault(client_id, []).append(closed_at)
    if not wins:
        return
    ids = list(wins)
    state = {
        cid: [stage, created]
        for cid, stage, created in conn.execute(
            select(clients.c.id, clients.c.stage, clients.c.created_at).where(clients.c.id.in_(ids))
        )
    }
    last_move = dict(
        conn.execute(
            select(changes.c.entity_id, func.max(changes.c.at))
            .where(changes.c.entity == "client", changes.c.entity_id.in_(ids))
            .group_by(changes.c.entity_id)
        ).all()
    )
    bought = {
        cid
        for (cid,) in conn.execute(
            select(changes.c.entity_id)
            .where(
                changes.c.entity == "client",
                changes.c.entity_id.in_(ids),
                changes.c.to_stage.in_(["customer", "repeat_customer"]),
            )
            .distinct()
        )
    }
    rows: list[tuple[Any, ...]] = []
    final: list[dict[str, Any]] = []
    for cid, closings in wins.items():
        stage, created = state[cid]
        floor = max(x for x in (last_move.get(cid), created) if x is not None)
        for closed_at in closings:
            again = stage in ("customer", "repeat_customer") or (stage == "lost" and cid in bought)
            target = "repeat_customer" if again else "customer"
            if target == stage:
                continue
            at = max(closed_at, floor)
            rows.append(
                ("client", cid, lifecycle.name, stage, target, at, session.user.id, "import")
            )
            stage, floor = target, at
            bought.add(cid)
        final.append({"cid": cid, "stage": stage})
    BulkInsert(
        session,
        "stage_changes",
        ("entity", "entity_id", "pipeline", "from_stage", "to_stage", "at", "user_id", "cause"),
    )(rows)
    close_stays(session, "client", list(dict.fromkeys(row[1] for row in rows)))
    if rows:  # one audit entry for the batch's moves, naming every client moved
        session.audit(
            "moved",
            "client",
            ids=list(dict.fromkeys(row[1] for row in rows)),
            detail={"pipeline": lifecycle.name, "cause": "import", "moves": len(rows)},
            kind="change",
        )
    conn.execute(
        update(clients).where(clients.c.id == bindparam("cid")).values(stage=bindparam("stage")),
        final,
    )
