"""The ``reference`` report: the test, the diagnosis's rules, and a narrow neck end to end."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from crmkit import hookimpl
from crmkit.plugins.analytics.reference import below, diagnose


def test_the_one_sided_test_by_hand():
    # small cells: Fisher's exact test. 0 of 2 against 2 of 2: C(2,0) C(2,2) / C(4,2) = 1/6
    assert below(0, 2, 2, 2) == pytest.approx(1 / 6)
    # large cells: the pooled z-test. 30/100 against 50/100: pooled 0.4,
    # se = sqrt(0.4 * 0.6 * (1/100 + 1/100)), z = -0.2 / se = -2.8868, P(Z <= z) = 0.00195
    se = math.sqrt(0.4 * 0.6 * 0.02)
    assert -0.2 / se == pytest.approx(-2.8868, abs=1e-4)
    assert below(30, 100, 50, 100) == pytest.approx(0.001946, abs=1e-5)
    assert below(50, 100, 30, 100) > 0.99  # higher than the reference: no evidence it is lower
    assert below(0, 0, 0, 0) == 1.0 and below(5, 5, 9, 9) == 1.0  # nothing to compare


def row(stage, entered, moved, in_stage, conversion, ref_conversion, p_value):
    return {
        "stage": stage,
        "title": stage.title(),
        "entered": entered,
        "moved_on": moved,
        "in_stage": in_stage,
        "conversion": conversion,
        "ref_entered": 100,
        "ref_conversion": ref_conversion,
        "p_value": p_value,
        "finding": "",
    }


def test_the_diagnosis_names_each_shape():
    rows = [
        row("first", 100, 70, 10, 0.70, 0.72, 0.40),  # nothing: not significant
        row("middle", 70, 20, 40, 0.29, 0.45, 0.001),  # leak, pipe (40 of 70 stay), waist
        row("proposal", 20, 9, 2, 0.45, 0.60, 0.03),  # a leak at the proposal: narrow neck
        row("last", 8, 7, 1, 0.875, 0.85, 0.70),
    ]
    found = diagnose(rows, proposal="proposal", alpha=0.05, min_drop=5, waist_ratio=0.75)
    assert [f for f in (r["finding"] for r in rows)] == [
        "",
        "leak, pipe, waist",
        "narrow neck",
        "",
    ]
    texts = dict(found[:2])
    assert texts["middle"].startswith("Leak at 'Middle': 29% of the deals move on, against 45%")
    assert "16.0 points lower; p = 0.001" in texts["middle"]
    assert texts["proposal"].startswith("Narrow neck at 'Proposal'")
    assert any(t.startswith("Pipe at 'Middle': 40 of the 70 deals") for _, t in found)
    # middle converts 29% against (70% + 45%) / 2 = 57.5% around it: half of it, under 0.75
    assert any(
        t.startswith("Waist at 'Middle': it converts 29%, against 57%") and "(50% of it)" in t
        for _, t in found
    )
    quiet = diagnose(
        [dict(r, finding="") for r in rows],
        proposal=None,
        alpha=0.0001,
        min_drop=50,
        waist_ratio=0.1,
    )
    assert [t for _, t in quiet if not t.startswith("Pipe")] == []


class Ref:
    @hookimpl
    def crmkit_pipelines(self):
        return [
            {
                "name": "ref",
                "stages": [{"name": "talk"}, {"name": "offer", "marks": ["proposal"]}],
            }
        ]


def test_a_narrow_neck_end_to_end(crm, register_plugin):
    """Q1: six deals go talk -> offer -> won. Q2: six go talk -> offer -> lost.

    At ``offer``: 0 of 6 move on against 6 of 6 in the reference: Fisher's
    P(X <= 0) = C(6,0) C(6,6) / C(12,6) = 1/924 = 0.0011: a narrow neck.
    """
    register_plugin(Ref())
    utc = dt.UTC
    with crm.session() as s:
        client = s.clients.create("C", created_at=dt.datetime(2025, 12, 1, tzinfo=utc))
        for month, won in ((1, True), (4, False)):
            for n in range(6):
                t = dt.datetime(2026, month, 2 + n, tzinfo=utc)
                deal = s.deals.open(client.id, pipeline="ref", amount=100, at=t)
                s.deals.move(deal.id, "offer", at=t + dt.timedelta(days=3))
                if won:
                    s.deals.win(deal.id, at=t + dt.timedelta(days=10))
                else:
                    s.deals.lose(deal.id, "price", at=t + dt.timedelta(days=10))
    with crm.session(readonly=True) as s:
        result = s.report("reference", pipeline="ref", period="2026-Q2", reference="2026-Q1")
    offer = next(r for r in result.rows if r["stage"] == "offer")
    assert (offer["entered"], offer["conversion"], offer["ref_conversion"]) == (6, 0.0, 1.0)
    assert offer["p_value"] == pytest.approx(1 / 924, abs=1e-4)
    assert offer["finding"] == "narrow neck"
    assert result.notes[0].startswith("Narrow neck at 'Offer': 0% of the deals move on")
    assert result.summary["reference_period"] == "2026-Q1"
    talk = next(r for r in result.rows if r["stage"] == "talk")
    assert talk["conversion"] == talk["ref_conversion"] == 1.0 and talk["finding"] == ""


def test_the_default_reference_is_the_months_before(crm, tmp_path):
    from click.testing import CliRunner

    from crmkit.cli import build_cli

    with crm.session(readonly=True) as s:
        result = s.report("reference", period="2026-Q2", reference_months=6)
    assert result.summary["reference_period"] == "2025-10-01..2026-03-31"
    cli = build_cli(crm.plugins)
    out = tmp_path / "ref.png"
    done = CliRunner().invoke(
        cli,
        [
            "-C",
            str(crm.config.root),
            "report",
            "reference",
            "--period",
            "2026-Q2",
            "--chart",
            str(out),
        ],
        obj=crm.plugins,
    )
    assert done.exit_code == 0, done.output
    assert "No leak" in done.output and out.read_bytes()[:4] == b"\x89PNG"
