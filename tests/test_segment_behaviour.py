"""Segment behaviour: classification, potential scores, settings and schema extension.

A test plugin registers three segments: ``shop`` and ``office`` use the core's
default classification rule, ``warehouse`` brings a classifier of its own; the
``shop`` segment scores a complete card's potential from its settings, which a
deployment tunes under ``[segments.shop]`` in ``crmkit.toml``.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

import crmkit
from crmkit import ConfigError, Potential, Segment, ValidationError, hookimpl
from crmkit.core.model import best_segment

SHOP_SETTINGS: dict[str, Any] = {
    "weights": {"area": 0.1, "city": 5.0},
    "thresholds": {"A": 50, "B": 20},
}

SHOP_SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "weights": {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0},
        },
        "thresholds": {
            "type": "object",
            "properties": {"A": {"type": "number"}, "B": {"type": "number"}},
            "additionalProperties": False,
        },
        "offer": {"type": "string"},
    },
    "additionalProperties": False,
}


def score_shop(params: Mapping[str, Any], settings: Mapping[str, Any]) -> Potential:
    """Area and a known city count, each by its weight; the thresholds give the category."""
    weights = settings["weights"]
    factors = {"area": params["area"] * weights["area"]}
    if params.get("city"):
        factors["city"] = weights["city"]
    score = min(100.0, sum(factors.values()))
    thresholds = settings["thresholds"]
    category = "A" if score >= thresholds["A"] else "B" if score >= thresholds["B"] else "C"
    return Potential(score=score, category=category, factors=factors)


CALLS: list[dict[str, Any]] = []


def warehouse_classifier(params: Mapping[str, Any]) -> float:
    """A card with a loading dock is a warehouse, whatever else it says."""
    CALLS.append(dict(params))
    return 1.0 if params.get("dock") else 0.0


class SegmentsPlugin:
    @hookimpl
    def crmkit_segments(self) -> list[Segment]:
        return [
            Segment(
                name="shop",
                title="Shop",
                schema={
                    "type": "object",
                    "properties": {
                        "area": {"type": "number", "minimum": 0, "x-unit": "m²"},
                        "city": {"type": "string", "minLength": 1},
                    },
                    "required": ["area"],
                    "additionalProperties": False,
                },
                scorer=score_shop,
                settings=SHOP_SETTINGS,
                settings_schema=SHOP_SETTINGS_SCHEMA,
            ),
            Segment(
                name="office",
                title="Office",
                schema={
                    "type": "object",
                    "properties": {
                        "employees": {"type": "integer", "minimum": 1},
                        "offices": {"type": "integer", "minimum": 1},
                    },
                    "required": ["employees", "offices"],
                    "additionalProperties": False,
                },
            ),
            Segment(
                name="warehouse",
                title="Warehouse",
                schema={
                    "type": "object",
                    "properties": {
                        "area": {"type": "number", "minimum": 0},
                        "dock": {"type": "boolean"},
                    },
                    "required": ["area"],
                },
                classifier=warehouse_classifier,
            ),
        ]


class KioskPlugin:
    """A segment whose parameters are the shop's primary field: a tie for ``{"area": ...}``."""

    @hookimpl
    def crmkit_segments(self) -> list[Segment]:
        return [
            Segment(
                "kiosk",
                "Kiosk",
                {
                    "type": "object",
                    "properties": {"area": {"type": "number"}},
                    "required": ["area"],
                },
            )
        ]


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    return [("segments", SegmentsPlugin())]


@pytest.fixture(autouse=True)
def _forget_calls() -> None:
    CALLS.clear()


def reopen(crm: Any, toml: str) -> crmkit.CRM:
    """``crm`` opened again with ``toml`` appended to its crmkit.toml."""
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + textwrap.dedent(toml), "utf-8")
    return crmkit.CRM.open(crm.config.root, plugins=crm.plugins)


# -- classification ---------------------------------------------------------------------
def test_a_card_saved_without_a_segment_gets_the_one_its_parameters_fit(session):
    shop = session.clients.create("Corner shop", params={"area": 120, "city": "Kazan"})
    assert shop.segment == "shop"
    office = session.clients.create("Law firm", params={"employees": 12})
    assert office.segment == "office"  # half of the primary fields is still a fit
    secondary = session.clients.create("Somewhere", params={"city": "Samara"})
    assert secondary.segment == "shop"  # only a secondary parameter: the lowest fit, still one


@pytest.mark.parametrize(
    "params",
    [
        {"area": 10, "employees": 3},  # no segment knows both
        {"colour": "red"},  # nobody knows it
    ],
)
def test_parameters_that_fit_no_segment_leave_the_card_without_one(session, params):
    client = session.clients.create("Unsure", params=params)
    assert client.segment is None
    assert client.params == params
    assert (client.potential_score, client.potential_category) == (None, None)


