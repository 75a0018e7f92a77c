"""The segments on the command line: client add, segment list and show."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CliRun = Callable[..., Any]


def test_client_add_with_distributor_params(invoke: CliRun) -> None:
    result = invoke(
        "client",
        "add",
        "X",
        "--segment",
        "distributor",
        "--param",
        "turnover=1000000",
        "--param",
        'regions=["Moscow"]',
        json=True,
    )
    assert result.exit_code == 0, result
    card = result.json
    assert card["segment"] == "distributor"
    assert card["params"] == {"turnover": 1000000, "regions": ["Moscow"]}
    assert card["missing_primary_fields"] == ["sales_reps", "own_clients", "warehouse_area"]


def test_client_add_with_corporate_params(invoke: CliRun) -> None:
    result = invoke(
        "client",
        "add",
        "Rosprint",
        "--segment",
        "corporate",
        "--param",
        "employees=800",
        "--param",
        "offices=5",
        "--param",
        'equipment=[{"type": "laser printer", "count": 120}]',
        "--param",
        "industry=printing",
        json=True,
    )
    assert result.exit_code == 0, result
    assert result.json["params"]["industry"] == "printing"
    assert result.json["missing_primary_fields"] == []


def test_bad_param_exits_2_with_one_line_naming_the_field(invoke: CliRun) -> None:
    result = invoke("client", "add", "X", "--segment", "distributor", "--param", "turnover=-5")
    assert result.exit_code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: params.turnover:")
    assert "Traceback" not in result.stderr + result.output
    assert invoke("client", "list", json=True).json == []


def test_wrong_type_param_is_refused(invoke: CliRun) -> None:
    result = invoke("client", "add", "X", "--segment", "corporate", "--param", "employees=many")
    assert result.exit_code == 2, result
    assert result.stderr.strip() == (
        "Error: params.employees: 'many' is not of type 'integer' (allowed: a whole number >= 1)"
    )


def test_update_fills_primary_fields(invoke: CliRun) -> None:
    added = invoke("client", "add", "X", "--segment", "distributor", json=True).json
    assert added["missing_primary_fields"] == [
        "turnover",
        "sales_reps",
        "own_clients",
        "warehouse_area",
    ]
    pairs = ["turnover=5e6", "sales_reps=3", "own_clients=40", "warehouse_area=120"]
    args = [a for pair in pairs for a in ("--param", pair)]
    updated = invoke("client", "update", str(added["id"]), *args, json=True)
    assert updated.exit_code == 0, updated
    assert updated.json["missing_primary_fields"] == []
    assert updated.json["params"]["turnover"] == 5e6


def test_segment_list(invoke: CliRun) -> None:
    result = invoke("segment", "list", json=True)
    assert result.exit_code == 0, result
    rows = {row["name"]: row for row in result.json}
    assert set(rows) == {"distributor", "corporate"}
    assert rows["corporate"]["primary_fields"] == ["employees", "offices", "equipment"]
    assert rows["distributor"]["parameters"] == sorted(
        ["turnover", "sales_reps", "own_clients", "warehouse_area", "regions"]
    )


def test_segment_show_lists_the_parameters(invoke: CliRun) -> None:
    result = invoke("segment", "show", "corporate")
    assert result.exit_code == 0, result
    out = result.output
    assert "End corporate customer (corporate)" in out
    for name in ("employees", "offices", "equipment", "industry"):
        assert name in out
    assert ">= 1" in out


def test_segment_show_prints_units(invoke: CliRun) -> None:
    result = invoke("segment", "show", "distributor")
    assert result.exit_code == 0, result
    assert "RUB/year" in result.output
    assert "m²" in result.output


def test_segment_show_json_has_the_schema(invoke: CliRun) -> None:
    result = invoke("segment", "show", "distributor", json=True)
    assert result.exit_code == 0, result
    assert result.json["title"] == "Distributor"
    assert result.json["schema"]["properties"]["turnover"]["x-unit"] == "RUB/year"
