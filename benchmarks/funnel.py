"""The funnel report on a large base, against hand-written SQL of the same per-stage figures.

    python benchmarks/funnel.py [--deals 1000000] [--repeat 3]
                                [--database-url URL | --postgres] [--keep DIR] [--lead] [--check]

Makes a deployment (``CRM.create``) with 20 managers, 10,000 clients and N
deals of the ``b2b`` pipeline opened over 2025 and 2026, each with its stage
history (about 4 stage changes a deal: the opening, moves forward, a win or
a loss with a reason) written as the core writes it, stays closed (see
``docs/pipelines.rst``, "Stage history"), inserted with SQLAlchemy Core
``executemany`` in batches, then ``ANALYZE``. Then measures, in the same
run, over the year 2026:

* **report**: ``s.report("funnel", period="2026", pipeline="b2b")`` as the
  admin: every figure of the table, the cohort rates and the deal length;
* **hand-written**: ``text()`` statements computing the same per-stage
  figures (entered, money, moved on, lost with reasons, in stage, stalled,
  left, mean and median seconds in stage) as one writes them by hand on the
  same stays and indexes, on the same connection;
* with ``--lead``, also the figures from the bare history, pairing each
  change with the next with ``LEAD`` (what the report did before the stays).

Each is run ``--repeat`` times after one warm-up run; the figures are the
medians, and the report's figures must equal the hand-written ones. Targets:
report / hand-written <= 1.5, and the report under 2 seconds on SQLite.
``--check`` exits with 1 when one is missed. ``--keep DIR`` keeps the
deployment (SQLite), and a second run with the same ``--keep`` measures it
again without building it. ``--postgres`` starts a throwaway PostgreSQL
server (Debian's ``postgresql``) for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import add_deployment_options, deployment
from sqlalchemy import insert, text

from crmkit.core.app import CRM
from crmkit.core.schema import whole_seconds

RATIO_TARGET = 1.5
SECONDS_TARGET = 2.0
MANAGERS = 20
CLIENTS = 10_000
STAGES = ["qualification", "presentation", "proposal", "contract_invoice", "payment_shipment"]
#: the chance to move on from each stage (else the deal is lost there, or stays when recent)
MOVE_ON = [0.8, 0.6, 0.7, 0.85, 0.95]
REASONS = ["price", "competitor", "no_budget", "no_need", "no_response", "timing"]
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 12, 31, tzinfo=dt.UTC)


def build(root: Path, url: str | None, deals: int, batch: int) -> CRM:
    """The deployment, its users, clients and ``deals`` deals with their stage changes."""
    started = time.perf_counter()
    crm = CRM.create(root, database_url=url, entry_points=False)
    with crm.session() as s:
        s.teams.add("sales")
        managers = [
            s.users.add(f"m{m:02d}", role="manager", team="sales").id for m in range(MANAGERS)
        ]
        admin = s.user.id
    tables = crm.metadata.tables
    rng = random.Random(7)
    span = (NOW - START).total_seconds()
    changes_made = 0
    with crm.engine.begin() as conn:
        conn.execute(
            insert(tables["clients"]),
            [
                {
                    "kind": "company",
                    "name": f"Client {i}",
                    "requisites": {},
                    "params": {},
                    "owner_id": managers[i % MANAGERS],
                    "created_at": START,
                    "updated_at": START,
                    "stage": "lead",
                }
                for i in range(CLIENTS)
            ],
        )
        for first in range(1, deals + 1, batch):
            deal_rows, change_rows = [], []
            for deal_id in range(first, min(first + batch, deals + 1)):
                opened = START + dt.timedelta(seconds=rng.random() * span)
                at, stage, status, reason = opened, STAGES[0], "open", None
                change_rows.append((deal_id, None, STAGES[0], opened))
                for i, name in enumerate(STAGES):
                    at = at + dt.timedelta(hours=rng.uniform(12, 24 * 20))
                    if at >= NOW:
                        break
                    if rng.random() < MOVE_ON[i]:
                        target = STAGES[i + 1] if i + 1 < len(STAGES) else "won"
                    else:
                        target, reason = "lost", rng.choice(REASONS)
                    change_rows.append((deal_id, name, target, at))
                    stage = target
                    if target in ("won", "lost"):
                        status = target
                        break
                deal_rows.append(
                    {
                        "id": deal_id,
                        "client_id": 1 + deal_id % CLIENTS,
                        "pipeline": "b2b",
                        "stage": stage,
                        "status": status,
                        "title": f"Deal {deal_id}",
                        "amount": 1000 * (1 + deal_id % 500),
                        "currency": "RUB",
                        "owner_id": managers[deal_id % MANAGERS],
                        "lost_reason": reason,
                        "opened_at": opened,
                        "stage_entered_at": change_rows[-1][3],
                        "closed_at": change_rows[-1][3] if status != "open" else None,
                        "created_by": admin,
                    }
                )
            conn.execute(insert(tables["deals"]), deal_rows)
            amounts = {
                row["id"]: (row["amount"], row["opened_at"], row["lost_reason"])
                for row in deal_rows
            }
            stays = []
            for (d, f, t, a), after in zip(change_rows, [*change_rows[1:], None], strict=True):
                closed = after is not None and after[0] == d  # the deal's next change
                stays.append(
                    {
                        "entity": "deal",
                        "entity_id": d,
                        "pipeline": "b2b",
                        "from_stage": f,
                        "to_stage": t,
                        "at": a,
                        "user_id": admin,
                        "cause": "opened" if f is None else "manual",
                        "interaction_id": None,
                        "note": None,
                        "left_at": after[3] if closed else None,
                        "next_stage": after[2] if closed else None,
                        "stay_seconds": whole_seconds(a, after[3]) if closed else None,
                        "lost_reason": amounts[d][2] if closed and after[2] == "lost" else None,
                        "deal_amount": amounts[d][0],
                        "deal_opened_at": amounts[d][1],
                    }
                )
            conn.execute(insert(tables["stage_changes"]), stays)
            changes_made += len(change_rows)
            done = min(first + batch - 1, deals)
            print(f"\rinserted {done:,} deals, {changes_made:,} changes", end="", file=sys.stderr)
    print(file=sys.stderr)
    with crm.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    print(f"deployment made in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return crm


def seconds(dialect: str, a: str, b: str) -> str:
    if dialect == "postgresql":
        return f"floor(extract(epoch from {b} - {a}))::int"
    return f"(CAST(strftime('%s', {b}) AS INTEGER) - CAST(strftime('%s', {a}) AS INTEGER))"


STAGE_LIST = ", ".join(f"'{name}'" for name in STAGES)
STALLED = " ".join(f"WHEN '{name}' THEN :cut_{name}" for name in STAGES)  # every stage has days


def hand_written(conn: Any, dialect: str, params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-stage figures as one writes them by hand on the stays (the same indexes)."""
    figures: dict[str, dict[str, Any]] = {name: {} for name in STAGES}
    entered = f"""
      SELECT to_stage AS stage, count(*) AS entered, sum(deal_amount) AS amount,
        sum(CASE WHEN left_at < :end AND next_stage <> 'lost' THEN 1 ELSE 0 END) AS moved
      FROM stage_changes
      WHERE pipeline = 'b2b' AND to_stage IN ({STAGE_LIST}) AND at >= :start AND at < :end
      GROUP BY to_stage"""
    # the lost ones by reason, through the index of losses (the range on `at` kept off it)
    lost = f"""
      SELECT to_stage AS stage, lost_reason, count(*) AS lost
      FROM stage_changes
      WHERE pipeline = 'b2b' AND next_stage = 'lost' AND to_stage IN ({STAGE_LIST})
        AND CASE WHEN at >= :start AND at < :end AND left_at < :end THEN 1 ELSE 0 END = 1
      GROUP BY to_stage, lost_reason"""
    in_stage = f"""
      SELECT to_stage AS stage, count(*) AS in_stage,
        sum(CASE WHEN at < CASE to_stage {STALLED} END THEN 1 ELSE 0 END) AS stalled
      FROM stage_changes
      WHERE pipeline = 'b2b' AND to_stage IN ({STAGE_LIST}) AND at < :end AND {{still}}
      GROUP BY to_stage"""
    median = (
        ", percentile_cont(0.5) WITHIN GROUP (ORDER BY stay_seconds) AS median"
        if dialect == "postgresql"
        else ""
    )
    left = f"""
      SELECT to_stage AS stage, count(*) AS left_n, sum(stay_seconds) AS left_secs{median}
      FROM stage_changes
      WHERE pipeline = 'b2b' AND to_stage IN ({STAGE_LIST}) AND left_at >= :start
        AND left_at < :end
      GROUP BY to_stage"""
    statements = [
        entered,
        lost,
        in_stage.format(still="left_at IS NULL"),
        in_stage.format(still="left_at >= :end"),
        left,
    ]
    for sql in statements:
        for row in conn.execute(bound(sql, params), params):
            acc = figures[row.stage]
            for key, value in row._mapping.items():
                if key == "lost_reason":
                    reasons = acc.setdefault("reasons", {})
                    reasons[value or "(none)"] = row.lost
                elif key != "stage":
                    acc[key] = acc.get(key, 0) + (value or 0)
    if dialect != "postgresql":  # the middle stays, in the order of the stay_seconds index
        middle = """
          SELECT stay_seconds FROM stage_changes
          WHERE pipeline = 'b2b' AND to_stage = :stage
            AND CASE WHEN left_at >= :start AND left_at < :end THEN 1 ELSE 0 END = 1
          ORDER BY stay_seconds LIMIT :limit OFFSET :offset"""
        for name, acc in figures.items():
            n = acc.get("left_n", 0)
            if n:
                args = {**params, "stage": name, "limit": 2 - n % 2, "offset": (n - 1) // 2}
                values = [v for (v,) in conn.execute(bound(middle, params), args)]
                acc["median"] = sum(values) / len(values)
    return figures


def bound(sql: str, params: dict[str, Any]) -> Any:
    """``text(sql)`` with the times bound as crmkit stores them (UTC, on both databases)."""
    from sqlalchemy import bindparam

    from crmkit.core.schema import UTCDateTime

    names = [k for k in params if f":{k}" in sql]
    return text(sql).bindparams(*(bindparam(k, type_=UTCDateTime()) for k in names))


def lead_query(dialect: str) -> str:
    """The same figures from the bare history, pairing changes with ``LEAD`` (``--lead``)."""
    secs = seconds(dialect, "at", "left_at")
    return f"""
    WITH visits AS (
      SELECT c.to_stage AS stage, c.at AS at, d.amount AS amount,
             LEAD(c.at) OVER w AS left_at, LEAD(c.to_stage) OVER w AS next_stage
      FROM stage_changes c JOIN deals d ON d.id = c.entity_id
      WHERE c.entity = 'deal' AND c.pipeline = 'b2b' AND c.at < :end
      WINDOW w AS (PARTITION BY c.entity_id ORDER BY c.at, c.id)
    ), ranked AS (
      SELECT *, {secs} AS secs,
             CASE WHEN left_at >= :start THEN 1 ELSE 0 END AS left_in,
             ROW_NUMBER() OVER (PARTITION BY stage, CASE WHEN left_at >= :start THEN 1 ELSE 0 END
                                ORDER BY {secs}) AS pos,
             COUNT(*) OVER (PARTITION BY stage, CASE WHEN left_at >= :start THEN 1 ELSE 0 END) AS n
      FROM visits
    )
    SELECT stage,
      SUM(CASE WHEN at >= :start THEN 1 ELSE 0 END) AS entered,
      SUM(CASE WHEN at >= :start AND next_stage IS NOT NULL AND next_stage <> 'lost'
          THEN 1 ELSE 0 END) AS moved,
      SUM(CASE WHEN at >= :start AND next_stage = 'lost' THEN 1 ELSE 0 END) AS lost,
      SUM(CASE WHEN left_at IS NULL THEN 1 ELSE 0 END) AS in_stage,
      SUM(CASE WHEN left_at IS NULL AND at < CASE stage {STALLED} END THEN 1 ELSE 0 END)
          AS stalled
    FROM ranked GROUP BY stage
    """


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=20_000)
    add_deployment_options(parser)
    parser.add_argument("--lead", action="store_true", help="also time the query without stays")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        crm = deployment(
            stack, args, "funnel", lambda root, url: build(root, url, args.deals, args.batch)
        )
        return measure(crm, args)
    return 0  # pragma: no cover