@pytest.mark.parametrize(
    ("params", "field", "allowed"),
    [
        ({"area": -1}, "params.area", "(allowed: a number >= 0"),
        ({"employees": 0}, "params.employees", "(allowed: a whole number >= 1"),
    ],
)
def test_a_bad_value_is_refused_by_the_segment_its_names_fit(session, params, field, allowed):
    """Classification reads the names; the values then answer to that segment's schema."""
    with pytest.raises(ValidationError) as info:
        session.clients.create("Unsure", params=params)
    [problem] = info.value.problems
    assert problem.field == field and allowed in problem.reason
    assert session.clients.count() == 0


def test_a_tie_leaves_the_card_without_a_segment(crm, register_plugin):
    register_plugin(KioskPlugin(), name="kiosk")
    assert crm.classify({"area": 40}) is None  # shop and kiosk fit equally well
    assert crm.classify({"area": 40, "city": "Kazan"}) == "shop"  # the kiosk knows no city
    with crm.session() as s:
        assert s.clients.create("Tie", params={"area": 40}).segment is None


def test_classify_without_parameters_and_best_segment():
    assert best_segment([]) is None
    assert best_segment([(0.0, "a"), (0.0, "b")]) is None
    assert best_segment([(0.5, "a"), (0.5, "b"), (0.1, "c")]) is None
    assert best_segment([(0.4, "a"), (0.5, "b")]) == "b"
    seg = Segment("s", "S", {"type": "object", "properties": {"x": {"type": "integer"}}})
    assert seg.classify({}) == 0.0
    assert seg.classify({"x": 1}) == 1.0  # no primary fields: every known parameter fits
    assert seg.classify({"x": "one"}) == 1.0  # names decide; the value is checked on save
    assert seg.classify({"y": 1}) == 0.0


def test_the_default_rule_scores_the_share_of_primary_fields(crm):
    office = crm.segment("office")
    assert office.classify({"employees": 5, "offices": 2}) == 1.0
    assert office.classify({"employees": 5}) == 0.5
    assert office.classify({"employees": 5, "area": 1}) == 0.0
    assert crm.classify({}) is None


def test_a_custom_classifier_decides_for_its_segment(crm):
    warehouse = crm.segment("warehouse")
    # the default rule would call {"area": 10} a warehouse as well as a shop (a tie)
    assert warehouse.classify({"area": 10}) == 0.0
    assert warehouse.classify({"area": 10, "dock": True}) == 1.0
    assert CALLS == [{"area": 10}, {"area": 10, "dock": True}]
    assert warehouse.classify({"area": 10, "lorry": True}) == 0.0  # unknown name: never asked
    assert len(CALLS) == 2
    with crm.session() as s:
        assert s.clients.create("Depot", params={"area": 900, "dock": True}).segment == "warehouse"
        assert s.clients.create("Shop", params={"area": 90}).segment == "shop"


def test_a_classifier_answer_is_kept_between_0_and_1():
    schema = {"type": "object", "properties": {"x": {}}}
    seg = Segment("s", "S", schema, classifier=lambda params: 7)
    assert seg.classify({"x": 1}) == 1.0
    seg = Segment("s", "S", schema, classifier=lambda params: -3)
    assert seg.classify({"x": 1}) == 0.0


def test_an_explicit_segment_is_never_reclassified(session):
    client = session.clients.create("Depot", segment="shop", params={"area": 900})
    assert client.segment == "shop"
    with pytest.raises(ValidationError, match=r"params\.dock"):
        session.clients.create("Depot 2", segment="shop", params={"area": 900, "dock": True})


def test_an_update_of_a_card_without_segment_classifies_it(session):
    client = session.clients.create("Later")
    assert client.segment is None
    updated = session.clients.update(client.id, params={"employees": 4, "offices": 1})
    assert updated.segment == "office"
    # once it has a segment, its parameters are checked against it
    with pytest.raises(ValidationError, match=r"params\.area"):
        session.clients.update(client.id, params={"area": 5})


def test_a_segment_cleared_on_purpose_stays_cleared(session, invoke):
    client = session.clients.create("Shop", params={"area": 600})
    assert client.segment == "shop"
    cleared = session.clients.update(client.id, segment=None)
    assert (cleared.segment, cleared.params) == (None, {"area": 600})
    assert (cleared.potential_score, cleared.potential_category) == (None, None)
    again = session.clients.update(client.id, params={"area": 700})  # no segment given
    assert again.segment == "shop"


def test_client_update_can_clear_the_segment(invoke):
    client_id = _add(invoke, "Shop", "--param", "area=600")
    result = invoke("client", "update", str(client_id), "--segment", "", json=True)
    assert result.exit_code == 0, result
    assert (result.json["segment"], result.json["potential_score"]) == (None, None)


