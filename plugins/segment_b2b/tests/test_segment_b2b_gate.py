"""The proposal gate end to end: refusals, the rendered proposal, the stage gate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crmkit_segment_b2b import ProposalRefused, needs_schema, set_needs
from crmkit_segment_b2b import get_needs as get
from crmkit_segment_b2b import render_proposal as render

from crmkit import CRM, Session, ValidationError

CliRun = Callable[..., Any]

DISTRIBUTOR = {
    "turnover": 300_000_000,
    "sales_reps": 25,
    "own_clients": 900,
    "warehouse_area": 4000,
}
CORPORATE = {"employees": 1500, "offices": 12, "equipment": [{"type": "MFP", "count": 300}]}
BANT = {
    "budget": 2_000_000,
    "authority": "decision_maker",
    "need": "Resell printers",
    "timing": "this_quarter",
}
DISTRIBUTOR_NEEDS = {**BANT, "monthly_volume": 150, "target_margin": 18}
CORPORATE_NEEDS = {**BANT, "devices_needed": 40, "service_level": "premium"}


def deal_at_presentation(s: Session, client_id: int) -> int:
    deal = s.deals.open(client_id, pipeline="b2b", amount=500_000, title="Printers")
    s.deals.move(deal.id, "presentation")
    return deal.id


# -- step 2: primary fields ---------------------------------------------------------------
def test_render_refused_while_primary_fields_are_missing(session: Session) -> None:
    client = session.clients.create("Half Known", segment="distributor", params={"turnover": 1e8})
    with pytest.raises(ProposalRefused) as info:
        render(session, client.id)
    refused = info.value
    assert refused.step == "card"
    assert refused.exit_code == 2
    fields = [p.field for p in refused.problems]
    assert fields == [
        "client.params.sales_reps",
        "client.params.own_clients",
        "client.params.warehouse_area",
    ]
    assert "Sales representatives is a primary field" in str(refused.problems[0])
    assert "a whole number >= 0" in str(refused.problems[0])
    assert session.interactions.list(client_id=client.id) == []


def test_render_refused_without_a_segment(session: Session) -> None:
    client = session.clients.create("Nobody Knows")
    with pytest.raises(ProposalRefused) as info:
        render(session, client.id)
    assert [p.field for p in info.value.problems] == ["client.segment"]
    assert "turnover" in info.value.problems[0].reason  # names what to fill in


# -- step 3: the needs card ---------------------------------------------------------------
def test_with_a_complete_card_the_needs_card_is_required(session: Session) -> None:
    client = session.clients.create("Vostok", segment="distributor", params=DISTRIBUTOR)
    assert client.potential_category is not None
    with pytest.raises(ProposalRefused) as info:
        render(session, client.id)
    refused = info.value
    assert refused.step == "needs"
    assert f"potential {client.potential_category}" in refused.message
    assert [p.field for p in refused.problems] == [
        "needs.budget",
        "needs.authority",
        "needs.need",
        "needs.timing",
        "needs.monthly_volume",
        "needs.target_margin",
    ]
    set_needs(session, client.id, {"budget": 100, "authority": "influencer"})
    with pytest.raises(ProposalRefused) as info:
        render(session, client.id)
    assert [p.field for p in info.value.problems] == [
        "needs.need",
        "needs.timing",
        "needs.monthly_volume",
        "needs.target_margin",
    ]


def test_needs_values_are_checked_and_merged(session: Session) -> None:
    client = session.clients.create("Corp", segment="corporate", params=CORPORATE)
    with pytest.raises(ValidationError) as info:
        set_needs(session, client.id, {"budget": -1, "service_level": "gold", "fax": 1})
    problems = {p.field: p.reason for p in info.value.problems}
    assert set(problems) == {"needs.budget", "needs.service_level", "needs.fax"}
    assert "allowed: a number >= 0, in RUB" in problems["needs.budget"]
    assert get(session, client.id) is None  # nothing half-written
    set_needs(session, client.id, {"budget": 10, "need": "New printers"})
    card = set_needs(session, client.id, {"budget": None, "devices_needed": 3})
    assert card.data == {"need": "New printers", "devices_needed": 3}
    assert card.updated_by == "admin"
    replaced = set_needs(session, client.id, {"timing": "later"}, replace=True)
    assert replaced.data == {"timing": "later"}
    events = [e for e in session.events("client", client.id) if e["action"] == "needs_updated"]
    assert len(events) == 3


def test_needs_need_a_segment(session: Session) -> None:
    client = session.clients.create("Unknown")
    with pytest.raises(ValidationError) as info:
        set_needs(session, client.id, BANT)
    assert info.value.field == "segment"


def test_needs_schema_is_bant_plus_the_segments_own_fields(crm: CRM) -> None:
    schema = needs_schema(crm.segment("corporate"))
    assert schema["required"] == [
        "budget",
        "authority",
        "need",
        "timing",
        "devices_needed",
        "service_level",
    ]
    assert "pain_points" in schema["properties"]
    assert "monthly_volume" not in schema["properties"]


# -- step 4: the rendered proposal --------------------------------------------------------
@pytest.mark.parametrize(
    ("segment", "params", "needs", "expected", "absent"),
    [
        ("distributor", DISTRIBUTOR, DISTRIBUTOR_NEEDS, "Cartridge wholesale pallet", "SRV-MPS"),
        ("corporate", CORPORATE, CORPORATE_NEEDS, "Managed print service", "DLR-KIT"),
    ],
)
def test_rendered_proposal_has_the_segments_products(
    session: Session,
    segment: str,
    params: dict[str, Any],
    needs: dict[str, Any],
    expected: str,
    absent: str,
) -> None:
    client = session.clients.create("Big <Client> & Co", segment=segment, params=params)
    set_needs(session, client.id, needs)
    made = render(session, client.id)
    category = client.potential_category
    offers = session.crm.segment(segment).settings["offers"][category]
    assert [p.sku for p in made.products] == offers
    assert expected in made.html and expected in made.markdown
    assert absent not in made.html
    for sku in offers:
        assert f'data-sku="{sku}"' in made.html
        assert f"({sku})" in made.markdown
    assert "Big &lt;Client&gt; &amp; Co" in made.html  # escaped in HTML
    assert "# Commercial proposal for Big <Client> & Co" in made.markdown
    assert str(needs["budget"]) not in made.html  # numbers are shown for people
    assert "2\u00a0000\u00a0000" in made.html
    assert made.html.count('class="page"') == 3
    [logged] = session.interactions.list(client_id=client.id)
    assert (logged.kind, logged.topic, logged.outcome) == ("document", "proposal", "prepared")
    assert made.interaction_id == logged.id


def test_rendering_moves_the_deal_to_the_proposal_stage(session: Session) -> None:
    client = session.clients.create("Vostok", segment="distributor", params=DISTRIBUTOR)
    set_needs(session, client.id, DISTRIBUTOR_NEEDS)
    deal_id = deal_at_presentation(session, client.id)
    made = render(session, client.id, deal_id=deal_id)
    assert made.moved_to == "proposal"
    assert session.deals.get(deal_id).stage == "proposal"
    [change] = [c for c in session.history.of("deal", deal_id) if c.to_stage == "proposal"]
    assert change.cause == "interaction"
    assert change.interaction_id == made.interaction_id


def test_render_without_log_records_nothing(session: Session) -> None:
    client = session.clients.create("Vostok", segment="distributor", params=DISTRIBUTOR)
    set_needs(session, client.id, DISTRIBUTOR_NEEDS)
    deal_id = deal_at_presentation(session, client.id)
    made = render(session, client.id, deal_id=deal_id, log=False)
    assert made.interaction_id is None
    assert session.deals.get(deal_id).stage == "presentation"


def test_a_deal_of_another_client_is_refused(session: Session) -> None:
    mine = session.clients.create("Mine", segment="distributor", params=DISTRIBUTOR)
    other = session.clients.create("Other", segment="distributor", params=DISTRIBUTOR)
    deal_id = deal_at_presentation(session, other.id)
    with pytest.raises(ValidationError) as info:
        render(session, mine.id, deal_id=deal_id)
    assert info.value.field == "deal"


def test_a_deployment_overrides_a_template(crm: CRM) -> None:
    folder = Path(crm.config.root) / "templates" / "segment_b2b"
    folder.mkdir(parents=True)
    (folder / "corporate.md.j2").write_text(
        "Dear {{ client.name }}: {% for p in products %}{{ p.sku }} {% endfor %}\n", "utf-8"
    )
    with crm.session() as s:
        client = s.clients.create("Corp", segment="corporate", params=CORPORATE)
        set_needs(s, client.id, CORPORATE_NEEDS)
        made = render(s, client.id)
    assert made.markdown.startswith("Dear Corp: SRV-MPS")
    assert "Equipment and services" in made.html  # the HTML template is still the plugin's


def test_a_broken_template_is_a_configuration_error_naming_it(crm: CRM, invoke: CliRun) -> None:
    folder = Path(crm.config.root) / "templates" / "segment_b2b"
    folder.mkdir(parents=True)
    with crm.session() as s:
        client = s.clients.create("Corp", segment="corporate", params=CORPORATE)
        set_needs(s, client.id, CORPORATE_NEEDS)
    for text, says in (
        ("Hello\n{% for x %}\n", "segment_b2b/corporate.md.j2, line 2: expected token 'in'"),
        ("{{ client.nam }}\n", "corporate.md.j2, line 1: 'crmkit.core.model.Client object' has"),
    ):
        (folder / "corporate.md.j2").write_text(text, "utf-8")
        result = invoke("proposal", "render", str(client.id))
        assert result.exit_code == 6, result
        assert result.stderr.startswith("Error: plugin.segment_b2b.templates: template /")
        assert "corporate.md.j2" in result.stderr
        assert says in result.stderr and "Traceback" not in result.stderr
    with crm.session() as s:
        assert s.interactions.list(client_id=client.id) == []  # nothing logged


# -- the stage gate -------------------------------------------------------------------------
def test_a_deal_cannot_enter_the_proposal_stage_while_the_gate_is_unmet(session: Session) -> None:
    client = session.clients.create("Vostok", segment="distributor", params={"turnover": 1e8})
    deal_id = deal_at_presentation(session, client.id)
    with pytest.raises(ValidationError) as info:
        session.deals.move(deal_id, "proposal")
    assert "client.params.sales_reps" in {p.field for p in info.value.problems}
    session.clients.update(client.id, params=DISTRIBUTOR)
    with pytest.raises(ValidationError) as info:
        session.deals.move(deal_id, "proposal")
    assert "needs.budget" in {p.field for p in info.value.problems}
    set_needs(session, client.id, DISTRIBUTOR_NEEDS)
    assert session.deals.move(deal_id, "proposal").to_stage == "proposal"


def test_an_outcome_rule_is_refused_by_the_gate_and_reported(session: Session) -> None:
    client = session.clients.create("Vostok", segment="distributor", params=DISTRIBUTOR)
    deal_id = deal_at_presentation(session, client.id)
    logged = session.interactions.log(
        client.id,
        "call",
        topic="presentation",
        outcome="proposal_requested",
        direction="outbound",
        deal_id=deal_id,
    )
    assert session.deals.get(deal_id).stage == "presentation"
    assert any("needs.budget" in line for line in logged.refused)


def test_other_pipelines_and_unsegmented_clients_are_not_gated(session: Session) -> None:
    client = session.clients.create("Shopper", kind="person")
    deal = session.deals.open(client.id, pipeline="webshop", amount=100)
    for stage in ("visit", "product_view", "cart"):  # cart is marked "proposal"
        session.deals.move(deal.id, stage)
    assert session.deals.get(deal.id).stage == "cart"


# -- the CLI --------------------------------------------------------------------------------
def _args(values: dict[str, Any]) -> list[str]:
    import json

    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]


def test_the_four_steps_from_the_cli(invoke: CliRun, tmp_path: Path) -> None:
    made = invoke("client", "add", "Vostok", "--segment", "distributor", json=True).json
    cid = str(made["id"])
    deal = invoke("deal", "open", cid, "--pipeline", "b2b", "--amount", "500000", json=True).json
    assert invoke("deal", "move", str(deal["id"]), "presentation").exit_code == 0

    refused = invoke("proposal", "render", cid, "--deal", str(deal["id"]))
    assert refused.exit_code == 2, refused
    assert refused.stderr.startswith("Error: proposal refused: client #")
    for name in ("turnover", "sales_reps", "own_clients", "warehouse_area"):
        assert f"  - client.params.{name}: " in refused.stderr
    assert "Traceback" not in refused.stderr

    filled = invoke("client", "set-params", cid, *_args(DISTRIBUTOR), json=True)
    assert filled.exit_code == 0, filled
    assert filled.json["potential_category"] in ("A", "B", "C")

    refused = invoke("proposal", "render", cid)
    assert refused.exit_code == 2
    assert "fill in its needs card first" in refused.stderr
    assert "  - needs.timing: " in refused.stderr

    bad = invoke("needs", "set", cid, "budget=-3")
    assert bad.exit_code == 2
    assert bad.stderr.strip().startswith("Error: needs.budget: -3 is less than the minimum of 0")
    assert "(allowed: a number >= 0, in RUB)" in bad.stderr

    done = invoke("needs", "set", cid, *_args(DISTRIBUTOR_NEEDS), json=True)
    assert done.exit_code == 0, done
    assert done.json["missing"] == []

    out = tmp_path / "kp.html"
    result = invoke("proposal", "render", cid, "--deal", str(deal["id"]), "--out", str(out))
    assert result.exit_code == 0, result
    assert f"deal #{deal['id']} moved to proposal" in result.output
    html = out.read_text("utf-8")
    assert html.startswith("<!DOCTYPE html>") and "Vostok" in html
    shown = invoke("deal", "show", str(deal["id"]), json=True).json
    assert shown["stage"] == "proposal"


def test_offer_and_product_list(invoke: CliRun) -> None:
    cid = str(
        invoke(
            "client", "add", "Corp", "--segment", "corporate",
            *[a for pair in _args(CORPORATE) for a in ("--param", pair)],
            json=True,
        ).json["id"]
    )  # fmt: skip
    offer = invoke("offer", cid, json=True)
    assert offer.exit_code == 0, offer
    category = offer.json["potential_category"]
    assert category in ("A", "B", "C")
    skus = [p["sku"] for p in offer.json["products"]]
    assert skus and all(isinstance(p["price"], str) for p in offer.json["products"])
    table = invoke("offer", cid)
    assert f"potential {category}" in table.output
    products = invoke("product", "list", json=True).json
    assert {p["sku"] for p in products} >= set(skus)
    empty = invoke("client", "add", "Nobody", json=True).json
    assert "no recommendation" in invoke("offer", str(empty["id"])).output


def test_client_show_has_the_plugins_facts(invoke: CliRun) -> None:
    cid = str(invoke("client", "add", "Corp", "--segment", "corporate", json=True).json["id"])
    shown = invoke("client", "show", cid, json=True).json
    facts = shown["plugins"]["crmkit_segment_b2b"]
    assert facts["potential"] is None
    assert "client.params.employees" in facts["proposal_gate"][0]
    invoke("client", "set-params", cid, *_args(CORPORATE))
    facts = invoke("client", "show", cid, json=True).json["plugins"]["crmkit_segment_b2b"]
    assert facts["potential"].endswith(")")
    assert sum(facts["factors"].values()) == pytest.approx(
        float(facts["potential"].split()[0]), abs=0.1
    )
    assert facts["proposal_gate"][0].startswith("needs.budget")
    assert "potential_now" not in facts


def test_an_out_file_that_cannot_be_written_logs_nothing(invoke: CliRun, tmp_path: Path) -> None:
    cid = str(invoke("client", "add", "Corp", "--segment", "corporate", json=True).json["id"])
    invoke("client", "set-params", cid, *_args(CORPORATE))
    invoke("needs", "set", cid, *_args(CORPORATE_NEEDS))
    result = invoke("proposal", "render", cid, "--out", str(tmp_path / "no" / "such" / "kp.md"))
    assert result.exit_code == 1, result
    assert result.stderr.startswith("Error: out: cannot write ")
    assert "Traceback" not in result.stderr
    interactions = invoke("interaction", "list", "--client", cid, json=True)
    assert interactions.exit_code == 0, interactions
    assert interactions.json == []  # the rendering was rolled back with the failed write
