"""Classification, potential, the offer matrix and their settings in crmkit.toml."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from crmkit_segment_b2b.catalog import DEFAULT_PRODUCTS, products, recommend
from crmkit_segment_b2b.segments import (
    CORPORATE_SETTINGS,
    DISTRIBUTOR_SETTINGS,
    classify_corporate,
    classify_distributor,
    corporate_potential,
    distributor_potential,
    score,
)

from crmkit import CRM, ConfigError, Session, ValidationError
from crmkit.transfer.importer import import_file

DISTRIBUTOR = {
    "turnover": 300_000_000,
    "sales_reps": 25,
    "own_clients": 900,
    "warehouse_area": 4000,
}
CORPORATE = {"employees": 1500, "offices": 12, "equipment": [{"type": "MFP", "count": 300}]}


def reopen(crm: CRM, toml: str) -> CRM:
    """The deployment opened again with ``toml`` appended to its crmkit.toml."""
    path = Path(crm.config.root) / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n" + toml, "utf-8")
    return CRM.open(crm.config.root, plugins=crm.plugins)


# -- classification -------------------------------------------------------------------------
def test_classifier_rules() -> None:
    assert classify_distributor({"own_clients": 5}) == 1.0
    assert classify_distributor({"sales_reps": 0, "turnover": 1}) == 0.5
    assert classify_distributor({"regions": ["Tver"]}) == 0.0
    assert classify_corporate({"employees": 10}) == 1.0
    assert classify_corporate({"offices": 3}) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("params", "segment"),
    [
        ({"own_clients": 300, "turnover": 5e7}, "distributor"),
        ({"warehouse_area": 800}, "distributor"),
        ({"employees": 40, "industry": "retail"}, "corporate"),
        ({"offices": 2}, "corporate"),
        ({"industry": "retail"}, None),  # fits corporate's schema, but says nothing of it
        ({"fax": "+7 495"}, None),
    ],
)
def test_a_card_without_segment_gets_the_one_its_parameters_fit(
    session: Session, params: dict[str, Any], segment: str | None
) -> None:
    card = session.clients.create("Someone", params=params)
    assert card.segment == segment


def test_a_bad_value_is_refused_by_the_segment_the_names_fit(session: Session) -> None:
    with pytest.raises(ValidationError) as info:
        session.clients.create("Someone", params={"employees": -1, "offices": 2})
    [problem] = info.value.problems
    assert problem.field == "params.employees"
    assert problem.reason.endswith("(allowed: a whole number >= 1)")


def test_a_set_segment_is_never_replaced(session: Session) -> None:
    card = session.clients.create("Corp", segment="corporate", params={"offices": 2})
    assert session.clients.update(card.id, params={"offices": 3}).segment == "corporate"


# -- potential -----------------------------------------------------------------------------
def test_score_follows_the_documented_formula() -> None:
    settings = {
        "potential": {
            "weights": {"a": 3, "b": 1},
            "scale": {"a": 1000, "b": 10},
            "categories": {"A": 80, "B": 50},
        }
    }
    # a at its reference scores 1, b at a tenth 0.5: 100 * (3 * 1 + 1 * 0.5) / 4 = 87.5
    potential = score({"a": 5000, "b": 1}, settings)
    assert (potential.score, potential.category) == (87.5, "A")
    assert potential.factors == {"a": 75.0, "b": 12.5}
    # a hundredth or less scores 0; nothing scores 0
    assert score({"a": 10, "b": 0}, settings).score == 0
    assert score({"a": 100, "b": 10}, settings).category == "B"  # 100 * (3 * .5 + 1) / 4 = 62.5
    assert score({"a": 20, "b": 2}, settings).category == "C"


def test_the_two_segments_potentials() -> None:
    big = distributor_potential(DISTRIBUTOR, DISTRIBUTOR_SETTINGS)
    small = distributor_potential(
        {"turnover": 1e7, "sales_reps": 1, "own_clients": 20, "warehouse_area": 100},
        DISTRIBUTOR_SETTINGS,
    )
    assert big.score > small.score
    assert (big.category, small.category) == ("A", "C")
    assert math.isclose(sum(big.factors.values()), big.score, abs_tol=0.1)
    corp = corporate_potential(CORPORATE, CORPORATE_SETTINGS)
    assert corp.factors["equipment"] > 0  # 300 units of equipment count


def test_potential_is_stored_and_recomputed_when_parameters_change(session: Session) -> None:
    card = session.clients.create("Vostok", segment="distributor", params={"turnover": 3e8})
    assert (card.potential_score, card.potential_category) == (None, None)  # incomplete
    card = session.clients.update(card.id, params=DISTRIBUTOR)
    expected = distributor_potential(DISTRIBUTOR, DISTRIBUTOR_SETTINGS)
    assert (card.potential_score, card.potential_category) == (expected.score, expected.category)
    smaller = {**DISTRIBUTOR, "turnover": 1e6, "own_clients": 10, "sales_reps": 1}
    card = session.clients.update(card.id, params=smaller)
    assert card.potential_score < expected.score
    assert session.clients.get(card.id).potential_score == card.potential_score


def test_weights_and_categories_come_from_crmkit_toml(crm: CRM) -> None:
    tuned = reopen(
        crm,
        "[segments.distributor.potential]\ncategories = { A = 99, B = 98 }\n"
        "[segments.distributor.potential.weights]\nturnover = 1.0\n",
    )
    settings = tuned.segment("distributor").settings["potential"]
    assert settings["weights"]["turnover"] == 1.0
    assert settings["weights"]["sales_reps"] == 0.2  # the others are the plugin's
    with tuned.session() as s:
        assert (
            s.clients.create("X", segment="distributor", params=DISTRIBUTOR).potential_category
            == "C"
        )
    tuned.close()


def test_a_bad_setting_is_refused_with_its_key(crm: CRM) -> None:
    with pytest.raises(ConfigError) as info:
        _ = reopen(crm, "[segments.corporate.potential.weights]\nemployees = -1\n").segments
    assert info.value.field == "segments.corporate.potential.weights.employees"


def test_a_weight_must_name_a_parameter(crm: CRM) -> None:
    with pytest.raises(ConfigError) as info:
        reopen(crm, "[segments.corporate.potential.weights]\nbudget = 1\n")
    assert info.value.field == "segments.corporate.potential.weights.budget"
    assert "'budget' is not a parameter of the segment" in info.value.message


def test_a_parameter_added_by_the_deployment_scores_with_a_weight(crm: CRM) -> None:
    extend = '[segments.distributor.extend.properties.trucks]\ntype = "integer"\n'
    with pytest.raises(ConfigError) as info:
        reopen(crm, extend + "[segments.distributor.potential.weights]\ntrucks = 0.2\n")
    assert info.value.field == "segments.distributor.potential.scale"
    path = Path(crm.config.root) / "crmkit.toml"
    path.write_text(
        path.read_text("utf-8") + "[segments.distributor.potential.scale]\ntrucks = 40\n"
    )
    tuned = CRM.open(crm.config.root, plugins=crm.plugins)
    with tuned.session() as s:
        card = s.clients.create(
            "Fleet", segment="distributor", params={**DISTRIBUTOR, "trucks": 40}
        )
        without = s.clients.create("No fleet", segment="distributor", params=DISTRIBUTOR)
    settings = tuned.segment("distributor").settings
    potential = distributor_potential({**DISTRIBUTOR, "trucks": 40}, settings)
    assert potential.factors["trucks"] > 0
    assert card.potential_score == potential.score > without.potential_score
    tuned.close()


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        (
            '[segments.distributor.needs.properties.x]\ntype = "integr"\n',
            "segments.distributor.needs.properties.x.type",
        ),
        (
            '[segments.corporate.needs]\nrequired = ["devices_needed", "delivery_days"]\n',
            "segments.corporate.needs.required",
        ),
        ('[plugin.segment_b2b]\ntemplates = "no-such-folder"\n', "plugin.segment_b2b.templates"),
    ],
)
def test_a_broken_setting_stops_the_deployment_at_start(crm: CRM, toml: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        reopen(crm, toml)
    assert info.value.field == field
    assert info.value.exit_code == 6


# -- the offer matrix and the catalogue ------------------------------------------------------
def test_every_offered_sku_is_in_the_default_catalogue() -> None:
    for settings in (DISTRIBUTOR_SETTINGS, CORPORATE_SETTINGS):
        for skus in settings["offers"].values():
            assert set(skus) <= set(DEFAULT_PRODUCTS)


def test_recommendations_follow_segment_and_category(session: Session) -> None:
    corp = session.clients.create("Corp", segment="corporate", params=CORPORATE)
    expected = CORPORATE_SETTINGS["offers"][corp.potential_category]
    assert [p.sku for p in recommend(session.crm, corp)] == expected
    half = session.clients.create("Half", segment="corporate", params={"offices": 1})
    assert recommend(session.crm, half) == []


def test_a_deployment_replaces_the_catalogue_and_the_matrix(crm: CRM) -> None:
    tuned = reopen(
        crm,
        '[segments.corporate.offers]\nA = ["X1"]\nB = ["X1", "X2"]\nC = ["X2"]\n'
        '[segments.distributor.offers]\nA = []\nB = []\nC = ["X2"]\n'
        '[plugin.segment_b2b.products.X1]\nname = "Thing one"\nseries = "S"\nprice = 10.5\n'
        '[plugin.segment_b2b.products.X2]\nname = "Thing two"\nprice = 3\n',
    )
    assert list(products(tuned)) == ["X1", "X2"]
    assert str(products(tuned)["X1"].price) == "10.5"
    with tuned.session() as s:
        corp = s.clients.create("Corp", segment="corporate", params=CORPORATE)
        skus = [p.sku for p in recommend(tuned, corp)]
    assert skus == tuned.segment("corporate").settings["offers"][corp.potential_category]
    tuned.close()


def test_an_offer_of_an_unknown_product_is_refused_at_start(crm: CRM) -> None:
    with pytest.raises(ConfigError) as info:
        reopen(crm, '[segments.distributor.offers]\nA = ["NOPE"]\n')
    assert info.value.field == "segments.distributor.offers.A"
    assert "'NOPE' is not in the product catalogue" in info.value.message


def test_a_bad_product_is_refused_at_start(crm: CRM) -> None:
    with pytest.raises(ConfigError) as info:
        reopen(crm, '[plugin.segment_b2b.products.X1]\nname = "X"\nprice = "cheap"\n')
    assert info.value.field == "plugin.segment_b2b.products.X1.price"


def test_an_unknown_plugin_setting_is_refused(crm: CRM) -> None:
    with pytest.raises(ConfigError) as info:
        reopen(crm, "[plugin.segment_b2b]\ncolour = 1\n")
    assert info.value.field == "plugin.segment_b2b.colour"


# -- bulk import -----------------------------------------------------------------------------
def test_import_classifies_scores_and_refuses_bad_parameters(crm: CRM, tmp_path: Path) -> None:
    rows = [
        "name,param.turnover,param.sales_reps,param.own_clients,param.warehouse_area,param.employees",
        "Vostok,300000000,25,900,4000,",
        "Half,,,,,40",
        "Broken,-5,1,1,1,",
    ]
    path = tmp_path / "clients.csv"
    path.write_text("\n".join(rows) + "\n", "utf-8")
    result = import_file(crm, "clients", path)
    assert (result.inserted, result.rejected) == (2, 1)
    [error] = result.errors
    assert error.column == "param.turnover"
    assert "minimum of 0" in error.reason and "allowed: a number >= 0, in RUB/year" in error.reason
    with crm.session() as s:
        stored = {c.name: c for c in s.clients.list()}
    expected = distributor_potential(DISTRIBUTOR, DISTRIBUTOR_SETTINGS)
    vostok = stored["Vostok"]
    assert (vostok.segment, vostok.potential_score, vostok.potential_category) == (
        "distributor",
        expected.score,
        expected.category,
    )
    assert (stored["Half"].segment, stored["Half"].potential_score) == ("corporate", None)


def test_a_weight_of_zero_switches_a_factor_off(crm: CRM) -> None:
    tuned = reopen(
        crm,
        "[segments.distributor.potential.weights]\nsales_reps = 0\nown_clients = 0\n"
        "warehouse_area = 0\n",
    )
    settings = tuned.segment("distributor").settings
    potential = distributor_potential(DISTRIBUTOR, settings)
    assert set(potential.factors) == {"turnover"}
    # turnover alone carries the whole score: 3e8 against 1e9 scores 1 + log10(0.3) / 2
    assert potential.score == round(100 * (1 + math.log10(0.3) / 2), 1)
    tuned.close()


@pytest.mark.parametrize(
    ("toml", "field", "says"),
    [
        (
            "[segments.distributor.potential.weights]\nwarehose_area = 0\n",
            "segments.distributor.potential.weights.warehose_area",
            "so a weight of 0 switches nothing off",
        ),
        (
            "[segments.corporate.potential.weights]\nindustry = 0.2\n"
            "[segments.corporate.potential.scale]\nindustry = 10\n",
            "segments.corporate.potential.weights.industry",
            "'industry' is not a number or a list, so it cannot be weighed",
        ),
    ],
)
def test_a_weight_that_cannot_count_is_refused(crm: CRM, toml: str, field: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        reopen(crm, toml)
    assert info.value.field == field
    assert says in info.value.message


def test_a_list_parameter_counts_its_items() -> None:
    settings = {
        "potential": {"weights": {"regions": 1}, "scale": {"regions": 10}, "categories": {"A": 90}}
    }
    assert score({"regions": ["a"] * 10}, settings).score == 100.0
    assert score({"regions": ["a"]}, settings).score == 50.0


def test_settings_are_read_afresh_on_every_score() -> None:
    settings = copy.deepcopy(DISTRIBUTOR_SETTINGS)
    before = distributor_potential(DISTRIBUTOR, settings)
    settings["potential"]["weights"]["turnover"] = 5.0
    assert distributor_potential(DISTRIBUTOR, settings).score != before.score