# -- potential ------------------------------------------------------------------------------
def test_potential_is_computed_on_create_and_update(session):
    client = session.clients.create("Shop", segment="shop", params={"area": 100})
    assert (client.potential_score, client.potential_category) == (10.0, "C")
    updated = session.clients.update(client.id, params={"area": 400, "city": "Kazan"})
    assert (updated.potential_score, updated.potential_category) == (45.0, "B")
    assert session.clients.get(client.id).potential_score == 45.0
    events = session.events("client", client.id)
    assert events[-1]["data"]["potential_score"] == {"old": 10.0, "new": 45.0}
    assert events[-1]["data"]["potential_category"] == {"old": "C", "new": "B"}


def test_potential_of_a_classified_card(session):
    client = session.clients.create("Big shop", params={"area": 2000})
    assert client.segment == "shop"
    assert (client.potential_score, client.potential_category) == (100.0, "A")


def test_potential_is_cleared_when_the_card_becomes_incomplete(session):
    client = session.clients.create("Shop", segment="shop", params={"area": 600})
    assert client.potential_category == "A"
    incomplete = session.clients.update(client.id, params={"city": "Kazan"})
    assert incomplete.segment == "shop"
    assert (incomplete.potential_score, incomplete.potential_category) == (None, None)
    started = session.clients.create("New shop", segment="shop")
    assert (started.potential_score, started.potential_category) == (None, None)


def test_a_segment_without_scorer_gives_no_potential(session):
    client = session.clients.create("Firm", params={"employees": 3, "offices": 1})
    assert client.segment == "office"
    assert (client.potential_score, client.potential_category) == (None, None)


def test_potential_follows_a_change_of_segment(session):
    client = session.clients.create("Shop", segment="shop", params={"area": 600})
    moved = session.clients.update(client.id, segment="warehouse")
    assert moved.params == {"area": 600}
    assert (moved.potential_score, moved.potential_category) == (None, None)


def test_segment_potential_directly(crm):
    shop = crm.segment("shop")
    assert shop.potential({"city": "Kazan"}) is None
    found = shop.potential({"area": 300, "city": "Kazan"})
    assert found == Potential(score=35.0, category="B", factors={"area": 30.0, "city": 5.0})
    assert sum(found.factors.values()) == found.score


# -- [segments.NAME] in crmkit.toml ------------------------------------------------------
def test_settings_are_merged_over_the_plugins_defaults(crm):
    reopened = reopen(
        crm,
        """
        [segments.shop]
        offer = "premium"
        thresholds = { A = 30 }
        """,
    )
    with reopened:
        shop = reopened.segment("shop")
        assert shop.settings == {
            "weights": {"area": 0.1, "city": 5.0},
            "thresholds": {"A": 30, "B": 20},
            "offer": "premium",
        }
        assert shop.schema == crm.segment("shop").schema
        with reopened.session() as s:
            client = s.clients.create("Shop", segment="shop", params={"area": 300})
            assert (client.potential_score, client.potential_category) == (30.0, "A")
    assert SHOP_SETTINGS["thresholds"] == {"A": 50, "B": 20}  # the plugin's dict is untouched


@pytest.mark.parametrize(
    ("toml", "field", "reason"),
    [
        ('thresholds = { A = "high" }', "segments.shop.thresholds.A", "is not of type 'number'"),
        ("weights = { area = -1 }", "segments.shop.weights.area", "less than the minimum of 0"),
        ("discount = 5", "segments.shop.discount", "is not a known parameter"),
    ],
)
def test_settings_schema_refuses_a_bad_setting(crm, toml, field, reason):
    with pytest.raises(ConfigError) as info:
        reopen(crm, f"[segments.shop]\n{toml}\n").segments  # noqa: B018
    assert info.value.field == field
    assert reason in info.value.message
    assert str(info.value) == f"{field}: {info.value.message}"
    assert field not in info.value.message  # named once


def test_every_bad_setting_is_named(crm):
    with pytest.raises(ConfigError) as info:
        reopen(crm, '[segments.shop]\nthresholds = { A = "x", B = "y" }\n').segments  # noqa: B018
    assert "segments.shop.thresholds.A: " in str(info.value)
    assert "segments.shop.thresholds.B: " in str(info.value)


def test_a_bad_setting_stops_the_cli_with_the_config_exit_code(crm, invoke):
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text() + '\n[segments.shop]\nthresholds = { A = "high" }\n')
    result = invoke("segment", "list")
    assert result.exit_code == 6
    assert "segments.shop.thresholds.A" in result.stderr
    assert "Traceback" not in result.stderr + result.output


def test_settings_of_a_segment_without_settings_schema_are_not_checked(crm):
    with reopen(crm, "[segments.office]\nanything = [1, 2]\n") as reopened:
        assert reopened.segment("office").settings == {"anything": [1, 2]}


