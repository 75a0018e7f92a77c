"""The ``sales`` report (issue 7): revenue by month, client, manager, segment and product.

Every figure is computed by hand from the deployment that :func:`base` builds
(time zone UTC, currency RUB); the definitions are in ``docs/analytics/sales.rst``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest

from crmkit import Segment, hookimpl

UTC = dt.UTC
COLUMNS = ["group", "revenue", "share", "invoices", "average_invoice", "deals_won", "won_amount"]


def at(month: int, day: int, hour: int = 12, year: int = 2026) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


class Shop:
    """Two pipelines without gates (one stage each) and two segments."""

    @hookimpl
    def crmkit_pipelines(self) -> list[dict[str, Any]]:
        return [
            {"name": "quick", "stages": [{"name": "agreed"}]},
            {"name": "other", "stages": [{"name": "done"}]},
        ]

    @hookimpl
    def crmkit_segments(self) -> list[Segment]:
        schema = {"type": "object", "properties": {}}
        return [
            Segment(name="retail", title="Retail", schema=schema),
            Segment(name="wholesale", title="Wholesale", schema=schema),
        ]


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    return [("shop", Shop())]


@pytest.fixture
def base(crm: Any) -> dict[str, int]:
    """Three clients, two managers, seven deals, ten invoices (2026-Q1 is the period).

    ========  =========  ========  =====  ===================  ======  ===========
    deal      client     owner     pipe   title                amount  won
    ========  =========  ========  =====  ===================  ======  ===========
    D1        Alpha      anna      quick  Printers: Alpha      1000    2026-01-20
    D2        Beta       boris     quick  Printers: Beta       3000    2026-02-10
    D3        Gamma      anna      quick  Toner                500     2026-03-05
    D4        Beta       boris     quick  Service: Beta        700 USD 2026-02-15
    D5        Alpha      anna      quick  Service: Alpha       2000    (open)
    D6        Alpha      anna      quick  Printers: Alpha      450     2025-12-20
    D7        Beta       boris     other  Printers: Beta       800     2026-03-10
    ========  =========  ========  =====  ===================  ======  ===========

    Alpha is retail, Beta wholesale, Gamma has no segment; anna is in team
    north, boris in south. Invoices (RUB unless said):

    - I1 D1 600 paid 01-25; I2 D1 400 paid 02-03; I3 D2 3000 paid 02-12;
    - I4 D3 500 issued, never paid; I9 D3 250 cancelled: no revenue;
    - I5 D4 700 USD paid 02-20: another currency, left out;
    - I6 D5 2000 paid 03-31 23:00 UTC: March (an open deal's prepayment counts);
    - I7 D6 450 paid 01-05: January (the deal was won in 2025);
    - I8 D2 1000 paid 04-01 00:00 UTC: after the period;
    - I10 D7 800 paid 03-11.

    In 2026-Q1: revenue 600 + 400 + 3000 + 2000 + 450 + 800 = 7250 from 6
    invoices (average 7250 / 6 = 1208.33); deals won D1, D2, D3, D7 (D4 is in
    USD, D6 in 2025): 4 deals, 1000 + 3000 + 500 + 800 = 5300.
    """
    with crm.session() as s:
        s.teams.add("north")
        s.teams.add("south")
        s.users.add("anna", role="manager", team="north")
        s.users.add("boris", role="manager", team="south")
        made = at(10, 1, year=2025)
        alpha = s.clients.create("Alpha", segment="retail", owner="anna", created_at=made).id
        beta = s.clients.create("Beta", segment="wholesale", owner="boris", created_at=made).id
        gamma = s.clients.create("Gamma", owner="anna", created_at=made).id

        def deal(client: int, owner: str, title: str, amount: int, **kw: Any) -> int:
            kw.setdefault("pipeline", "quick")
            opened = at(11, 1, year=2025)
            return s.deals.open(client, title=title, amount=amount, owner=owner, at=opened, **kw).id

        d1 = deal(alpha, "anna", "Printers: Alpha", 1000)
        d2 = deal(beta, "boris", "Printers: Beta", 3000)
        d3 = deal(gamma, "anna", "Toner", 500)
        d4 = deal(beta, "boris", "Service: Beta", 700, currency="USD")
        d5 = deal(alpha, "anna", "Service: Alpha", 2000)
        d6 = deal(alpha, "anna", "Printers: Alpha", 450)
        d7 = deal(beta, "boris", "Printers: Beta", 800, pipeline="other")
        for d, when in [
            (d1, at(1, 20)),
            (d2, at(2, 10)),
            (d3, at(3, 5)),
            (d4, at(2, 15)),
            (d6, at(12, 20, year=2025)),
            (d7, at(3, 10)),
        ]:
            s.deals.win(d, at=when)

        def paid(d: int, amount: int, when: dt.datetime, currency: str | None = None) -> int:
            issued = s.invoices.issue(d, amount, currency=currency, at=when - dt.timedelta(days=1))
            s.invoices.pay(issued.id, at=when)
            return issued.id

        paid(d1, 600, at(1, 25))
        paid(d1, 400, at(2, 3))
        paid(d2, 3000, at(2, 12))
        s.invoices.issue(d3, 500, at=at(3, 6))
        paid(d4, 700, at(2, 20), currency="USD")
        paid(d5, 2000, dt.datetime(2026, 3, 31, 23, tzinfo=UTC))
        paid(d6, 450, at(1, 5))
        paid(d2, 1000, dt.datetime(2026, 4, 1, tzinfo=UTC))
        cancelled = s.invoices.issue(d3, 250, at=at(3, 7))
        s.invoices.cancel(cancelled.id, at=at(3, 8))
        paid(d7, 800, at(3, 11))
    return {"alpha": alpha, "beta": beta, "gamma": gamma, "d5": d5}


def sales(crm: Any, as_user: str | None = None, **given: Any) -> Any:
    given.setdefault("period", "2026-Q1")
    with crm.session(as_user=as_user, readonly=True) as s:
        return s.report("sales", **given)


def table(result: Any) -> list[tuple[Any, ...]]:
    return [tuple(row[c] for c in COLUMNS) for row in result.rows]


def test_by_month_every_month_is_a_row(crm, base):
    """Jan: I1 600 + I7 450 = 1050 (2 invoices, 525 each), won D1 1000;
    Feb: I2 400 + I3 3000 = 3400 (2, 1700), won D2 3000; Mar: I6 2000 + I10 800
    = 2800 (2, 1400), won D3 500 + D7 800 = 1300. Shares of 7250: 0.1448,
    0.4690, 0.3862."""
    result = sales(crm)
    assert [c.name for c in result.columns] == COLUMNS
    assert result.columns[0].title == "Month"
    assert table(result) == [
        ("2026-01", 1050.0, 0.1448, 2, 525.0, 1, 1000.0),
        ("2026-02", 3400.0, 0.469, 2, 1700.0, 1, 3000.0),
        ("2026-03", 2800.0, 0.3862, 2, 1400.0, 2, 1300.0),
    ]
    assert result.summary == {
        "revenue": 7250.0,
        "invoices": 6,
        "average_invoice": 1208.33,
        "deals_won": 4,
        "won_amount": 5300.0,
        "groups": 3,
        "currency": "RUB",
    }
    assert "1 paid invoice in other currencies than RUB is left out." in result.notes
    assert "1 won deal in other currencies than RUB is left out." in result.notes


def test_by_month_zero_months_are_rows(crm, base):
    """2025-12..2026-04: December has D6 won (450) but no payment; April has
    I8 (1000, paid at 00:00 UTC on April 1st), nothing won."""
    result = sales(crm, period="2025-12-01..2026-04-30")
    assert table(result) == [
        ("2025-12", 0.0, 0.0, 0, 0.0, 1, 450.0),
        ("2026-01", 1050.0, 0.1273, 2, 525.0, 1, 1000.0),
        ("2026-02", 3400.0, 0.4121, 2, 1700.0, 1, 3000.0),
        ("2026-03", 2800.0, 0.3394, 2, 1400.0, 2, 1300.0),
        ("2026-04", 1000.0, 0.1212, 1, 1000.0, 0, 0.0),
    ]  # shares of 8250: 1050 / 8250 = 0.12727, 3400 / 8250 = 0.41212, ...
    empty = sales(crm, period="2024-06")
    assert table(empty) == [("2024-06", 0.0, 0.0, 0, 0.0, 0, 0.0)]
    assert empty.summary["revenue"] == 0.0 and empty.summary["average_invoice"] == 0.0


def test_by_client_sorted_by_revenue(crm, base):
    """Beta: I3 3000 + I10 800 = 3800 (2 invoices, 1900), won D2 + D7 = 3800;
    Alpha: 600 + 400 + 2000 + 450 = 3450 (4, 862.50), won D1 1000;
    Gamma: no payment, won D3 500."""
    result = sales(crm, by="client")
    assert result.columns[0].title == "Client"
    assert table(result) == [
        ("Beta", 3800.0, 0.5241, 2, 1900.0, 2, 3800.0),
        ("Alpha", 3450.0, 0.4759, 4, 862.5, 1, 1000.0),
        ("Gamma", 0.0, 0.0, 0, 0.0, 1, 500.0),
    ]


def test_by_manager_segment_and_product(crm, base):
    """Managers: boris has Beta's 3800 (won D2, D7); anna 3450 (won D1 1000 + D3 500).
    Segments: wholesale is Beta, retail Alpha, Gamma has none.
    Products (the title before ': '): Printers = I1 + I2 + I3 + I7 + I10 =
    600 + 400 + 3000 + 450 + 800 = 5250 (5 invoices, 1050), won D1 + D2 + D7
    = 4800; Service = I6 2000 (D4 is in USD); Toner: won D3 500."""
    assert table(sales(crm, by="manager")) == [
        ("boris", 3800.0, 0.5241, 2, 1900.0, 2, 3800.0),
        ("anna", 3450.0, 0.4759, 4, 862.5, 2, 1500.0),
    ]
    assert table(sales(crm, by="segment")) == [
        ("wholesale", 3800.0, 0.5241, 2, 1900.0, 2, 3800.0),
        ("retail", 3450.0, 0.4759, 4, 862.5, 1, 1000.0),
        ("(none)", 0.0, 0.0, 0, 0.0, 1, 500.0),
    ]
    products = sales(crm, by="product")
    assert table(products) == [
        ("Printers", 5250.0, 0.7241, 5, 1050.0, 3, 4800.0),
        ("Service", 2000.0, 0.2759, 1, 2000.0, 0, 0.0),
        ("Toner", 0.0, 0.0, 0, 0.0, 1, 500.0),
    ]
    assert any("before the first ': '" in note for note in products.notes)


def test_filters(crm, base):
    """--pipeline other: D7 only (800); quick: 7250 - 800 = 6450. --user anna
    and --team north: anna's 3450; --team south: boris's 3800; --segment
    retail: Alpha's 3450."""
    assert table(sales(crm, by="manager", pipeline="other")) == [
        ("boris", 800.0, 1.0, 1, 800.0, 1, 800.0)
    ]
    assert sales(crm, pipeline="quick").summary["revenue"] == 6450.0
    for given in ({"user": "anna"}, {"team": "north"}, {"segment": "retail"}):
        assert sales(crm, by="client", **given).summary["revenue"] == 3450.0, given
    assert table(sales(crm, by="month", user="anna")) == [
        ("2026-01", 1050.0, 0.3043, 2, 525.0, 1, 1000.0),
        ("2026-02", 400.0, 0.1159, 1, 400.0, 0, 0.0),
        ("2026-03", 2000.0, 0.5797, 1, 2000.0, 1, 500.0),
    ]  # of 3450: 1050 -> 0.30435, 400 -> 0.11594, 2000 -> 0.57971
    south = sales(crm, by="client", team="south")
    assert [r["group"] for r in south.rows] == ["Beta"]
    assert south.summary["won_amount"] == 3800.0


def test_a_manager_sees_only_their_sales(crm, base):
    """anna reads her deals only: Alpha 3450 and Gamma (won 500); not Beta."""
    result = sales(crm, as_user="anna", by="client")
    assert table(result) == [
        ("Alpha", 3450.0, 1.0, 4, 862.5, 1, 1000.0),
        ("Gamma", 0.0, 0.0, 0, 0.0, 1, 500.0),
    ]
    assert sales(crm, as_user="boris").summary["revenue"] == 3800.0
    # boris's USD deal and invoice are not anna's: no note about them
    assert not any("other currencies" in n for n in result.notes)


def test_a_deal_on_a_client_the_reader_may_not_read(crm, base):
    """anna's deal on Beta (boris's client): its revenue counts, Beta's name is hidden."""
    with crm.session() as s:
        d = s.deals.open(
            base["beta"], pipeline="quick", title="Kit: Beta", amount=90, owner="anna", at=at(4, 1)
        )
        s.deals.win(d.id, at=at(5, 2))
        inv = s.invoices.issue(d.id, 90, at=at(5, 3))
        s.invoices.pay(inv.id, at=at(5, 4))
    assert table(sales(crm, as_user="anna", by="client", period="2026-05")) == [
        (f"client #{base['beta']} (not readable)", 90.0, 1.0, 1, 90.0, 1, 90.0)
    ]
    assert sales(crm, by="client", period="2026-05").rows[0]["group"] == "Beta"


def test_cli_table_json_csv_and_bad_option(crm, base, invoke):
    shown = invoke("report", "sales", "--period", "2026-Q1", "--by", "manager")
    assert shown.exit_code == 0, shown.output
    assert "Sales, 2026-Q1" in shown.output
    assert "3,800.00" in shown.output and "52.4%" in shown.output
    assert "revenue: 7,250.00" in shown.output
    as_json = invoke("report", "sales", "--period", "2026-Q1", "--by", "product", json=True)
    assert as_json.exit_code == 0, as_json.output
    assert as_json.json["report"] == "sales"
    assert [c["name"] for c in as_json.json["columns"]] == COLUMNS
    assert as_json.json["rows"][0] == {
        "group": "Printers",
        "revenue": 5250.0,
        "share": 0.7241,
        "invoices": 5,
        "average_invoice": 1050.0,
        "deals_won": 3,
        "won_amount": 4800.0,
    }
    as_csv = invoke("report", "sales", "--period", "2026-Q1", "--format", "csv", "--by", "client")
    assert as_csv.exit_code == 0, as_csv.output
    assert list(csv.reader(io.StringIO(as_csv.output))) == [
        COLUMNS,
        ["Beta", "3800.0", "0.5241", "2", "1900.0", "2", "3800.0"],
        ["Alpha", "3450.0", "0.4759", "4", "862.5", "1", "1000.0"],
        ["Gamma", "0.0", "0.0", "0", "0.0", "1", "500.0"],
    ]
    mine = invoke("report", "sales", "--period", "2026-Q1", as_user="anna", json=True)
    assert mine.json["summary"]["revenue"] == 3450.0
    bad = invoke("report", "sales", "--by", "week")
    assert bad.exit_code == 2
    assert "--by" in (bad.output + bad.stderr)


def test_the_chart_is_a_real_png_or_svg(crm, base, invoke, tmp_path):
    report = crm.report("sales")
    by_month = sales(crm)
    png = report.draw(by_month, tmp_path / "months.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    svg = report.draw(sales(crm, by="client"), tmp_path / "clients.svg").read_text("utf-8")
    assert "<svg" in svg and "Revenue by client, 2026-Q1" in svg
    drawn = invoke(
        "report", "sales", "--period", "2026-Q1", "--by", "month", "--chart", tmp_path / "m.svg"
    )
    assert drawn.exit_code == 0, drawn.output
    text = (tmp_path / "m.svg").read_text("utf-8")
    assert "Revenue and deals won by month, 2026-Q1" in text and "2026-03" in text
    empty = report.draw(sales(crm, by="product", period="2024-06"), tmp_path / "none.png")
    assert empty.read_bytes()[:4] == b"\x89PNG"
