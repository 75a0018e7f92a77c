"""The ``funnel`` report (issue 7): every figure of a small deployment, computed by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from crmkit import Segment, hookimpl

UTC = dt.UTC


def at(month: int, day: int, year: int = 2026) -> dt.datetime:
    return dt.datetime(year, month, day, 12, tzinfo=UTC)


class Quick:
    """A pipeline without gates: lead (mql, 5 days), meet (sql, 10), proposal (7), contract."""

    @hookimpl
    def crmkit_pipelines(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "quick",
                "title": "Quick sales",
                "stages": [
                    {"name": "lead", "days": 5, "marks": ["mql"]},
                    {"name": "meet", "days": 10, "marks": ["sql"]},
                    {"name": "proposal", "days": 7, "marks": ["proposal"]},
                    {"name": "contract"},
                ],
                "lost_reasons": ["price", "competitor", "timing"],
            }
        ]

    @hookimpl
    def crmkit_segments(self) -> list[Segment]:
        return [Segment(name="retail", title="Retail"), Segment(name="corp", title="Corporate")]


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    return [Quick()]


@pytest.fixture
def base(crm: Any) -> dict[str, int]:
    """Seven deals of ``quick`` (D1-D3 anna's, team north; D4-D7 boris's, team south).

    ==  ======  ==========================================================  ========
    id  amount  moves                                                        segment
    ==  ======  ==========================================================  ========
    D1  1000    lead 01-01, meet 01-03, proposal 01-08, contract 01-10,      retail
                won 01-20; first interaction 2025-12-28
    D2  2000    lead 01-05, meet 01-10, proposal 01-20, lost 02-01 (price)   retail
    D3  3000    lead 02-01, lost 02-05 (competitor)                          corp
    D4  4000    lead 02-10, meet 02-12 (still there)                         corp
    D5  5000    lead 2025-12-01, meet 2025-12-10, proposal 01-15,            corp
                contract 02-20, won 03-01
    D6  6000    lead 03-25 (still there)                                     corp
    D7   700    lead 03-30, meet 04-05 (after the period)                    corp
    ==  ======  ==========================================================  ========

    and one b2b deal opened in the period, which ``quick``'s funnel ignores.
    """
    with crm.session() as s:
        s.teams.add("north")
        s.teams.add("south")
        s.users.add("anna", role="manager", team="north")
        s.users.add("boris", role="manager", team="south")
        clients = {
            "anna": s.clients.create("Anna's shop", owner="anna", segment="retail").id,
            "boris": s.clients.create("Boris's firm", owner="boris", segment="corp").id,
            "anna_corp": s.clients.create("Anna's firm", owner="anna", segment="corp").id,
        }
        ids: dict[str, int] = {}

        def deal(name: str, owner: str, amount: int, opened: dt.datetime, client: str = "") -> int:
            made = s.deals.open(
                clients[client or owner], pipeline="quick", amount=amount, owner=owner, at=opened
            )
            ids[name] = made.id
            return made.id

        d1 = deal("D1", "anna", 1000, at(1, 1))
        s.interactions.log(
            clients["anna"],
            "call",
            direction="outbound",
            topic="first_contact",
            outcome="callback_requested",
            deal_id=d1,
            at=at(12, 28, 2025),
        )
        for stage, when in (("meet", at(1, 3)), ("proposal", at(1, 8)), ("contract", at(1, 10))):
            s.deals.move(d1, stage, at=when)
        s.deals.win(d1, at=at(1, 20))
        d2 = deal("D2", "anna", 2000, at(1, 5))
        s.deals.move(d2, "meet", at=at(1, 10))
        s.deals.move(d2, "proposal", at=at(1, 20))
        s.deals.lose(d2, "price", at=at(2, 1))
        d3 = deal("D3", "anna", 3000, at(2, 1), client="anna_corp")
        s.deals.lose(d3, "competitor", at=at(2, 5))
        d4 = deal("D4", "boris", 4000, at(2, 10))
        s.deals.move(d4, "meet", at=at(2, 12))
        d5 = deal("D5", "boris", 5000, at(12, 1, 2025))
        s.deals.move(d5, "meet", at=at(12, 10, 2025))
        s.deals.move(d5, "proposal", at=at(1, 15))
        s.deals.move(d5, "contract", at=at(2, 20))
        s.deals.win(d5, at=at(3, 1))
        deal("D6", "boris", 6000, at(3, 25))
        d7 = deal("D7", "boris", 700, at(3, 30))
        s.deals.move(d7, "meet", at=at(4, 5))
        s.deals.open(clients["anna"], pipeline="b2b", amount=99, owner="anna", at=at(1, 2))
    return ids


def stages(result: Any) -> dict[str, dict[str, Any]]:
    return {row["stage"]: row for row in result.rows}


def test_every_figure_of_the_funnel_by_hand(crm, base):
    """2026-Q1 (UTC), pipeline quick.

    lead (5 days): entered D1 D2 D3 D4 D6 D7 = 6, money 16,700; moved on D1 D2 D4 = 3
    (conversion 3/6 = 50%); lost D3 (competitor); in stage at 04-01: D6, D7 = 2, stalled
    (entered before 03-27): D6 = 1; left in Q1: D1 2 days, D2 5, D3 4, D4 2: mean 13/4 = 3.25,
    median (2 + 4)/2 = 3.
    meet (10 days): entered D1 D2 D4 = 3, money 7,000; moved on D1 D2 = 2; lost 0; in stage D4,
    stalled (before 03-22) D4; left in Q1: D1 5, D2 10, D5 36 (12-10 -> 01-15): mean 17, median 10.
    proposal (7 days): entered D1 D2 D5 = 3, money 8,000; moved on D1 D5 = 2; lost D2 (price);
    in stage 0; left: D1 2, D2 12, D5 36: mean 50/3 = 16.67, median 12.
    contract: entered D1 D5 = 2, money 6,000; moved on (won) 2 = 100%; left: D1 10, D5 9
    (02-20 -> 03-01): mean and median 9.5.

    Whole funnel: 6 entered lead in Q1; won by 04-01: D1: win rate 1/6. Reached the proposal:
    D1, D2; won of those: D1: close rate 1/2. MQL (lead) 6, SQL (meet) D1 D2 D4 = 3: fit 1/2.
    Won in Q1: D1, D5 (6,000); lost in Q1: D2, D3. Deal length: D1 from its first interaction
    2025-12-28 to 01-20 = 23 days, D5 (no interaction) from its opening 2025-12-01 to 03-01 =
    90 days: mean and median 56.5.
    """
    with crm.session(readonly=True) as s:
        result = s.report("funnel", period="2026-Q1", pipeline="quick")
    by = stages(result)
    assert list(by) == ["lead", "meet", "proposal", "contract"]
    figures = {
        name: (
            row["entered"],
            row["amount"],
            row["moved_on"],
            row["lost"],
            row["in_stage"],
            row["stalled"],
            row["left"],
            row["mean_days"],
            row["median_days"],
        )
        for name, row in by.items()
    }
    assert figures == {
        "lead": (6, Decimal("16700.00"), 3, 1, 2, 1, 4, 3.25, 3.0),
        "meet": (3, Decimal("7000.00"), 2, 0, 1, 1, 3, 17.0, 10.0),
        "proposal": (3, Decimal("8000.00"), 2, 1, 0, 0, 3, 16.67, 12.0),
        "contract": (2, Decimal("6000.00"), 2, 0, 0, 0, 2, 9.5, 9.5),
    }
    assert [row["conversion"] for row in result.rows] == [0.5, 2 / 3, 2 / 3, 1.0]
    assert [row["lost_reason_counts"] for row in result.rows] == [
        {"competitor": 1},
        {},
        {"price": 1},
        {},
    ]
    assert result.column("lost_reasons") == ["competitor 1", "", "price 1", ""]
    summary = result.summary
    assert summary["pipeline"] == "quick"
    assert (summary["entered"], summary["won"], summary["win_rate"]) == (6, 1, 1 / 6)
    assert summary["proposal_stage"] == "proposal"
    assert (summary["reached_proposal"], summary["won_after_proposal"]) == (2, 1)
    assert summary["close_rate"] == 0.5
    assert (summary["mql"], summary["sql"], summary["fit_rate"]) == (6, 3, 0.5)
    assert (summary["won_in_period"], summary["lost_in_period"]) == (2, 2)
    assert summary["won_amount_in_period"] == Decimal("6000.00")
    assert summary["deal_length_deals"] == 2
    assert summary["deal_length_mean_days"] == 56.5
    assert summary["deal_length_median_days"] == 56.5


def test_a_shorter_period_follows_its_own_cohort(crm, base):
    """2026-02: lead entered D3 D4 = 2, moved on D4, lost D3 (competitor); in lead at 03-01:
    none (D6, D7 come later), D5's contract entry 02-20 is the only one there.

    Left lead in February: D3 (4 days), D4 (2): mean 3, median 3. Meet at 03-01: D4, since
    02-12 (17 days > 10): stalled. Nobody that entered lead in February was won: win rate 0.
    Won in February: none, so no deal length.
    """
    with crm.session(readonly=True) as s:
        result = s.report("funnel", period="2026-02", pipeline="quick")
    by = stages(result)
    lead = by["lead"]
    assert (lead["entered"], lead["moved_on"], lead["lost"], lead["in_stage"]) == (2, 1, 1, 0)
    assert (lead["mean_days"], lead["median_days"]) == (3.0, 3.0)
    assert (by["meet"]["in_stage"], by["meet"]["stalled"]) == (1, 1)
    assert (by["contract"]["entered"], by["contract"]["in_stage"]) == (1, 1)
    assert by["contract"]["moved_on"] == 0 and by["contract"]["conversion"] == 0.0
    assert result.summary["win_rate"] == 0.0
    assert result.summary["deal_length_deals"] == 0
    assert result.summary["deal_length_median_days"] is None


def test_filters_user_team_segment_and_pipeline(crm, base):
    """anna (team north, segment retail): D1 D2 D3; boris (south, corp): D4-D7."""
    with crm.session(readonly=True) as s:
        anna = s.report("funnel", period="2026-Q1", pipeline="quick", user="anna")
        north = s.report("funnel", period="2026-Q1", pipeline="quick", team="north")
        south = s.report("funnel", period="2026-Q1", pipeline="quick", team="south")
        retail = s.report("funnel", period="2026-Q1", pipeline="quick", segment="retail")
        corp = s.report("funnel", period="2026-Q1", pipeline="quick", segment="corp")
        b2b = s.report("funnel", period="2026-Q1", pipeline="b2b")
        default = s.report("funnel", period="2026-Q1")
    assert anna.column("entered") == north.column("entered") == [3, 2, 2, 1]
    assert anna.summary["win_rate"] == 1 / 3 and anna.summary["close_rate"] == 0.5
    assert south.column("entered") == [3, 1, 1, 1]  # D4 D6 D7; D4; D5; D5
    assert south.summary["entered"] == 3 and south.summary["won"] == 0
    assert south.summary["won_in_period"] == 1  # D5, opened in 2025
    assert retail.column("entered") == [2, 2, 2, 1]
    assert corp.column("entered") == [4, 1, 1, 1]
    assert b2b.summary["pipeline"] == "b2b"
    assert b2b.column("entered") == [1, 0, 0, 0, 0]
    assert b2b.rows[0]["amount"] == Decimal("99.00")
    assert default.summary["pipeline"] == next(
        p.name for p in crm.pipelines.values() if p.entity == "deal"
    )


def test_a_manager_sees_only_their_deals(crm, base):
    with crm.session(as_user="anna", readonly=True) as s:
        mine = s.report("funnel", period="2026-Q1", pipeline="quick")
    with crm.session(readonly=True) as s:
        filtered = s.report("funnel", period="2026-Q1", pipeline="quick", user="anna")
    assert mine.rows == filtered.rows
    assert mine.summary == filtered.summary
    assert mine.column("entered") == [3, 2, 2, 1]


def test_an_empty_period_gives_zeros_not_errors(crm, base):
    with crm.session(readonly=True) as s:
        result = s.report("funnel", period="2024", pipeline="quick")
    assert result.column("entered") == [0, 0, 0, 0]
    assert result.column("conversion") == [None] * 4
    assert result.summary["win_rate"] is None and result.summary["close_rate"] is None


def test_the_cli_prints_table_json_and_csv(crm, base, invoke):
    table = invoke("report", "funnel", "--period", "2026-Q1", "--pipeline", "quick")
    assert table.exit_code == 0, table
    for text in (
        "Sales funnel, 2026-Q1",
        "│ Lead │ 6 ",
        "win rate: 0.17",
        "close rate: 0.50",
        "fit rate: 0.50",
        "deal length median days: 56.50",
    ):
        assert text in table.output, table.output
    as_json = invoke("report", "funnel", "--period", "2026-Q1", "--pipeline", "quick", json=True)
    assert as_json.exit_code == 0, as_json
    assert as_json.json["report"] == "funnel"
    assert [r["entered"] for r in as_json.json["rows"]] == [6, 3, 3, 2]
    assert as_json.json["summary"]["fit_rate"] == 0.5
    csv = invoke(
        "report", "funnel", "--period", "2026-Q1", "--pipeline", "quick", "--format", "csv"
    )
    lines = csv.output.splitlines()
    assert lines[0] == (
        "title,entered,amount,moved_on,conversion,lost,lost_reasons,in_stage,stalled,"
        "mean_days,median_days"
    )
    assert lines[1] == "Lead,6,16700.00,3,0.5,1,competitor 1,2,1,3.25,3.0"
    anna = invoke("report", "funnel", "--period", "2026-Q1", "--pipeline", "quick", as_user="anna")
    assert anna.exit_code == 0 and "win rate: 0.33" in anna.output  # D1 of D1 D2 D3
    bad = invoke("report", "funnel", "--pipeline", "nope")
    assert bad.exit_code == 2


def test_the_chart_is_a_funnel_in_png_and_svg(crm, base, invoke, tmp_path):
    png, svg = tmp_path / "funnel.png", tmp_path / "funnel.svg"
    args = ("report", "funnel", "--period", "2026-Q1", "--pipeline", "quick")
    drawn = invoke(*args, "--chart", str(png))
    assert drawn.exit_code == 0, drawn
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert invoke(*args, "--chart", str(svg)).exit_code == 0
    text = svg.read_text("utf-8")
    assert "<svg" in text and "Funnel: Quick sales, 2026-Q1" in text
    assert "6 deals" in text and "50% moved on" in text
    with crm.session(readonly=True) as s:
        empty = s.report("funnel", period="2024", pipeline="quick")
    crm.report("funnel").draw(empty, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_the_docs_show_what_the_command_prints(crm, base, invoke, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("COLUMNS", "200")
    page = Path(__file__).resolve().parents[1] / "docs" / "analytics" / "funnel.rst"
    text = page.read_text("utf-8")
    command = "   $ crmkit report funnel --period 2026-Q1 --pipeline quick\n"
    shown = text[text.index(command) + len(command) :].split("\n\n")[0]
    printed = invoke("report", "funnel", "--period", "2026-Q1", "--pipeline", "quick")
    expected = [line.rstrip() for line in printed.output.rstrip("\n").splitlines()]
    assert [line[3:].rstrip() for line in shown.splitlines()] == expected


class Skippy:
    @hookimpl
    def crmkit_pipelines(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "skippy",
                "allow_skip": True,
                "stages": [
                    {"name": "s1", "marks": ["mql"]},
                    {"name": "s2", "marks": ["sql"]},
                    {"name": "s3", "marks": ["sql"]},
                    {"name": "s4", "marks": ["proposal"]},
                ],
            }
        ]


def test_a_pipeline_that_skips_stages(crm, register_plugin):
    """allow_skip: X s1 -> s3 -> s4 -> won; Y s1 -> won; Z s1 -> s2 -> s3 -> lost.

    Cohort 3, won X Y: win rate 2/3. Reached the proposal stage s4: X, won: close rate 1/1
    (Y skipped it). MQL (s1) 3; SQL (s2 or s3, each deal once) X Z: fit rate 2/3. s1: entered 3,
    all moved on (Y to won); s3: X moved on, Z lost (reason "gone").
    """
    register_plugin(Skippy())
    with crm.session() as s:
        client = s.clients.create("Skipper").id
        ids = [s.deals.open(client, pipeline="skippy", at=at(1, 1)).id for _ in range(3)]
        x, y, z = ids
        for stage, day in (("s3", 2), ("s4", 3), ("won", 4)):
            s.deals.move(x, stage, at=at(1, day))
        s.deals.win(y, at=at(1, 2))
        s.deals.move(z, "s2", at=at(1, 2))
        s.deals.move(z, "s3", at=at(1, 3))
        s.deals.lose(z, "gone", at=at(1, 4))
    with crm.session(readonly=True) as s:
        result = s.report("funnel", period="2026-Q1", pipeline="skippy")
    assert result.column("entered") == [3, 1, 2, 1]
    assert result.column("moved_on") == [3, 1, 1, 1]
    assert result.column("lost_reasons") == ["", "", "gone 1", ""]
    summary = result.summary
    assert (summary["entered"], summary["won"], summary["win_rate"]) == (3, 2, 2 / 3)
    assert (summary["reached_proposal"], summary["won_after_proposal"]) == (1, 1)
    assert summary["close_rate"] == 1.0
    assert (summary["mql"], summary["sql"], summary["fit_rate"]) == (3, 2, 2 / 3)