def test_extend_adds_a_property_and_a_primary_field(crm):
    reopened = reopen(
        crm,
        """
        [segments.shop.extend]
        properties = { floors = { type = "integer", minimum = 1 } }
        required = ["floors"]
        """,
    )
    with reopened:
        shop = reopened.segment("shop")
        assert shop.primary_fields == ["area", "floors"]
        assert shop.properties["floors"] == {"type": "integer", "minimum": 1}
        assert shop.properties["area"]["minimum"] == 0  # the plugin's properties stay
        assert "floors" not in crm.segment("shop").properties  # the plugin's schema is a copy
        with reopened.session() as s:
            client = s.clients.create("Mall", segment="shop", params={"area": 800})
            assert client.potential_score is None  # incomplete without floors now
            client = s.clients.update(client.id, params={"area": 800, "floors": 3})
            assert client.potential_category == "A"
            with pytest.raises(ValidationError, match=r"params\.floors"):
                s.clients.update(client.id, params={"area": 800, "floors": 0})


def test_extend_can_make_a_known_property_primary(crm):
    with reopen(crm, '[segments.shop.extend]\nrequired = ["city"]\n') as reopened:
        assert reopened.segment("shop").primary_fields == ["area", "city"]


def test_extend_refuses_a_primary_field_that_is_no_parameter(crm):
    reopened = reopen(crm, '[segments.shop.extend]\nrequired = ["floors"]\n')
    with pytest.raises(ConfigError) as info:
        reopened.segments  # noqa: B018
    assert info.value.field == "segments.shop.extend.required"
    assert "'floors' is not a parameter" in str(info.value)


def test_extend_refuses_other_keys(crm):
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text() + '\n[segments.shop.extend]\ntitle = "x"\n')
    with pytest.raises(ConfigError, match="extend"):
        crmkit.CRM.open(crm.config.root, plugins=crm.plugins).segments  # noqa: B018


def test_extend_with_a_bad_property_schema_is_refused(crm):
    reopened = reopen(crm, '[segments.shop.extend]\nproperties = { floors = { type = "count" } }\n')
    with pytest.raises(ConfigError) as info:
        reopened.segments  # noqa: B018
    assert info.value.field == "segments.shop.extend.properties.floors.type"
    assert "is not a valid JSON Schema" in info.value.message


def test_a_bad_replacement_schema_is_a_config_error(crm, invoke):
    reopened = reopen(crm, '[segments.shop]\nschema = { type = "count" }\n')
    with pytest.raises(ConfigError) as info:
        reopened.segments  # noqa: B018
    assert info.value.field == "segments.shop.schema.type"
    result = invoke("segment", "list")
    assert result.exit_code == 6
    assert "segments.shop.schema.type" in result.stderr


def test_title_and_schema_replacement(crm):
    reopened = reopen(
        crm,
        """
        [segments.shop]
        title = "Store"
        schema = { type = "object", properties = { area = { type = "number", minimum = 10 } } }
        """,
    )
    with reopened:
        shop = reopened.segment("shop")
        assert shop.title == "Store"
        assert shop.primary_fields == []
        assert shop.settings == SHOP_SETTINGS  # title and schema are not settings
        assert shop.scorer is score_shop  # the behaviour stays
        with reopened.session() as s, pytest.raises(ValidationError, match="minimum of 10"):
            s.clients.create("Small", segment="shop", params={"area": 5})


def test_segment_list_and_show_print_no_functions(invoke):
    listed = invoke("segment", "list", json=True)
    assert listed.exit_code == 0, listed
    assert {row["name"] for row in listed.json} == {"shop", "office", "warehouse"}
    shown = invoke("segment", "show", "shop", json=True)
    assert shown.exit_code == 0, shown
    assert shown.json["title"] == "Shop"


# -- explained validation errors -------------------------------------------------------------
def test_validation_errors_say_what_is_allowed(session):
    with pytest.raises(ValidationError) as info:
        session.clients.create("Shop", segment="shop", params={"area": -5, "city": ""})
    reasons = {p.field: p.reason for p in info.value.problems}
    assert reasons["params.area"] == (
        "-5 is less than the minimum of 0 (allowed: a number >= 0, in m²)"
    )
    assert reasons["params.city"].endswith("(allowed: text, at least 1 character)")


def test_describe_schema():
    from crmkit.core.validation import describe_schema

    assert describe_schema({"type": "integer", "minimum": 1, "maximum": 9}) == (
        "a whole number >= 1 and <= 9"
    )
    assert describe_schema({"type": "number", "minimum": 0, "x-unit": "RUB/year"}) == (
        "a number >= 0, in RUB/year"
    )
    assert describe_schema({"enum": ["a", "b"]}) == 'one of "a", "b"'
    assert describe_schema({"const": 3}) == "exactly 3"
    assert describe_schema({"type": ["string", "null"], "maxLength": 5}) == (
        "text or null, at most 5 characters"
    )
    assert describe_schema({"type": "array", "minItems": 1, "uniqueItems": True}) == (
        "a list, at least 1 item, each item once"
    )
    assert describe_schema({"type": "string", "format": "email"}) == "text, format email"
    assert describe_schema({}) == ""
    assert describe_schema(True) == ""


