"""The ``audit`` report: the client base month by month (period 2026-Q1, dormant after 30 days).

=======  ===========  ======================================  ================
client   owner        what happens                            in the base at
=======  ===========  ======================================  ================
A        anna         created 2025-11-01; calls 2025-12-20    Jan 1; not Feb 1
                      and 2026-03-10                          or Mar 1; Apr 1
B        anna         created 2026-01-15; a deal opened        Feb 1, Mar 1,
                      2026-01-20, still open                   Apr 1
C        boris        created 2026-02-10; lost 2026-02-20     never at a month
                                                              start
D        admin        created 2025-06-01; nothing since       never
E        boris        created 2025-12-15; nothing since       Jan 1 only
=======  ===========  ======================================  ================

January: base 2 (A, E) -> 1 (B): new 1 (B), lost 2 (A, E dormant), net -1.
February: 1 (B) -> 1 (B): new 1 (C), lost 1 (C, lifecycle), net 0.
March: 1 (B) -> 2 (A, B): returned 1 (A, called again), net +1.
The quarter: 2 -> 2: new 2, lost 2 (E, C: A returned), returned 0, net 0.
"""

from __future__ import annotations

import datetime as dt

import pytest

UTC = dt.UTC


def at(year: int, month: int, day: int) -> dt.datetime:
    return dt.datetime(year, month, day, 12, tzinfo=UTC)


@pytest.fixture
def data(crm, quick_pipeline):
    with crm.session() as s:
        s.users.add("anna", role="manager")
        s.users.add("boris", role="manager")
        a = s.clients.create("A", owner="anna", created_at=at(2025, 11, 1))
        b = s.clients.create("B", owner="anna", created_at=at(2026, 1, 15))
        c = s.clients.create("C", owner="boris", created_at=at(2026, 2, 10))
        s.clients.create("D", created_at=at(2025, 6, 1))
        s.clients.create("E", owner="boris", created_at=at(2025, 12, 15))
        for when in (at(2025, 12, 20), at(2026, 3, 10)):
            s.interactions.log(
                a.id,
                "call",
                topic="first_contact",
                outcome="no_answer",
                direction="outbound",
                at=when,
            )
        s.deals.open(b.id, pipeline="quick", owner="anna", at=at(2026, 1, 20))
        s.clients.move(c.id, "lost", reason="no_need", at=at(2026, 2, 20))
    return crm


def figures(row):
    return tuple(row[k] for k in ("base_start", "new", "lost", "returned", "net", "base_end"))


def test_month_by_month_by_hand(data):
    with data.session(readonly=True) as s:
        result = s.report("audit", period="2026-Q1", dormant_days=30)
    assert [r["month"] for r in result.rows] == ["2026-01", "2026-02", "2026-03"]
    assert [figures(r) for r in result.rows] == [
        (2, 1, 2, 0, -1, 1),
        (1, 1, 1, 0, 0, 1),
        (1, 0, 0, 1, 1, 2),
    ]
    assert figures(result.summary) == (2, 2, 2, 0, 0, 2)
    assert "30 days" in result.notes[0]


def test_per_owner_and_segment_over_the_period(data):
    with data.session(readonly=True) as s:
        owners = s.report("audit", period="2026-Q1", dormant_days=30, by="owner")
        segments = s.report("audit", period="2026-Q1", dormant_days=30, by="segment")
    assert {r["owner"]: figures(r) for r in owners.rows} == {
        "anna": (1, 1, 0, 0, 1, 2),
        "boris": (1, 1, 2, 0, -1, 0),
        "admin": (0, 0, 0, 0, 0, 0),
    }
    assert [r["segment"] for r in segments.rows] == ["(none)"]
    assert figures(segments.rows[0]) == (2, 2, 2, 0, 0, 2)


def test_dormancy_is_an_option_and_a_manager_sees_their_own(data):
    with data.session(readonly=True) as s:
        patient = s.report("audit", period="2026-Q1", dormant_days=365)
    # nobody is dormant after a year: A and E stay; D (created 2025-06-01) is in the base too
    assert figures(patient.rows[0]) == (3, 1, 0, 0, 1, 4)
    with data.session(as_user="anna", readonly=True) as s:
        mine = s.report("audit", period="2026-Q1", dormant_days=30)
    assert [figures(r) for r in mine.rows] == [
        (1, 1, 1, 0, 0, 1),
        (1, 0, 0, 0, 0, 1),
        (1, 0, 0, 1, 1, 2),
    ]


def test_cli_and_chart(data, tmp_path):
    from click.testing import CliRunner

    from crmkit.cli import build_cli

    cli = build_cli(data.plugins)
    target = tmp_path / "audit.png"
    result = CliRunner().invoke(
        cli,
        [
            "-C",
            str(data.config.root),
            "report",
            "audit",
            "--period",
            "2026-Q1",
            "--dormant-days",
            "30",
            "--format",
            "csv",
            "--chart",
            str(target),
        ],
        obj=data.plugins,
    )
    assert result.exit_code == 0, result.output
    assert "2026-01,2,1,2,0,-1,1" in result.output
    assert target.read_bytes()[:4] == b"\x89PNG"
