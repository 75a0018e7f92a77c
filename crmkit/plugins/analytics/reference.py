"""The ``reference`` report: the funnel of a period against a reference funnel, and a diagnosis.

The reference funnel is the :mod:`funnel <crmkit.plugins.analytics.funnel>`
of a reference period (by default the ``reference_months`` before the
period), computed exactly like the current one. Per stage: both
conversions and both median times in stage, and their differences. The
diagnosis then names where the funnel leaks:

* **leak**: a stage whose conversion is significantly below the reference:
  a one-sided test of two proportions (Fisher's exact test when a cell
  expects fewer than 5 deals, the pooled z-test otherwise) with p < ``alpha``
  (default 0.05), and a drop of at least ``min_drop`` points (default 5);
* **narrow neck**: such a leak at the proposal stage;
* **pipe**: a stage where deals pile up: more than half of those that
  entered it are still in it at the period's end, and more are in it than
  moved on;
* **waist**: a middle stage (neither the first nor the last) whose
  conversion is under ``waist_ratio`` (default 0.75) times the mean
  conversion of the stages around it.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from crmkit.core.reports import Column, Period, Report, ReportQuery, ReportResult, _add_months

from . import funnel

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.store import Session

OPTIONS: dict[str, Any] = {
    "reference": {
        "type": "string",
        "description": "The reference period (default: the reference_months before the period).",
    },
    "reference_months": {
        "type": "integer",
        "minimum": 1,
        "maximum": 120,
        "default": 12,
        "description": "How many months before the period the reference spans, by default.",
    },
    "alpha": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 0.5,
        "default": 0.05,
        "description": "Significance level of the test that a conversion is below the reference.",
    },
    "min_drop": {
        "type": "number",
        "minimum": 0,
        "maximum": 100,
        "default": 5,
        "description": "Least drop in conversion, in percentage points, worth naming.",
    },
    "waist_ratio": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 1,
        "default": 0.75,
        "description": "A middle stage converting under this share of its neighbours' is a waist.",
    },
}
COLUMNS = [
    Column("title", "Stage"),
    Column("entered", "Entered", "integer"),
    Column("conversion", "Conversion", "percent"),
    Column("ref_entered", "Reference entered", "integer"),
    Column("ref_conversion", "Reference conversion", "percent"),
    Column("difference", "Difference (points)", "number"),
    Column("p_value", "p", "number"),
    Column("median_days", "Median days", "number"),
    Column("ref_median_days", "Reference median days", "number"),
    Column("finding", "Finding"),
]


def reports() -> list[Report]:
    return [
        Report(
            "reference",
            "Funnel against its reference, with a diagnosis",
            run,
            description=(
                "Per stage: conversion and time in stage of the period against a reference "
                "period, the difference, a test of significance, and where the funnel leaks "
                "(a leak, a narrow neck at the proposal, a pipe, a waist)."
            ),
            filters=("period", "pipeline", "team", "user", "segment"),
            options=OPTIONS,
            default_period="last-3-months",
            chart=chart,
        )
    ]


def reference_period(query: ReportQuery, session: Session) -> Period:
    """The reference period: the option, or the ``reference_months`` before the period."""
    from crmkit.core.reports import parse_period

    assert query.period is not None
    given = query.options.get("reference")
    if given:
        return parse_period(given, field="reference")
    months = query.options["reference_months"]
    end = query.period.start
    if end.day == 1:
        start = _add_months(end, -months)
    else:  # a period that starts mid-month: as many average months of days
        start = end - dt.timedelta(days=round(30.4375 * months))
    last = end - dt.timedelta(days=1)
    return Period(start, end, f"{start}..{last}")


def run(session: Session, query: ReportQuery) -> ReportResult:
    options = query.options
    ref_period = reference_period(query, session)
    current = funnel.funnel(session, query)
    reference = funnel.funnel(session, attrs.evolve(query, period=ref_period))
    ref_rows = {r["stage"]: r for r in reference.rows}
    rows: list[dict[str, Any]] = []
    for row in current.rows:
        ref = ref_rows[row["stage"]]
        p, q = row["conversion"], ref["conversion"]
        p_value = None
        if p is not None and q is not None:
            p_value = below(row["moved_on"], row["entered"], ref["moved_on"], ref["entered"])
        rows.append(
            {
                "stage": row["stage"],
                "title": row["title"],
                "entered": row["entered"],
                "moved_on": row["moved_on"],
                "in_stage": row["in_stage"],
                "conversion": p,
                "ref_entered": ref["entered"],
                "ref_conversion": q,
                "difference": None if p is None or q is None else round((p - q) * 100, 1),
                "p_value": None if p_value is None else round(p_value, 4),
                "median_days": row["median_days"],
                "ref_median_days": ref["median_days"],
                "finding": "",
            }
        )
    findings = diagnose(
        rows,
        proposal=current.summary.get("proposal_stage"),
        alpha=options["alpha"],
        min_drop=options["min_drop"],
        waist_ratio=options["waist_ratio"],
    )
    summary = {
        "reference_period": ref_period.label,
        "win_rate": current.summary.get("win_rate"),
        "reference_win_rate": reference.summary.get("win_rate"),
        "findings": len(findings),
    }
    notes = [text for _, text in findings] or [
        "No leak: no stage converts significantly worse than in the reference."
    ]
    notes.append(
        f"Test: one-sided, H0: conversion >= reference; Fisher's exact test when a cell "
        f"expects fewer than 5 deals, else the pooled z-test; a leak needs p < {options['alpha']} "
        f"and a drop of at least {options['min_drop']} points."
    )
    return ReportResult(
        "reference", COLUMNS, rows, summary=summary, notes=notes, period=current.period
    )


def below(x1: int, n1: int, x0: int, n0: int) -> float:
    """One-sided p-value that the first proportion (x1 / n1) is below the second (x0 / n0)."""
    total, moved = n1 + n0, x1 + x0
    if total == 0 or moved in (0, total):
        return 1.0
    expected = min(
        n1 * moved / total,
        n1 * (total - moved) / total,
        n0 * moved / total,
        n0 * (total - moved) / total,
    )
    if expected < 5:
        return _fisher_lower(x1, n1, moved, total)
    pooled = moved / total
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    z = (x1 / n1 - x0 / n0) / se
    return 0.5 * math.erfc(-z / math.sqrt(2))  # P(Z <= z)


def _fisher_lower(x1: int, n1: int, moved: int, total: int) -> float:
    """P(X <= x1) for X hypergeometric: ``n1`` drawn from ``total`` holding ``moved`` successes."""
    low = max(0, moved - (total - n1))
    denominator = math.comb(total, n1)
    found = sum(math.comb(moved, k) * math.comb(total - moved, n1 - k) for k in range(low, x1 + 1))
    return min(1.0, found / denominator)


def diagnose(
    rows: list[dict[str, Any]],
    *,
    proposal: str | None,
    alpha: float,
    min_drop: float,
    waist_ratio: float,
) -> list[tuple[str, str]]:
    """The findings, as (stage, text); each row's ``finding`` names its own."""
    found: list[tuple[str, str]] = []

    def note(row: dict[str, Any], kind: str, text: str) -> None:
        row["finding"] = ", ".join(filter(None, [row["finding"], kind]))
        found.append((row["stage"], text))

    for row in rows:
        p, q, pv = row["conversion"], row["ref_conversion"], row["p_value"]
        if p is None or q is None or pv is None:
            continue
        drop = (q - p) * 100
        if pv < alpha and drop >= min_drop:
            kind = "narrow neck" if row["stage"] == proposal else "leak"
            lead = "Narrow neck at" if kind == "narrow neck" else "Leak at"
            note(
                row,
                kind,
                f"{lead} {row['title']!r}: {p:.0%} of the deals move on, against {q:.0%} in "
                f"the reference ({drop:.1f} points lower; p = {pv:.3f}, "
                f"{row['entered']} deals against {row['ref_entered']}).",
            )
    for row in rows:
        if (
            row["entered"]
            and row["in_stage"] * 2 > row["entered"]
            and (row["in_stage"] > row["moved_on"])
        ):
            note(
                row,
                "pipe",
                f"Pipe at {row['title']!r}: {row['in_stage']} of the {row['entered']} deals "
                f"that entered are still there ({row['in_stage'] / row['entered']:.0%}), "
                f"and only {row['moved_on']} moved on.",
            )
    for i in range(1, len(rows) - 1):
        row, before, after = rows[i], rows[i - 1], rows[i + 1]
        around = [r["conversion"] for r in (before, after) if r["conversion"] is not None]
        if row["conversion"] is None or not around:
            continue
        mean = sum(around) / len(around)
        if mean and row["conversion"] < waist_ratio * mean:
            note(
                row,
                "waist",
                f"Waist at {row['title']!r}: it converts {row['conversion']:.0%}, against "
                f"{mean:.0%} for the stages around it ({row['conversion'] / mean:.0%} of it).",
            )
    return found