def test_schema_problems_explain_only_when_asked():
    from crmkit.core.validation import schema_problems

    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    [plain] = schema_problems(schema, {"n": 0})
    [explained] = schema_problems(schema, {"n": 0}, explain=True)
    assert plain.reason == "0 is less than the minimum of 1"
    assert explained.reason == "0 is less than the minimum of 1 (allowed: a whole number >= 1)"


# -- crmkit client set-params ------------------------------------------------------------------
def _add(invoke: Any, *args: str) -> int:
    added = invoke("client", "add", *args, json=True)
    assert added.exit_code == 0, added
    return int(added.json["id"])


def test_set_params_merges_and_removes(invoke):
    client_id = _add(invoke, "Shop", "--segment", "shop", "--param", "area=100")
    result = invoke("client", "set-params", str(client_id), "area=250", "city=Kazan", json=True)
    assert result.exit_code == 0, result
    assert result.json["params"] == {"area": 250, "city": "Kazan"}
    assert (result.json["potential_score"], result.json["potential_category"]) == (30.0, "B")
    removed = invoke("client", "set-params", str(client_id), "city=", json=True)
    assert removed.exit_code == 0, removed
    assert removed.json["params"] == {"area": 250}
    assert removed.json["potential_score"] == 25.0
    table = invoke("client", "set-params", str(client_id), "city=Omsk")
    assert table.exit_code == 0, table
    assert f"Updated client #{client_id} Shop" in table.output


def test_set_params_keeps_text_as_typed_for_a_string_parameter(invoke):
    client_id = _add(invoke, "Shop", "--segment", "shop", "--param", "area=100")
    result = invoke("client", "set-params", str(client_id), "city=1905", json=True)
    assert result.exit_code == 0, result
    assert result.json["params"]["city"] == "1905"


def test_set_params_replace(invoke):
    client_id = _add(invoke, "Shop", "--segment", "shop", "--param", "area=100")
    invoke("client", "set-params", str(client_id), "city=Kazan")
    result = invoke("client", "set-params", str(client_id), "area=700", "--replace", json=True)
    assert result.exit_code == 0, result
    assert result.json["params"] == {"area": 700}
    assert result.json["potential_category"] == "A"


def test_set_params_with_segment(invoke):
    client_id = _add(invoke, "Firm")
    result = invoke(
        "client",
        "set-params",
        str(client_id),
        "employees=40",
        "offices=2",
        "--segment",
        "office",
        json=True,
    )
    assert result.exit_code == 0, result
    assert result.json["segment"] == "office"
    assert result.json["params"] == {"employees": 40, "offices": 2}
    assert result.json["missing_primary_fields"] == []
    moved = invoke(
        "client", "set-params", str(client_id), "area=90", "--segment", "shop", "--replace"
    )
    assert moved.exit_code == 0, moved
    shown = invoke("client", "show", str(client_id), json=True).json
    assert (shown["segment"], shown["params"], shown["potential_score"]) == (
        "shop",
        {"area": 90},
        9.0,
    )


def test_set_params_classifies_a_card_without_segment(invoke):
    client_id = _add(invoke, "Unknown")
    result = invoke("client", "set-params", str(client_id), "area=600", json=True)
    assert result.exit_code == 0, result
    assert result.json["segment"] == "shop"
    assert result.json["params"] == {"area": 600}
    assert result.json["potential_category"] == "A"


def test_set_params_refuses_a_bad_value_in_one_line(invoke):
    client_id = _add(invoke, "Shop", "--segment", "shop", "--param", "area=100")
    result = invoke("client", "set-params", str(client_id), "area=-3")
    assert result.exit_code == 2
    assert result.output == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: params.area: -3 is less than the minimum of 0")
    assert "(allowed: a number >= 0, in m²)" in lines[0]
    shown = invoke("client", "show", str(client_id), json=True).json
    assert shown["params"] == {"area": 100}  # nothing was written


def test_set_params_refuses_bad_input(invoke):
    client_id = _add(invoke, "Shop", "--segment", "shop", "--param", "area=100")
    no_pair = invoke("client", "set-params", str(client_id), "area")
    assert no_pair.exit_code != 0
    assert no_pair.stderr == "Error: param: expected KEY=VALUE, got 'area'\n"
    no_pairs = invoke("client", "set-params", str(client_id))
    assert no_pairs.exit_code == 2
    unknown_segment = invoke("client", "set-params", str(client_id), "x=1", "--segment", "nope")
    assert unknown_segment.exit_code == 2
    assert "unknown segment 'nope'" in unknown_segment.stderr
    missing = invoke("client", "set-params", "999", "area=1")
    assert missing.exit_code != 0 and "999" in missing.stderr


