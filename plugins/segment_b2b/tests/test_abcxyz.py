"""The ``abcxyz`` report: ABC by revenue, XYZ by regularity, on the API and the CLI.

The data (period 2025, the deployment in UTC, total revenue 100 000):

========  ===========  ==========================  =======  =====  ========  =====
client    segment      paid in 2025                revenue  share  CV        class
========  ===========  ==========================  =======  =====  ========  =====
Big       corporate    70 000 once (March)         70 000   0.70   sqrt(11)  AZ
Wavy      distributor  800 / 1 200 alternating     12 000   0.12   0.2       AY
Steady    distributor  900 every month             10 800   0.108  0         BX
Edge      corporate    450 / 550 alternating        6 000   0.06   0.1       BX
Small     distributor  1 200 once (July)            1 200   0.012  sqrt(11)  CZ
Idle      distributor  nothing                     (not listed)
Unpaid    corporate    an invoice issued, not paid (not listed)
========  ===========  ==========================  =======  =====  ========  =====

Cumulative shares before each client: 0, 0.70, 0.82, 0.928, 0.988, so with
the defaults (A < 0.80, B < 0.95) Big and Wavy are A, Steady and Edge B, Small C.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from crmkit import Period, ValidationError

CliRun = Callable[..., Any]
UTC = dt.UTC


def at(year: int, month: int, day: int = 15, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def paid(s: Any, deal_id: int, amount: Any, when: dt.datetime) -> None:
    invoice = s.invoices.issue(deal_id, amount, at=when)
    s.invoices.pay(invoice.id, at=when)


def client_with_deal(s: Any, name: str, segment: str) -> tuple[int, int]:
    client = s.clients.create(name, segment=segment, params={})
    deal = s.deals.open(client.id, pipeline="b2b", amount=1000, at=at(2024, 1, 1))
    return client.id, deal.id


@pytest.fixture
def data(crm: Any) -> dict[str, int]:
    """The clients of the module's table; returns their ids by name."""
    ids: dict[str, int] = {}
    with crm.session() as s:
        ids["Big"], deal = client_with_deal(s, "Big", "corporate")
        paid(s, deal, 70000, at(2025, 3))

        ids["Wavy"], deal = client_with_deal(s, "Wavy", "distributor")
        for month in range(1, 13):
            paid(s, deal, 800 if month % 2 else 1200, at(2025, month))

        ids["Steady"], deal = client_with_deal(s, "Steady", "distributor")
        for month in range(1, 13):
            if month == 6:  # two invoices in one month: 400 + 500 = 900
                paid(s, deal, 400, at(2025, 6, 2))
                paid(s, deal, "500.00", at(2025, 6, 28))
            else:
                paid(s, deal, 900, at(2025, month))
        # outside 2025 by a minute on each side: not counted
        paid(s, deal, 99999, at(2024, 12, 31, 23, 59))
        paid(s, deal, 99999, at(2026, 1, 1, 0, 0))

        ids["Edge"], deal = client_with_deal(s, "Edge", "corporate")
        for month in range(1, 13):
            paid(s, deal, 450 if month % 2 else 550, at(2025, month, 1, 0, 0))

        ids["Small"], deal = client_with_deal(s, "Small", "distributor")
        paid(s, deal, 1200, at(2025, 7, 31, 23, 59))

        ids["Idle"] = s.clients.create("Idle", segment="distributor").id
        ids["Unpaid"], deal = client_with_deal(s, "Unpaid", "corporate")
        s.invoices.issue(deal, 5000, at=at(2025, 5))
    return ids


def by_client(result: Any) -> dict[str, dict[str, Any]]:
    rows = result.rows if hasattr(result, "rows") else result["rows"]
    return {row["client"]: row for row in rows}


SQRT11 = round(math.sqrt(11), 4)


