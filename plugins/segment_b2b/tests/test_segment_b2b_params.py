"""Segment parameters through the Python API: what a save accepts and refuses."""

from __future__ import annotations

from typing import Any

import pytest
from crmkit_segment_b2b.segments import CORPORATE_SCHEMA, DISTRIBUTOR_SCHEMA, build_segments
from jsonschema import Draft202012Validator

from crmkit import CRM, Session, ValidationError

DISTRIBUTOR_PARAMS: dict[str, Any] = {
    "turnover": 120_000_000,
    "sales_reps": 14,
    "own_clients": 350,
    "warehouse_area": 2500.5,
    "regions": ["Moscow", "Tver"],
}
CORPORATE_PARAMS: dict[str, Any] = {
    "employees": 800,
    "offices": 5,
    "equipment": [{"type": "laser printer", "count": 120}, {"type": "plotter", "count": 2}],
    "industry": "logistics",
}


def refused(session: Session, segment: str, params: dict[str, Any]) -> list[tuple[Any, str]]:
    """The (field, reason) problems of a refused save; fails if the card was saved."""
    with pytest.raises(ValidationError) as info:
        session.clients.create("Refused Ltd", segment=segment, params=params)
    return [(p.field, p.reason) for p in info.value.problems]


def test_both_segments_are_registered(crm: CRM) -> None:
    assert set(crm.segments) == {"distributor", "corporate"}
    distributor, corporate = crm.segment("distributor"), crm.segment("corporate")
    assert distributor.title == "Distributor"
    assert corporate.title == "End corporate customer"
    assert distributor.plugin == corporate.plugin == "segment_b2b"
    assert distributor.description and corporate.description
    assert distributor.primary_fields == ["turnover", "sales_reps", "own_clients", "warehouse_area"]
    assert corporate.primary_fields == ["employees", "offices", "equipment"]


@pytest.mark.parametrize("schema", [DISTRIBUTOR_SCHEMA, CORPORATE_SCHEMA], ids=["dist", "corp"])
def test_schemas_are_documented_2020_12_schemas(schema: dict[str, Any]) -> None:
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] and schema["description"]
    assert schema["additionalProperties"] is False
    for name, prop in schema["properties"].items():
        assert prop.get("title") and prop.get("description"), name


def test_build_segments_returns_independent_copies() -> None:
    first = build_segments()
    first[0].schema["properties"].clear()
    assert build_segments()[0].schema == DISTRIBUTOR_SCHEMA
    assert DISTRIBUTOR_SCHEMA["properties"]


def test_valid_distributor_card_saves(session: Session) -> None:
    card = session.clients.create("Vostok Trade", segment="distributor", params=DISTRIBUTOR_PARAMS)
    stored = session.clients.get(card.id)
    assert stored.segment == "distributor"
    assert stored.params == DISTRIBUTOR_PARAMS
    assert session.crm.segment("distributor").missing(stored.params) == []


def test_valid_corporate_card_saves(session: Session) -> None:
    card = session.clients.create("Rosprint", segment="corporate", params=CORPORATE_PARAMS)
    assert session.clients.get(card.id).params == CORPORATE_PARAMS
    assert session.crm.segment("corporate").missing(card.params) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"turnover": -1}, "params.turnover"),
        ({"turnover": "a lot"}, "params.turnover"),
        ({"turnover": True}, "params.turnover"),
        ({"sales_reps": 2.5}, "params.sales_reps"),
        ({"own_clients": -3}, "params.own_clients"),
        ({"warehouse_area": -0.1}, "params.warehouse_area"),
        ({"regions": "Moscow"}, "params.regions"),
        ({"regions": ["Moscow", "Moscow"]}, "params.regions"),
        ({"regions": ["Moscow", ""]}, "params.regions.1"),
    ],
)
def test_bad_distributor_value_is_refused(
    session: Session, params: dict[str, Any], field: str
) -> None:
    assert [f for f, _ in refused(session, "distributor", params)] == [field]
    assert session.clients.count() == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"employees": 0}, "params.employees"),
        ({"offices": "two"}, "params.offices"),
        ({"equipment": {"type": "printer", "count": 1}}, "params.equipment"),
        ({"equipment": [{"type": "printer", "count": 0}]}, "params.equipment.0.count"),
        ({"equipment": [{"type": "", "count": 1}]}, "params.equipment.0.type"),
        ({"equipment": [{"type": "printer"}]}, "params.equipment.0.count"),
        ({"industry": 42}, "params.industry"),
    ],
)
def test_bad_corporate_value_is_refused(
    session: Session, params: dict[str, Any], field: str
) -> None:
    assert [f for f, _ in refused(session, "corporate", params)] == [field]


def test_every_problem_is_reported_at_once(session: Session) -> None:
    problems = refused(session, "distributor", {"turnover": -5, "sales_reps": "many"})
    assert [f for f, _ in problems] == ["params.sales_reps", "params.turnover"]
    assert "minimum of 0" in dict(problems)["params.turnover"]


def test_unknown_parameter_is_refused_and_named(session: Session) -> None:
    problems = refused(session, "distributor", {"turnover": 1, "fax": "+7 495 000"})
    assert len(problems) == 1
    field, reason = problems[0]
    assert field is not None and field.startswith("params")
    assert "fax" in f"{field}: {reason}"


def test_parameters_of_the_other_segment_are_unknown(session: Session) -> None:
    problems = refused(session, "corporate", {"employees": 10, "turnover": 5})
    assert any("turnover" in f"{field}: {reason}" for field, reason in problems)


def test_card_without_primary_fields_saves_and_lists_them(session: Session) -> None:
    card = session.clients.create("Half Known", segment="distributor", params={"turnover": 1e6})
    segment = session.crm.segment("distributor")
    assert segment.missing(card.params) == ["sales_reps", "own_clients", "warehouse_area"]
    assert segment.validate(card.params) == []
    complete = {p.field for p in segment.validate(card.params, complete=True)}
    assert complete == {"params.sales_reps", "params.own_clients", "params.warehouse_area"}

    empty = session.clients.create("Unknown Yet", segment="corporate", params={"equipment": []})
    assert session.crm.segment("corporate").missing(empty.params) == [
        "employees",
        "offices",
        "equipment",
    ]


def test_changing_segment_rechecks_the_parameters(session: Session) -> None:
    card = session.clients.create("Switcher", segment="distributor", params={"turnover": 10})
    with pytest.raises(ValidationError) as info:
        session.clients.update(card.id, segment="corporate")
    assert any("turnover" in str(p) for p in info.value.problems)
    moved = session.clients.update(card.id, segment="corporate", params={"employees": 30})
    assert (moved.segment, moved.params) == ("corporate", {"employees": 30})
