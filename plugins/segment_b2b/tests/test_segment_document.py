"""The ``proposal`` document through ``crmkit_render_document``, as another plugin asks for it."""

from __future__ import annotations

import re

import crmkit_segment_b2b
import pytest
from crmkit_segment_b2b import ProposalRefused, set_needs

from crmkit import CRM, Document, NotFound, Session, ValidationError

DISTRIBUTOR = {
    "turnover": 300_000_000,
    "sales_reps": 25,
    "own_clients": 900,
    "warehouse_area": 4000,
}
DISTRIBUTOR_NEEDS = {
    "budget": 2_000_000,
    "authority": "decision_maker",
    "need": "Resell printers",
    "timing": "this_quarter",
    "monthly_volume": 150,
    "target_margin": 18,
}


def deal_at_presentation(s: Session, client_id: int) -> int:
    deal = s.deals.open(client_id, pipeline="b2b", amount=500_000, title="Printers")
    s.deals.move(deal.id, "presentation")
    return deal.id


def ready_client(s: Session, name: str = "Vostok <Trade>") -> int:
    client = s.clients.create(name, segment="distributor", params=DISTRIBUTOR)
    set_needs(s, client.id, DISTRIBUTOR_NEEDS)
    return client.id


def test_the_proposal_is_a_document(session: Session) -> None:
    client_id = ready_client(session)
    deal_id = deal_at_presentation(session, client_id)
    document = session.crm.plugins.render_document(session, "proposal", client_id, deal_id)
    assert isinstance(document, Document)
    assert (document.name, document.client_id, document.deal_id) == ("proposal", client_id, deal_id)
    assert document.title == "Commercial proposal for Vostok <Trade>"
    assert "<h1>Commercial proposal for Vostok &lt;Trade&gt;</h1>" in document.html
    assert re.findall(r'data-page="(\d+)"', document.html) == ["1", "2", "3"]
    assert document.text is not None
    assert document.text.startswith("# Commercial proposal for Vostok <Trade>")
    category = session.clients.get(client_id).potential_category
    for sku in session.crm.segment("distributor").settings["offers"][category]:
        assert f'data-sku="{sku}"' in document.html


def test_rendering_the_document_prepares_the_proposal(session: Session) -> None:
    """As ``crmkit proposal render``: logged as prepared, the deal moves to ``proposal``."""
    client_id = ready_client(session)
    deal_id = deal_at_presentation(session, client_id)
    session.crm.plugins.render_document(session, "proposal", client_id, deal_id)
    [logged] = session.interactions.list(client_id=client_id)
    assert (logged.kind, logged.topic, logged.outcome) == ("document", "proposal", "prepared")
    assert logged.deal_id == deal_id
    assert session.deals.get(deal_id).stage == "proposal"


def test_without_a_deal(session: Session) -> None:
    client_id = ready_client(session)
    document = session.crm.plugins.render_document(session, "proposal", client_id)
    assert document.deal_id is None
    assert "deal #" not in document.html


def test_an_incomplete_card_is_refused_naming_what_is_missing(session: Session) -> None:
    client = session.clients.create("Half Known", segment="distributor", params={"turnover": 1e8})
    with pytest.raises(ProposalRefused) as info:
        session.crm.plugins.render_document(session, "proposal", client.id, None)
    assert isinstance(info.value, ValidationError)
    assert info.value.field == "client.params.sales_reps"
    assert [p.field for p in info.value.problems][:1] == ["client.params.sales_reps"]
    assert session.interactions.list(client_id=client.id) == []


def test_a_missing_needs_card_is_refused(session: Session) -> None:
    client = session.clients.create("Vostok", segment="distributor", params=DISTRIBUTOR)
    with pytest.raises(ProposalRefused) as info:
        session.crm.plugins.render_document(session, "proposal", client.id, None)
    assert info.value.step == "needs"
    assert info.value.field == "needs.budget"


def test_a_refusal_rolls_back_nothing_else(crm: CRM) -> None:
    with crm.session() as s:
        client_id = ready_client(s)
        deal_id = deal_at_presentation(s, client_id)
        set_needs(s, client_id, {"budget": 1}, replace=True)  # the needs card is incomplete
    with pytest.raises(ProposalRefused), crm.session() as s:
        s.crm.plugins.render_document(s, "proposal", client_id, deal_id)
    with crm.session() as s:
        assert s.deals.get(deal_id).stage == "presentation"
        assert s.interactions.list(client_id=client_id) == []


@pytest.mark.parametrize("name", ["invoice", "Proposal", ""])
def test_other_names_are_not_this_plugins(session: Session, name: str) -> None:
    client_id = ready_client(session)
    assert crmkit_segment_b2b.crmkit_render_document(session, name, client_id, None) is None
    with pytest.raises(NotFound) as info:
        session.crm.plugins.render_document(session, name, client_id)
    assert info.value.field == "document"
    assert repr(name) in info.value.message
    assert session.interactions.list(client_id=client_id) == []


def test_an_unknown_client_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound):
        session.crm.plugins.render_document(session, "proposal", 9999, None)