# -- crmkit client show -------------------------------------------------------------------------
class DetailsPlugin:
    @hookimpl
    def crmkit_client_details(self, session, client):
        if client.segment != "shop":
            return None
        return {"orders": 3, "last_order": "2026-11-01", "viewer": session.user.login}


def test_client_show_json_has_potential_and_plugins(crm, invoke, register_plugin):
    register_plugin(DetailsPlugin(), name="orders")
    shop = _add(invoke, "Shop", "--param", "area=600", "--param", "city=Kazan")
    firm = _add(invoke, "Firm", "--segment", "office")
    shown = invoke("client", "show", str(shop), json=True)
    assert shown.exit_code == 0, shown
    assert shown.json["segment"] == "shop"
    assert shown.json["potential_score"] == 65.0
    assert shown.json["potential_category"] == "A"
    assert shown.json["plugins"] == {
        "orders": {"orders": 3, "last_order": "2026-11-01", "viewer": "admin"}
    }
    other = invoke("client", "show", str(firm), json=True).json
    assert other["plugins"] == {}
    assert (other["potential_score"], other["potential_category"]) == (None, None)
    table = invoke("client", "show", str(shop))
    assert table.exit_code == 0, table
    assert "orders" in table.output and "2026-11-01" in table.output
    assert "65.0" in table.output


# -- bulk import ------------------------------------------------------------------------------
def _by_name(crm: Any) -> dict[str, Any]:
    with crm.session(readonly=True) as s:
        return {c.name: c for c in s.clients.iter()}


def test_import_classifies_and_scores_rows(crm, tmp_path):
    from crmkit.transfer.importer import import_file

    source = tmp_path / "clients.csv"
    source.write_text(
        "name,segment,param.area,param.city,param.employees,param.offices,param.dock\n"
        "Corner,,120,Kazan,,,\n"
        "Big,,2000,,,,\n"
        "Firm,,,,12,3,\n"
        "Depot,,900,,,,true\n"
        "Explicit,shop,50,,,,\n"
        "Mixed,,10,,5,,\n"
        "Plain,,,,,,\n"
        "Bad,shop,-1,,,,\n",
        "utf-8",
    )
    result = import_file(crm, "clients", source)
    assert (result.inserted, result.rejected) == (7, 1), result.errors
    assert result.errors[0].column == "param.area"
    found = _by_name(crm)
    assert found["Corner"].segment == "shop"
    assert found["Corner"].params == {"area": 120, "city": "Kazan"}
    assert (found["Corner"].potential_score, found["Corner"].potential_category) == (17.0, "C")
    assert (found["Big"].potential_score, found["Big"].potential_category) == (100.0, "A")
    assert found["Firm"].segment == "office"
    assert found["Firm"].params == {"employees": 12, "offices": 3}
    assert found["Firm"].potential_score is None
    assert found["Depot"].segment == "warehouse"
    assert found["Depot"].params == {"area": 900, "dock": True}
    assert (found["Explicit"].segment, found["Explicit"].potential_score) == ("shop", 5.0)
    assert found["Mixed"].segment is None and found["Mixed"].potential_score is None
    assert found["Plain"].segment is None and found["Plain"].params == {}


def test_import_gives_the_same_verdict_as_a_saved_card(crm, tmp_path):
    """A row and a card with the same parameters get the same segment and potential."""
    from crmkit.transfer.importer import import_file

    cards = [
        {"area": 120, "city": "Kazan"},
        {"employees": 4},
        {"area": 10, "dock": True},
        {"area": 10, "employees": 1},
        {"city": "Omsk"},
    ]
    source = tmp_path / "clients.jsonl"
    source.write_text(
        "".join(json.dumps({"name": f"Row {i}", "params": p}) + "\n" for i, p in enumerate(cards))
    )
    assert import_file(crm, "clients", source).inserted == len(cards)
    imported = _by_name(crm)
    with crm.session() as s:
        for i, params in enumerate(cards):
            card = s.clients.create(f"Card {i}", params=params)
            row = imported[f"Row {i}"]
            assert (row.segment, row.potential_score, row.potential_category) == (
                card.segment,
                card.potential_score,
                card.potential_category,
            ), params


def test_import_update_existing_rescores(crm, tmp_path):
    from crmkit.transfer.importer import import_file

    first = tmp_path / "first.csv"
    first.write_text("external_id,name,param.area\nS-1,Shop,100\nS-2,Other,\n")
    assert import_file(crm, "clients", first).inserted == 2
    before = _by_name(crm)
    assert (before["Shop"].segment, before["Shop"].potential_score) == ("shop", 10.0)
    second = tmp_path / "second.csv"
    second.write_text("external_id,name,param.area\nS-1,Shop,700\nS-2,Other,300\n")
    result = import_file(crm, "clients", second, update_existing=True)
    assert result.updated == 2, result.errors
    after = _by_name(crm)
    assert (after["Shop"].potential_score, after["Shop"].potential_category) == (70.0, "A")
    assert (after["Other"].segment, after["Other"].potential_score) == ("shop", 30.0)
    again = import_file(crm, "clients", second, update_existing=True)
    assert again.unchanged == 2