# -- the Python API --------------------------------------------------------------------
def test_classes_shares_and_cv(crm: Any, data: dict[str, int]) -> None:
    with crm.session() as s:
        result = s.report("abcxyz", period="2025")
    assert result.report == "abcxyz"
    assert result.period == Period(dt.date(2025, 1, 1), dt.date(2026, 1, 1), "2025")
    assert [r["client"] for r in result.rows] == ["Big", "Wavy", "Steady", "Edge", "Small"]
    rows = by_client(result)
    expected = {
        # name: (revenue, share, cumulative, months, cv, class)
        "Big": (70000.0, 0.7, 0.7, 1, SQRT11, "AZ"),
        "Wavy": (12000.0, 0.12, 0.82, 12, 0.2, "AY"),
        "Steady": (10800.0, 0.108, 0.928, 12, 0.0, "BX"),
        "Edge": (6000.0, 0.06, 0.988, 12, 0.1, "BX"),  # CV exactly x_limit: still X
        "Small": (1200.0, 0.012, 1.0, 1, SQRT11, "CZ"),
    }
    for name, (revenue, share, cumulative, months, cv, cls) in expected.items():
        row = rows[name]
        assert row["client_id"] == data[name]
        assert row["revenue"] == revenue, name
        assert row["share"] == pytest.approx(share), name
        assert row["cumulative"] == pytest.approx(cumulative), name
        assert row["months_with_purchases"] == months, name
        assert row["cv"] == pytest.approx(cv, abs=1e-4), name
        assert (row["abc"], row["xyz"], row["class"]) == (cls[0], cls[1], cls), name
    assert rows["Big"]["segment"] == "corporate"
    assert rows["Wavy"]["segment"] == "distributor"
    assert [c.name for c in result.columns] == [
        "client_id",
        "client",
        "segment",
        "revenue",
        "share",
        "cumulative",
        "months_with_purchases",
        "cv",
        "abc",
        "xyz",
        "class",
    ]
    assert {c.name: c.type for c in result.columns}["revenue"] == "money"
    assert {c.name: c.type for c in result.columns}["share"] == "percent"


def test_summary_matrix_and_notes(crm: Any, data: dict[str, int]) -> None:
    with crm.session() as s:
        result = s.report("abcxyz", period="2025")
    summary = result.summary
    assert summary["clients"] == 5
    assert summary["revenue"] == 100000.0
    assert summary["months"] == 12
    assert {k: summary[k] for k in "ABCXYZ"} == {"A": 2, "B": 2, "C": 1, "X": 2, "Y": 1, "Z": 2}
    assert summary["matrix"] == {
        "AX": 0,
        "AY": 1,
        "AZ": 1,
        "BX": 2,
        "BY": 0,
        "BZ": 0,
        "CX": 0,
        "CY": 0,
        "CZ": 1,
    }
    thresholds = result.notes[0]
    for text in ("80%", "15%", "95%", "CV <= 0.1", "CV <= 0.25", "12 months"):
        assert text in thresholds
    assert "2 clients have no paid invoice in the period and are not listed." in result.notes


def test_thresholds_are_options_and_compared_exactly(crm: Any, data: dict[str, int]) -> None:
    with crm.session() as s:
        # cumulative before Wavy is exactly 0.70, before Steady exactly 0.82: not below
        strict = by_client(s.report("abcxyz", period="2025", a_share=0.7, b_share=0.12))
        assert {n: r["abc"] for n, r in strict.items()} == {
            "Big": "A",
            "Wavy": "B",
            "Steady": "C",
            "Edge": "C",
            "Small": "C",
        }
        # Edge's CV is 0.1 and Wavy's 0.2: the limits include their value
        tight = by_client(s.report("abcxyz", period="2025", x_limit=0.09, y_limit=0.2))
        assert {n: r["xyz"] for n, r in tight.items()} == {
            "Big": "Z",
            "Wavy": "Y",
            "Steady": "X",
            "Edge": "Y",
            "Small": "Z",
        }
        tighter = by_client(s.report("abcxyz", period="2025", x_limit=0.09, y_limit=0.19))
        assert tighter["Wavy"]["xyz"] == "Z"
        assert tighter["Wavy"]["class"] == "AZ"
        note = s.report("abcxyz", period="2025", a_share=0.7, b_share=0.12).notes[0]
        assert "70%" in note and "12%" in note and "82%" in note