def measure(crm: CRM, args: argparse.Namespace) -> int:
    """Time the report and the hand-written SQL; print the figures, the ratio and the targets."""

    with crm.engine.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM stage_changes")).scalar_one()
        deals = conn.execute(text("SELECT count(*) FROM deals")).scalar_one()
    print(f"{deals:,} deals, {count:,} stage changes ({crm.engine.dialect.name})")

    flow = crm.pipeline("b2b")
    period = "2026"
    report_result: dict[str, Any] = {}

    def run_report() -> None:
        with crm.session(readonly=True) as s:
            report_result["r"] = s.report("funnel", period=period, pipeline="b2b")

    from crmkit.core.reports import parse_period

    start, end = parse_period(period).bounds(crm.tz)
    as_of = min(end, dt.datetime.now(dt.UTC))
    params: dict[str, Any] = {"start": start, "end": end}
    for stage in flow.stages:
        params[f"cut_{stage.name}"] = as_of - dt.timedelta(days=stage.days or 0)
    dialect = crm.engine.dialect.name
    hand: dict[str, Any] = {}

    def run_hand() -> None:
        with crm.session(readonly=True) as s:
            hand["r"] = hand_written(s.connection, dialect, params)

    def run_lead() -> None:
        with crm.session(readonly=True) as s:
            s.connection.execute(bound(lead_query(dialect), params), params).all()

    runs = [("report", run_report), ("hand-written", run_hand)]
    if args.lead:
        runs.append(("lead", run_lead))
    timings: dict[str, list[float]] = {name: [] for name, _ in runs}
    run_report()
    run_hand()
    for _ in range(args.repeat):
        for name, fn in runs:
            began = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - began)
    report_s = statistics.median(timings["report"])
    hand_s = statistics.median(timings["hand-written"])

    def days(value: Any) -> float | None:
        return None if value is None else round(float(value) / 86400, 2)

    result = report_result["r"]
    same = all(
        (
            row["entered"],
            row["amount"],
            row["moved_on"],
            row["lost"],
            row["in_stage"],
            row["stalled"],
            row["left"],
            row["median_days"],
            row["lost_reason_counts"],
        )
        == (
            (h := hand["r"][row["stage"]]).get("entered", 0),
            Decimal(h.get("amount", 0)).quantize(Decimal("0.01")),
            h.get("moved", 0),
            h.get("lost", 0),
            h.get("in_stage", 0),
            h.get("stalled", 0),
            h.get("left_n", 0),
            days(h.get("median")),
            h.get("reasons", {}),
        )
        for row in result.rows
    )
    print(f"{'stage':<18}{'entered':>10}{'moved on':>10}{'lost':>9}{'in stage':>10}")
    for row in result.rows:
        print(
            f"{row['stage']:<18}{row['entered']:>10,}{row['moved_on']:>10,}"
            f"{row['lost']:>9,}{row['in_stage']:>10,}"
        )
    print(f"win rate {result.summary['win_rate']:.3f}; the same figures: {same}")
    ratio = report_s / hand_s
    print(f"funnel report:        {report_s:8.3f} s (median of {args.repeat})")
    print(f"hand-written SQL:     {hand_s:8.3f} s")
    print(f"ratio:                {ratio:8.2f} (target <= {RATIO_TARGET})")
    if args.lead:
        lead_s = statistics.median(timings["lead"])
        print(f"LEAD over the history: {lead_s:7.3f} s (the same figures without stays)")
    ok = same and ratio <= RATIO_TARGET
    if crm.engine.dialect.name == "sqlite":
        print(f"report under {SECONDS_TARGET} s: {report_s < SECONDS_TARGET}")
        ok = ok and report_s < SECONDS_TARGET
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