def test_import_through_the_cli(crm, invoke, tmp_path):
    source = tmp_path / "clients.csv"
    source.write_text("name,param.employees,param.offices\nFirm,30,2\n")
    result = invoke("import", "clients", str(source))
    assert result.exit_code == 0, result
    [client] = _by_name(crm).values()
    assert (client.segment, client.params) == ("office", {"employees": 30, "offices": 2})


# -- the migration ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_the_potential_migration_keeps_the_data(crm):
    """crmkit_0004 adds and drops its columns in place: nothing else is touched."""
    from alembic import command

    from crmkit.core.migrate import alembic_config

    with crm.session() as s:
        shop = s.clients.create("Shop", segment="shop", params={"area": 600}, email="s@x.example")
        s.contacts.add(shop.id, "Ivan")
        deal = s.deals.open(shop.id, amount=10)
        s.tasks.add("Call back", due="+1d", deal_id=deal.id)
        s.interactions.log(shop.id, "email", topic="proposal", outcome="sent", deal_id=deal.id)

    def columns() -> set[str]:
        with crm.connect() as conn:
            return {c["name"] for c in inspect(conn).get_columns("clients")}

    def counts() -> list[int]:
        with crm.session(readonly=True) as s:
            return [
                s.connection.execute(select(func.count()).select_from(s.table(t))).scalar_one()
                for t in ("clients", "contacts", "deals", "tasks", "interactions", "events")
            ]

    stored = counts()
    with crm.connect() as conn:
        command.downgrade(alembic_config(crm, conn), "crmkit@crmkit_0003")
    assert not {"potential_score", "potential_category"} & columns()
    assert counts() == stored
    with crm.connect() as conn:
        command.upgrade(alembic_config(crm, conn), "crmkit@head")  # through crmkit_0004
    assert {"potential_score", "potential_category"} <= columns()
    assert counts() == stored
    with crm.session() as s:
        again = s.clients.get(shop.id)
        assert (again.name, again.email, again.params) == ("Shop", "s@x.example", {"area": 600})
        assert again.potential_score is None  # computed again on the next save
        rescored = s.clients.update(shop.id, params={"area": 610})
        assert rescored.potential_category == "A"
        assert s.deals.get(deal.id).client_id == shop.id
    status = {row["branch"]: row for row in crm.schema_status()}
    assert status["crmkit"]["up_to_date"], status


def test_import_reads_parameters_under_the_stored_clients_segment(crm, tmp_path):
    """A row without a segment updates a stored card under the card's segment, not a guess."""
    from crmkit.transfer.importer import import_file

    with crm.session() as s:
        s.clients.create("Depot", external_id="W-1", segment="warehouse", params={"area": 100})
        s.clients.create(
            "Firm", external_id="O-1", segment="office", params={"employees": 3, "offices": 1}
        )
        s.clients.create("Kiosk", external_id="K-1", segment="shop", params={"city": "Omsk"})
    source = tmp_path / "update.csv"
    source.write_text(
        "external_id,name,param.area,param.employees\n"
        "W-1,Depot,700,\n"  # a shop's parameters, but the card is a warehouse
        "O-1,Firm,5,\n"  # an office has no area
        "K-1,Kiosk,20,\n"
    )
    result = import_file(crm, "clients", source, update_existing=True)
    assert (result.updated, result.rejected) == (2, 1), result.errors
    [error] = result.errors
    assert (error.line, error.column) == (3, "param.area")
    assert error.reason == "params.area: is not a known parameter"
    found = _by_name(crm)
    assert (found["Depot"].segment, found["Depot"].params) == ("warehouse", {"area": 700})
    assert found["Depot"].potential_score is None  # the warehouse has no scorer
    assert found["Firm"].params == {"employees": 3, "offices": 1}
    assert (found["Kiosk"].params, found["Kiosk"].potential_score) == ({"area": 20}, 2.0)
    again = import_file(crm, "clients", source, update_existing=True)
    assert again.unchanged == 2


def test_import_of_a_new_segment_checks_and_scores_the_stored_parameters(crm, tmp_path):
    from crmkit.transfer.importer import import_file

    with crm.session() as s:
        s.clients.create("Depot", external_id="W-1", segment="warehouse", params={"area": 600})
        s.clients.create(
            "Firm", external_id="O-1", segment="office", params={"employees": 3, "offices": 1}
        )
    source = tmp_path / "segments.csv"
    source.write_text("external_id,name,segment\nW-1,Depot,shop\nO-1,Firm,shop\n")
    result = import_file(crm, "clients", source, update_existing=True)
    assert (result.updated, result.rejected) == (1, 1), result.errors
    found = _by_name(crm)
    assert found["Depot"].segment == "shop"
    assert (found["Depot"].potential_score, found["Depot"].potential_category) == (60.0, "A")
    assert found["Firm"].segment == "office"  # its parameters are no shop's