def test_segment_filter(crm: Any, data: dict[str, int]) -> None:
    with crm.session() as s:
        result = s.report("abcxyz", period="2025", segment="distributor")
    # total 24 000: Wavy 0.5, Steady 0.45 (before: 0.5, A), Small 0.05 (before: 0.95, C)
    rows = by_client(result)
    assert list(rows) == ["Wavy", "Steady", "Small"]
    assert [rows[n]["share"] for n in rows] == [0.5, 0.45, 0.05]
    assert [rows[n]["class"] for n in rows] == ["AY", "AX", "CZ"]
    assert result.summary["revenue"] == 24000.0
    assert result.summary["clients"] == 3
    assert "1 client has no paid invoice in the period and is not listed." in result.notes


def test_periods_count_payments_by_their_month(crm: Any, data: dict[str, int]) -> None:
    with crm.session() as s:
        march = s.report("abcxyz", period="2025-03")
        h2 = s.report("abcxyz", period="2025-07-01..2025-12-31")
    # one month: every CV is 0, which a note says
    assert {r["client"]: r["revenue"] for r in march.rows} == {
        "Big": 70000.0,
        "Wavy": 800.0,
        "Steady": 900.0,
        "Edge": 450.0,
    }
    assert {r["xyz"] for r in march.rows} == {"X"}
    assert any("one month" in note for note in march.notes)
    # July to December: Small paid at 23:59 on July 31st, in the period
    rows = by_client(h2)
    assert rows["Small"]["revenue"] == 1200.0
    assert rows["Small"]["cv"] == pytest.approx(round(math.sqrt(5), 4))
    assert rows["Edge"]["months_with_purchases"] == 6
    assert "Big" not in rows
    assert h2.summary["months"] == 6


def test_months_follow_the_deployment_time_zone(crm: Any) -> None:
    with crm.session() as s:
        _, deal = client_with_deal(s, "Night owl", "distributor")
        paid(s, deal, 100, at(2025, 1, 15))
        paid(s, deal, 100, at(2025, 1, 31, 22, 0))  # 01:00 on February 1st in Moscow
    period = "2025-01-01..2025-02-28"
    with crm.session() as s:
        (utc,) = s.report("abcxyz", period=period).rows
    # in UTC both payments are in January: months 200 and 0, CV = 100 / 100
    assert (utc["months_with_purchases"], utc["cv"], utc["xyz"]) == (1, 1.0, "Z")
    crm.config = attrs.evolve(crm.config, timezone="Europe/Moscow")
    with crm.session() as s:
        (moscow,) = s.report("abcxyz", period=period).rows
    assert (moscow["months_with_purchases"], moscow["cv"], moscow["xyz"]) == (2, 0.0, "X")


def test_other_currencies_are_left_out(crm: Any) -> None:
    with crm.session() as s:
        client = s.clients.create("Abroad", segment="corporate")
        deal = s.deals.open(client.id, pipeline="b2b", currency="EUR", at=at(2024, 1, 1))
        paid(s, deal.id, 100, at(2025, 2))
        result = s.report("abcxyz", period="2025")
    assert result.rows == []
    assert result.summary["revenue"] == 0.0
    assert "1 paid invoice in other currencies than RUB is left out." in result.notes


def test_no_revenue_gives_an_empty_report(crm: Any) -> None:
    with crm.session() as s:
        result = s.report("abcxyz", period="2025")
    assert result.rows == []
    assert result.summary["clients"] == 0
    assert result.summary["matrix"]["AX"] == 0