def chart(result: ReportResult, path: Path) -> None:
    """Both funnels as centred bars of conversion, the reference as an outline."""
    from crmkit.core import charts

    rows = result.rows
    fig, ax = charts.figure(10, max(3.5, 0.8 * len(rows) + 1.5))
    ys = list(range(len(rows)))[::-1]
    current = [(r["conversion"] or 0) * 100 for r in rows]
    reference = [(r["ref_conversion"] or 0) * 100 for r in rows]
    ax.barh(
        ys,
        current,
        left=[-v / 2 for v in current],
        color=charts.COLORS[0],
        height=0.6,
        label="this period",
    )
    ax.barh(
        ys,
        reference,
        left=[-v / 2 for v in reference],
        fill=False,
        edgecolor=charts.COLORS[1],
        linewidth=2,
        height=0.8,
        label="reference",
    )
    for y, row, value in zip(ys, rows, current, strict=True):
        diff = row["difference"]
        text = f"{value:.0f}%" + (f" ({diff:+.0f})" if diff is not None else "")
        if row["finding"]:
            text += f"  {row['finding']}"
        ax.text(
            max(value, reference[rows.index(row)]) / 2 + 2,
            y,
            text,
            va="center",
            color=charts.COLORS[3] if row["finding"] else "#222222",
        )
    ax.set_yticks(ys, [r["title"] for r in rows])
    ax.set_xticks([])
    ax.spines["bottom"].set_visible(False)
    ax.spines["left"].set_visible(False)
    ax.set_xlim(-60, 110)
    period = result.period.label if result.period else ""
    ref = result.summary.get("reference_period", "")
    ax.set_title(f"Conversion by stage, {period} against {ref}")
    ax.legend(loc="lower right", frameon=False)
    charts.save(fig, path)


__all__ = ["below", "diagnose", "reports", "run"]