# -- the examples of docs/config.rst ------------------------------------------------------------
def _config_examples() -> list[str]:
    """The TOML blocks of the ``[segments.NAME]`` section of docs/config.rst."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "config.rst").read_text("utf-8")
    section = text[text.index("``[segments.NAME]``\n") : text.index("``[interactions.KIND]``\n")]
    found = []
    for block in section.split(".. code-block:: toml\n\n")[1:]:
        lines = []
        for line in block.splitlines():
            if line and not line.startswith("   "):
                break
            lines.append(line)
        found.append(textwrap.dedent("\n".join(lines)) + "\n")
    return found


def test_the_config_pages_segment_examples_work(crm_factory):
    b2b = pytest.importorskip("crmkit_segment_b2b", reason="pip install -e plugins/segment_b2b")
    settings_example, schema_example = _config_examples()
    crm = crm_factory("b2b", plugins=[("segment_b2b", b2b)])
    plugin = crm.segment("distributor")
    with reopen(crm, settings_example) as reopened:
        dealer = reopened.segment("distributor")
        assert dealer.title == "Dealer"
        assert dealer.primary_fields == [*plugin.primary_fields, "regions"]
        assert dealer.properties["founded"]["minimum"] == 1800
        assert dealer.settings["potential"]["categories"]["A"] == 80
        others = {k: v for k, v in dealer.settings["potential"]["categories"].items() if k != "A"}
        plugins = plugin.settings["potential"]["categories"]
        assert others == {k: v for k, v in plugins.items() if k != "A"}
        assert dealer.settings["potential"]["weights"] == plugin.settings["potential"]["weights"]
    config = crm.config.root / "crmkit.toml"
    plain = config.read_text("utf-8").split("\n[segments.distributor]")[0] + "\n"
    config.write_text(plain, "utf-8")
    with reopen(crm, schema_example) as reopened:
        assert reopened.segment("distributor").properties["turnover"]["x-unit"] == "EUR/year"
    config.write_text(plain, "utf-8")
    with pytest.raises(ConfigError) as info:  # when opened: the plugin's startup reads it
        reopen(crm, '[segments.distributor]\npotential = { categories = { A = "high" } }\n')
    assert str(info.value) == (
        "segments.distributor.potential.categories.A: 'high' is not of type 'number'"
    )


def test_rescore_applies_new_settings_to_stored_cards(crm, invoke):
    with crm.session() as s:
        card = s.clients.create("Shop", segment="shop", params={"area": 120})
        loose = s.clients.create("Loose", params={"colour": "red"})  # fits no segment
    stored = card.potential_score
    before = invoke("segment", "rescore", json=True)
    assert before.exit_code == 0, before
    assert before.json == {"checked": 2, "rescored": 0, "classified": 0}
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n[segments.shop.weights]\narea = 0.01\n", "utf-8")
    after = invoke("segment", "rescore", "--segment", "shop", json=True)
    assert after.json == {"checked": 1, "rescored": 1, "classified": 0}
    with crm.session() as s:
        fresh = s.clients.get(card.id)
        assert fresh.potential_score != stored
        [event] = [e for e in s.events("client", card.id) if e["action"] == "rescored"]
        assert event["data"]["potential_score"] == {"old": stored, "new": fresh.potential_score}
        assert s.clients.get(loose.id).segment is None
    shown = invoke("segment", "show", "shop", json=True).json
    assert shown["settings"]["weights"]["area"] == 0.01
    assert "Checked 1 cards" in invoke("segment", "rescore", "--segment", "shop").output


def test_rescore_writes_in_batches_and_classifies(crm):
    with crm.session() as s:
        shops = [
            s.clients.create(f"Shop {i}", segment="shop", params={"area": 10 * i})
            for i in (1, 2, 3)
        ]
        free = s.clients.create("Free", params={"colour": "red"})  # fits no segment
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n[segments.shop.weights]\narea = 0.05\n", "utf-8")
    tuned = crmkit.CRM.open(crm.config.root, plugins=crm.plugins)
    with tuned.session() as s:
        assert s.clients.rescore(batch_size=2) == {"checked": 4, "rescored": 3, "classified": 0}
        for shop in shops:
            fresh = s.clients.get(shop.id)
            assert fresh.potential_score == tuned.segment("shop").potential(fresh.params).score
            [event] = [e for e in s.events("client", shop.id) if e["action"] == "rescored"]
            assert set(event["data"]) == {"potential_score"}  # only what changed
        assert s.clients.get(free.id).segment is None
        assert s.clients.rescore() == {"checked": 4, "rescored": 0, "classified": 0}
    tuned.close()