def test_default_period_is_the_last_12_months(crm: Any) -> None:
    now = dt.datetime.now(UTC)
    with crm.session() as s:
        _, recent = client_with_deal(s, "Recent", "distributor")
        paid(s, recent, 300, now - dt.timedelta(minutes=1))
        _, old = client_with_deal(s, "Old", "distributor")
        paid(s, old, 300, now - dt.timedelta(days=400))
        result = s.report("abcxyz")
    today = now.date()
    assert result.period.label == "last-12-months"
    assert result.period.end == today + dt.timedelta(days=1)
    assert len(result.period.months()) == 12
    assert result.period.start == result.period.months()[0] <= today.replace(day=1)
    assert result.summary["months"] == 12
    assert [r["client"] for r in result.rows] == ["Recent"]
    assert result.rows[0]["cv"] == pytest.approx(round(math.sqrt(11), 4))


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"a_share": 1.5}, "a_share"),
        ({"a_share": 0}, "a_share"),
        ({"b_share": -0.1}, "b_share"),
        ({"a_share": 0.9, "b_share": 0.1}, "b_share"),
        ({"x_limit": 0.3}, "y_limit"),
        ({"x_limit": -1}, "x_limit"),
        ({"z_share": 1}, "z_share"),
        ({"pipeline": "b2b"}, "pipeline"),
        ({"period": "yesterday"}, "period"),
    ],
)
def test_bad_options_name_the_field(crm: Any, given: dict[str, Any], field: str) -> None:
    with crm.session() as s, pytest.raises(ValidationError) as caught:
        s.report("abcxyz", **given)
    assert caught.value.field == field


# -- the command line --------------------------------------------------------------------
def test_cli_json(invoke: CliRun, data: dict[str, int]) -> None:
    result = invoke("report", "abcxyz", "--period", "2025", json=True)
    assert result.exit_code == 0, result
    out = result.json
    assert out["report"] == "abcxyz"
    assert out["title"] == "ABC/XYZ analysis of clients"
    assert out["period"] == {"start": "2025-01-01", "end": "2026-01-01", "label": "2025"}
    assert [c["name"] for c in out["columns"]][:4] == ["client_id", "client", "segment", "revenue"]
    rows = by_client(out)
    assert rows["Big"] == {
        "client_id": data["Big"],
        "client": "Big",
        "segment": "corporate",
        "revenue": 70000.0,
        "share": 0.7,
        "cumulative": 0.7,
        "months_with_purchases": 1,
        "cv": SQRT11,
        "abc": "A",
        "xyz": "Z",
        "class": "AZ",
    }
    assert out["summary"]["matrix"]["BX"] == 2
    assert out["summary"]["revenue"] == 100000.0


def test_cli_options_and_segment(invoke: CliRun, data: dict[str, int]) -> None:
    result = invoke(
        "report",
        "abcxyz",
        "--period",
        "2025",
        "--segment",
        "corporate",
        "--a-share",
        "0.9",
        "--b-share",
        "0.05",
        "--x-limit",
        "0.05",
        json=True,
    )
    assert result.exit_code == 0, result
    # corporate: Big 70 000 and Edge 6 000 (Unpaid is not listed); Edge before 70/76 = 0.92
    rows = by_client(result.json)
    assert list(rows) == ["Big", "Edge"]
    assert rows["Big"]["class"] == "AZ"
    assert rows["Edge"]["class"] == "BY"  # 0.92 < 0.95; CV 0.1 > 0.05
    assert rows["Edge"]["share"] == round(6000 / 76000, 4)


def test_cli_csv_to_stdout_and_to_a_file(
    invoke: CliRun, data: dict[str, int], tmp_path: Any
) -> None:
    result = invoke("report", "abcxyz", "--period", "2025", "--format", "csv")
    assert result.exit_code == 0, result
    table = list(csv.reader(io.StringIO(result.output)))
    assert table[0] == [
        "client_id",
        "client",
        "segment",
        "revenue",
        "share",
        "cumulative",
        "months_with_purchases",
        "cv",
        "abc",
        "xyz",
        "class",
    ]
    assert table[1] == [
        str(data["Big"]),
        "Big",
        "corporate",
        "70000.0",
        "0.7",
        "0.7",
        "1",
        str(SQRT11),
        "A",
        "Z",
        "AZ",
    ]
    assert [row[-1] for row in table[1:]] == ["AZ", "AY", "BX", "BX", "CZ"]

    out = tmp_path / "abcxyz.csv"
    written = invoke("report", "abcxyz", "--period", "2025", "--format", "csv", "--out", out)
    assert written.exit_code == 0, written
    assert "Wrote 5 rows to" in written.stderr
    assert out.read_text(encoding="utf-8") == result.output


def test_cli_table(invoke: CliRun, data: dict[str, int]) -> None:
    result = invoke("report", "abcxyz", "--period", "2025")
    assert result.exit_code == 0, result
    assert "ABC/XYZ analysis of clients, 2025" in result.output
    assert "clients: 5" in result.output
    assert "2 clients have no paid invoice" in result.output


def test_cli_default_period(invoke: CliRun, crm: Any) -> None:
    with crm.session() as s:
        _, deal = client_with_deal(s, "Recent", "distributor")
        paid(s, deal, 300, dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    result = invoke("report", "abcxyz", json=True)
    assert result.exit_code == 0, result
    assert result.json["period"]["label"] == "last-12-months"
    assert [r["client"] for r in result.json["rows"]] == ["Recent"]
    helped = invoke("report", "abcxyz", "--help")
    text = " ".join(helped.output.split())
    assert "Default: last-12-months." in text
    assert "--a-share FLOAT Share of total revenue that class A covers" in text
    assert "Default: 0.25." in text


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--a-share", "1.5"], "a_share"),
        (["--a-share", "0.9", "--b-share", "0.1"], "b_share"),
        (["--x-limit", "0.5"], "y_limit"),
        (["--period", "2025-13"], "period"),
        (["--period", "someday"], "period"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(invoke: CliRun, args: list[str], field: str) -> None:
    result = invoke("report", "abcxyz", *args)
    assert result.exit_code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {field}: "), lines[0]
    assert "Traceback" not in result.stderr + result.output
    assert result.output == ""


def test_cli_unknown_period_lists_the_forms(invoke: CliRun) -> None:
    result = invoke("report", "abcxyz", "--period", "someday")
    assert result.exit_code == 2
    assert "'someday' is not a period" in result.stderr
    assert "last-12-months" in result.stderr


def test_cli_unknown_segment(invoke: CliRun) -> None:
    result = invoke("report", "abcxyz", "--segment", "nosuch")
    assert result.exit_code != 0
    assert result.stderr.startswith("Error: segment")
    assert "distributor" in result.stderr


def test_a_manager_sees_only_their_clients_and_a_marketer_no_payments(
    crm: Any, data: dict[str, int]
) -> None:
    """The report counts what its reader may read: shares are of the reader's revenue."""
    from crmkit import PermissionDenied

    with crm.session() as s:
        s.users.add("anna", role="manager")
        s.users.add("mark", role="marketer")
        for name in ("Wavy", "Steady"):  # a client and its deals pass to anna
            s.clients.update(data[name], owner="anna")
            for deal in s.deals.list(client_id=data[name]):
                s.deals.update(deal.id, owner="anna")
    with crm.session(as_user="anna", readonly=True) as s:
        result = s.report("abcxyz", period="2025")
    rows = by_client(result)
    assert list(rows) == ["Wavy", "Steady"]
    assert rows["Wavy"]["share"] == pytest.approx(12000 / 22800, abs=1e-4)  # rounded
    with (
        crm.session(as_user="mark", readonly=True) as s,
        pytest.raises(PermissionDenied, match="may not read invoices"),
    ):
        s.report("abcxyz", period="2025")
