"""A team's KPIs over a year of a large base, against hand-written SQL of the same aggregates.

    python benchmarks/kpis.py [--interactions 1000000] [--repeat 3] [--batch 50000]
                              [--database-url URL | --postgres] [--keep DIR] [--check]

Makes a deployment (``CRM.create``) with one team ``sales`` of 50 managers
and, scaled on ``--interactions`` N (the defaults for N = 1,000,000):
N / 50 clients owned by the managers (some created in 2026, some lost),
N / 5 deals of the ``b2b`` pipeline (won, lost or open, closed over 2025 and
2026, with their opening and closing stage changes: some imported, some won
straight from the first stage), an invoice for most won deals (issued, paid
or cancelled), N / 20 tasks (some open past their due time, some done late)
and N interactions, nearly all in 2026, of the real kinds, topics and
outcomes of ``crmkit/plugins/interactions.py``, each logged by a manager on
one of their clients, a third of them on one of their deals. Everything is
inserted with SQLAlchemy Core ``executemany`` in batches, then ``ANALYZE``.
Then measures, over the year 2026 for the 50 managers:

* **kpi run**: ``crmkit.core.kpis.run(session, every KPI, Window(...))`` in a
  read-only session: one ``GROUP BY user_id`` statement per source; the
  statements it executes are counted (``before_cursor_execute``) and printed
  next to the number of KPIs times people;
* **report**: ``s.report("kpi", period="2026")``, the same through the report
  layer (the people in scope, the access policies, the rounding);
* **raw SQL**: ``text()`` statements computing the same aggregates as one
  writes them by hand, one ``GROUP BY`` per table, on the same connection.

Each is run ``--repeat`` times after one warm-up run, in turn; the figures
are the medians, and the run's numbers must equal the raw SQL's for every
KPI and person. Target: kpi run / raw SQL <= 1.5 and report / raw SQL <= 1.5.
``--check`` exits with 1 when one is missed (or the figures differ).
``--keep DIR`` keeps the deployment (SQLite), and a second run with the same
``--keep`` measures it again without building it. ``--postgres`` starts a
throwaway PostgreSQL server (``crmkit.testing_postgres``) for the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import add_deployment_options, deployment
from sqlalchemy import bindparam, event, insert, text

from crmkit.core.app import CRM
from crmkit.core.schema import UTCDateTime, whole_seconds
from crmkit.plugins.interactions import KINDS

RATIO_TARGET = 1.5
MANAGERS = 50
PERIOD = "2026"
YEAR = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
YEAR_SECONDS = 365 * 86400
#: when the base starts: clients and deals made before the measured year
EARLY = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
STAGES = ["qualification", "presentation", "proposal", "contract_invoice", "payment_shipment"]
CLIENT_STAGES = ["lead", "qualified", "customer", "repeat_customer"]
#: the share of interactions of each kind (campaigns and events are not a manager's)
KIND_WEIGHTS = {"call": 45, "meeting": 10, "email": 30, "letter": 3, "document": 7, "mailing": 5}


def interaction_kinds() -> list[tuple[str, list[str], list[str]]]:
    """``(kind, topics, outcomes)`` for each kind a manager logs, from the built-in plugin."""
    by_name = {k["name"]: k for k in KINDS}
    return [
        (name, list(by_name[name]["topics"]), list(by_name[name]["outcomes"]))
        for name in KIND_WEIGHTS
    ]


def progress(what: str, done: int) -> None:
    print(f"\rinserted {done:,} {what}", end="", file=sys.stderr)


def build(root: Path, url: str | None, n: int, batch: int) -> CRM:
    """The deployment, its team of managers, their clients, deals, invoices, tasks, interactions."""
    started = time.perf_counter()
    crm = CRM.create(root, database_url=url, entry_points=False)
    with crm.session() as s:
        s.teams.add("sales")
        managers = [
            s.users.add(f"m{m:02d}", role="manager", team="sales").id for m in range(MANAGERS)
        ]
        admin = s.user.id
    tables = crm.metadata.tables
    rng = random.Random(8)
    n_clients = max(MANAGERS * 10, n // 50)
    n_deals = max(MANAGERS * 10, n // 5)
    n_tasks = max(MANAGERS * 10, n // 20)

    def at(start: dt.datetime, seconds: float) -> dt.datetime:
        return start + dt.timedelta(seconds=int(seconds))

    with crm.engine.begin() as conn:
        # clients: client i is owned by manager i % 50; 30% made in 2026, 10% lost
        rows = []
        for i in range(n_clients):
            made = (
                at(YEAR, rng.random() * YEAR_SECONDS)
                if rng.random() < 0.3
                else at(EARLY, rng.random() * (YEAR - EARLY).total_seconds())
            )
            roll = rng.random()
            stage = "lost" if roll < 0.1 else None if roll < 0.15 else rng.choice(CLIENT_STAGES)
            rows.append(
                {
                    "id": i + 1,
                    "kind": "company",
                    "name": f"Client {i}",
                    "requisites": {},
                    "params": {},
                    "owner_id": managers[i % MANAGERS],
                    "created_at": made,
                    "updated_at": made,
                    "stage": stage,
                }
            )
        for first in range(0, n_clients, batch):
            conn.execute(insert(tables["clients"]), rows[first : first + batch])
        progress("clients", n_clients)
        print(file=sys.stderr)

        # deals: on a random client, owned by its owner; 40% won, 35% lost, the rest open
        deals_of: list[list[int]] = [[] for _ in range(MANAGERS)]
        won_deals: list[tuple[int, int, float, dt.datetime]] = []
        for first in range(1, n_deals + 1, batch):
            deal_rows, change_rows = [], []
            for deal_id in range(first, min(first + batch, n_deals + 1)):
                client = rng.randrange(n_clients)
                m = client % MANAGERS
                deals_of[m].append(deal_id)
                opened = at(dt.datetime(2025, 6, 1, tzinfo=dt.UTC), rng.random() * 560 * 86400)
                roll = rng.random()
                status = "won" if roll < 0.4 else "lost" if roll < 0.75 else "open"
                closed = at(opened, rng.uniform(86400, 90 * 86400)) if status != "open" else None
                amount = 0 if rng.random() < 0.01 else 1000 * (1 + rng.randrange(500))
                if status == "won":
                    came_from = "qualification" if rng.random() < 0.1 else STAGES[-1]
                else:
                    came_from = rng.choice(STAGES)
                stage = status if status != "open" else rng.choice(STAGES)
                cause = "import" if rng.random() < 0.05 else "manual"
                deal_rows.append(
                    {
                        "id": deal_id,
                        "client_id": client + 1,
                        "pipeline": "b2b",
                        "stage": stage,
                        "status": status,
                        "title": f"Deal {deal_id}",
                        "amount": amount,
                        "currency": "RUB",
                        "owner_id": managers[m],
                        "lost_reason": "price" if status == "lost" else None,
                        "opened_at": opened,
                        "stage_entered_at": closed or opened,
                        "closed_at": closed,
                        "created_by": admin,
                    }
                )
                change = {
                    "entity": "deal",
                    "entity_id": deal_id,
                    "pipeline": "b2b",
                    "user_id": managers[m],
                    "interaction_id": None,
                    "note": None,
                    "lost_reason": None,
                    "deal_amount": amount,
                    "deal_opened_at": opened,
                }
                change_rows.append(
                    {
                        **change,
                        "from_stage": None,
                        "to_stage": STAGES[0],
                        "at": opened,
                        "cause": "import" if cause == "import" else "opened",
                        "left_at": closed,
                        "next_stage": status if closed else None,
                        "stay_seconds": whole_seconds(opened, closed) if closed else None,
                    }
                )
                if closed:
                    change_rows.append(
                        {
                            **change,
                            "from_stage": came_from,
                            "to_stage": status,
                            "at": closed,
                            "cause": cause,
                            "left_at": None,
                            "next_stage": None,
                            "stay_seconds": None,
                        }
                    )
                if status == "won":
                    won_deals.append((deal_id, m, amount, closed))
            conn.execute(insert(tables["deals"]), deal_rows)
            conn.execute(insert(tables["stage_changes"]), change_rows)
            progress("deals", min(first + batch - 1, n_deals))
        print(file=sys.stderr)

        # invoices: 90% of won deals, issued a few days before the win; 80% of them paid
        invoice_rows = []
        for deal_id, m, amount, closed in won_deals:
            if rng.random() >= 0.9 or not amount:
                continue
            issued = at(closed, -rng.uniform(0, 10 * 86400))
            roll = rng.random()
            status = "paid" if roll < 0.8 else "cancelled" if roll < 0.85 else "issued"
            later = at(closed, rng.uniform(86400, 40 * 86400))
            invoice_rows.append(
                {
                    "number": f"INV-{deal_id}",
                    "deal_id": deal_id,
                    "amount": amount,
                    "currency": "RUB",
                    "status": status,
                    "issued_at": issued,
                    "paid_at": later if status == "paid" else None,
                    "cancelled_at": later if status == "cancelled" else None,
                    "created_by": managers[m],
                }
            )
        for first in range(0, len(invoice_rows), batch):
            conn.execute(insert(tables["invoices"]), invoice_rows[first : first + batch])
        progress("invoices", len(invoice_rows))
        print(file=sys.stderr)

        # tasks: due a day to two weeks after they are made; 70% done (some late)
        task_rows = []
        for i in range(n_tasks):
            made = at(dt.datetime(2025, 11, 1, tzinfo=dt.UTC), rng.random() * 425 * 86400)
            due = at(made, rng.uniform(86400, 14 * 86400))
            done = at(made, rng.uniform(3600, 20 * 86400)) if rng.random() < 0.7 else None
            client = rng.randrange(n_clients)
            task_rows.append(
                {
                    "title": f"Task {i}",
                    "steps": [],
                    "assignee_id": managers[client % MANAGERS],
                    "created_by": admin,
                    "client_id": client + 1,
                    "deal_id": None,
                    "due_at": due,
                    "done_at": done,
                    "done_late": None if done is None else done > due,
                    "created_at": made,
                }
            )
        for first in range(0, n_tasks, batch):
            conn.execute(insert(tables["tasks"]), task_rows[first : first + batch])
        progress("tasks", n_tasks)
        print(file=sys.stderr)

        # interactions: 95% in 2026; by a manager, on one of their clients, a third on a deal
        kinds = interaction_kinds()
        weights = [KIND_WEIGHTS[k] for k, _, _ in kinds]
        clients_per = n_clients // MANAGERS
        table = tables["interactions"]
        for first in range(0, n, batch):
            rows = []
            picks = rng.choices(kinds, weights, k=min(batch, n - first))
            for kind, topics, outcomes in picks:
                m = rng.randrange(MANAGERS)
                when = (
                    at(YEAR, rng.random() * YEAR_SECONDS)
                    if rng.random() < 0.95
                    else at(YEAR, -rng.random() * YEAR_SECONDS)
                )
                direction = None
                if kind == "call":
                    direction = "outbound" if rng.random() < 0.7 else "inbound"
                rows.append(
                    {
                        "client_id": 1 + m + MANAGERS * rng.randrange(clients_per),
                        "deal_id": rng.choice(deals_of[m]) if rng.random() < 0.33 else None,
                        "user_id": managers[m],
                        "kind": kind,
                        "direction": direction,
                        "occurred_at": when,
                        "duration_min": 10 if kind in ("call", "meeting") else None,
                        "topic": rng.choice(topics),
                        "outcome": rng.choice(outcomes),
                        "note": None,
                        "created_at": when,
                    }
                )
            conn.execute(insert(table), rows)
            progress("interactions", first + len(rows))
        print(file=sys.stderr)
    with crm.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    print(f"deployment made in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return crm


# -- the same aggregates by hand -----------------------------------------------------------
INTERACTIONS = """
  SELECT user_id,
    sum(CASE WHEN kind = 'call' AND direction = 'outbound' THEN 1 ELSE 0 END) AS outbound,
    sum(CASE WHEN kind = 'call' AND direction = 'inbound' THEN 1 ELSE 0 END) AS inbound,
    sum(CASE WHEN kind = 'meeting' THEN 1 ELSE 0 END) AS meetings,
    sum(CASE WHEN topic = 'proposal' AND outcome IN ('sent', 'delivered') THEN 1 ELSE 0 END)
      AS proposals,
    count(*) AS contacts
  FROM interactions
  WHERE user_id IN :ids AND occurred_at >= :start AND occurred_at < :end
  GROUP BY user_id"""
CLIENTS = """
  SELECT owner_id AS user_id,
    sum(CASE WHEN stage IS NULL OR stage <> 'lost' THEN 1 ELSE 0 END) AS in_work,
    sum(CASE WHEN created_at >= :start THEN 1 ELSE 0 END) AS new
  FROM clients
  WHERE owner_id IN :ids AND created_at < :end
  GROUP BY owner_id"""
INVOICES = """
  SELECT d.owner_id AS user_id,
    sum(CASE WHEN i.issued_at >= :start AND i.issued_at < :end THEN 1 ELSE 0 END) AS issued,
    sum(CASE WHEN i.status = 'paid' AND i.paid_at >= :start AND i.paid_at < :end
        THEN i.amount END) AS paid
  FROM invoices i JOIN deals d ON d.id = i.deal_id
  WHERE d.owner_id IN :ids AND ((i.issued_at >= :start AND i.issued_at < :end)
                                OR (i.paid_at >= :start AND i.paid_at < :end))
  GROUP BY d.owner_id"""
CLOSED_DEALS = """
  SELECT owner_id AS user_id, count(*) AS closed,
    sum(won) AS won, sum(CASE WHEN won = 1 THEN amount END) AS won_amount,
    sum(complete) AS complete, sum(CASE WHEN complete = 1 THEN amount END) AS complete_amount
  FROM (
    SELECT d.owner_id, d.amount, CASE WHEN d.status = 'won' THEN 1 ELSE 0 END AS won,
      CASE WHEN d.status = 'won' AND d.amount > 0
        AND NOT EXISTS (SELECT 1 FROM stage_changes c
                        WHERE c.entity = 'deal' AND c.entity_id = d.id AND c.cause = 'import')
        AND NOT EXISTS (SELECT 1 FROM stage_changes c
                        WHERE c.entity = 'deal' AND c.entity_id = d.id AND c.to_stage = 'won'
                          AND ({firsts}))
        AND EXISTS (SELECT 1 FROM interactions i WHERE i.deal_id = d.id)
      THEN 1 ELSE 0 END AS complete
    FROM deals d
    WHERE d.owner_id IN :ids AND d.closed_at >= :start AND d.closed_at < :end
      AND d.status IN ('won', 'lost')
  ) closed
  GROUP BY owner_id"""
TASKS = """
  SELECT assignee_id AS user_id,
    sum(CASE WHEN done_at >= :start AND done_at < :end THEN 1 ELSE 0 END) AS done,
    sum(CASE WHEN (done_at >= :start AND done_at < :end AND done_late IS TRUE)
              OR (due_at < :as_of AND created_at < :as_of
                  AND (done_at IS NULL OR done_at >= :as_of)) THEN 1 ELSE 0 END) AS overdue
  FROM tasks
  WHERE assignee_id IN :ids
    AND ((done_at >= :start AND done_at < :end)
         OR (due_at < :as_of AND created_at < :as_of AND (done_at IS NULL OR done_at >= :as_of)))
  GROUP BY assignee_id"""

#: each KPI from the raw rows: (statement, numerator column, denominator column or None)
RAW_KPIS: dict[str, tuple[str, str, tuple[str, str] | None]] = {
    "calls_outbound": ("interactions", "outbound", None),
    "calls_inbound": ("interactions", "inbound", None),
    "meetings": ("interactions", "meetings", None),
    "proposals_sent": ("interactions", "proposals", None),
    "contacts": ("interactions", "contacts", None),
    "contact_frequency": ("interactions", "contacts", ("clients", "in_work")),
    "clients_in_work": ("clients", "in_work", None),
    "new_clients": ("clients", "new", None),
    "invoices_issued": ("invoices", "issued", None),
    "payments": ("invoices", "paid", None),
    "won_deals": ("closed_deals", "won", None),
    "won_revenue": ("closed_deals", "won_amount", None),
    "attributed_revenue": ("closed_deals", "complete_amount", None),
    "win_rate": ("closed_deals", "won", ("closed_deals", "closed")),
    "average_deal_size": ("closed_deals", "won_amount", ("closed_deals", "won")),
    "complete_records": ("closed_deals", "complete", ("closed_deals", "won")),
    "tasks_done": ("tasks", "done", None),
    "overdue_tasks": ("tasks", "overdue", None),
}


def raw_statements(crm: CRM) -> dict[str, Any]:
    """The five statements, bound as crmkit stores times (UTC) and with the users expanding."""
    firsts = " OR ".join(
        f"(d.pipeline = '{flow.name}' AND c.from_stage = '{flow.first.name}')"
        for flow in crm.pipelines.values()
        if flow.entity == "deal" and len(flow.stages) > 1
    )
    sql = {
        "interactions": INTERACTIONS,
        "clients": CLIENTS,
        "invoices": INVOICES,
        "closed_deals": CLOSED_DEALS.format(firsts=firsts or "1 = 0"),
        "tasks": TASKS,
    }
    out = {}
    for name, statement in sql.items():
        times = [k for k in ("start", "end", "as_of") if f":{k}" in statement]
        out[name] = text(statement).bindparams(
            bindparam("ids", expanding=True), *(bindparam(k, type_=UTCDateTime()) for k in times)
        )
    return out


def raw_sql(conn: Any, statements: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``{statement: {user id: row mapping}}`` from the hand-written SQL."""
    out: dict[str, Any] = {}
    for name, stmt in statements.items():
        out[name] = {row.user_id: row._mapping for row in conn.execute(stmt, params)}
    return out


def same_figures(facts: dict[str, Any], raw: dict[str, Any], user_ids: tuple[int, ...]) -> bool:
    """Whether every KPI's numerator and denominator equals the raw SQL's, for every person."""

    def number(value: Any) -> float:
        return round(float(value or 0), 2)

    ok = True
    for kpi_id, by_user in facts.items():
        if kpi_id not in RAW_KPIS:
            print(f"not checked (no raw SQL for it): {kpi_id}")
            ok = False
            continue
        source, num, den = RAW_KPIS[kpi_id]
        for uid in user_ids:
            fact = by_user[uid]
            want_num = number(raw[source].get(uid, {}).get(num))
            want_den = None if den is None else number(raw[den[0]].get(uid, {}).get(den[1]))
            got_den = None if fact.denominator is None else number(fact.denominator)
            if number(fact.numerator) != want_num or got_den != want_den:
                print(
                    f"differs: {kpi_id} for user {uid}: run {fact.numerator}/{fact.denominator},"
                    f" raw SQL {want_num}/{want_den}"
                )
                ok = False
    return ok


# -- measuring --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=50_000)
    add_deployment_options(parser)
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        crm = deployment(
            stack, args, "kpis", lambda root, url: build(root, url, args.interactions, args.batch)
        )
        return measure(crm, args)
    return 0  # pragma: no cover


def measure(crm: CRM, args: argparse.Namespace) -> int:
    """Time the KPI run, the report and the raw SQL; print the figures, the ratios, the target."""
    from crmkit.core.kpis import Window, run
    from crmkit.core.reports import parse_period

    with crm.engine.connect() as conn:
        counts = {
            name: conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
            for name in ("interactions", "clients", "deals", "invoices", "tasks")
        }
        user_ids = tuple(
            uid
            for (uid,) in conn.execute(
                text("SELECT id FROM users WHERE role = 'manager' ORDER BY id")
            )
        )
    print(
        ", ".join(f"{n:,} {name}" for name, n in counts.items())
        + f"; {len(user_ids)} managers ({crm.engine.dialect.name})"
    )

    period = parse_period(PERIOD)
    start, end = period.bounds(crm.tz)
    now = dt.datetime.now(dt.UTC)
    window = Window(start, end, user_ids, period, now)
    kpis = list(crm.kpis.values())
    statements = raw_statements(crm)
    params = {"ids": list(user_ids), "start": start, "end": end, "as_of": window.as_of}
    result: dict[str, Any] = {}
    executed: list[str] = []

    def count_statement(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        executed.append(statement)

    def counted(name: str, fn: Callable[[Any], Any]) -> Callable[[], None]:
        def go() -> None:
            with crm.session(readonly=True) as s:
                executed.clear()
                event.listen(crm.engine, "before_cursor_execute", count_statement)
                try:
                    result[name] = fn(s)
                finally:
                    event.remove(crm.engine, "before_cursor_execute", count_statement)
                result[f"{name} statements"] = len(executed)

        return go

    runs = {
        "kpi run": counted("kpi run", lambda s: run(s, kpis, window)),
        "report": counted("report", lambda s: s.report("kpi", period=PERIOD)),
        "raw SQL": counted("raw SQL", lambda s: raw_sql(s.connection, statements, params)),
    }
    for fn in runs.values():  # warm-up: caches, compiled statements, the database's pages
        fn()
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeat):
        for name, fn in runs.items():
            began = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - began)
    medians = {name: statistics.median(values) for name, values in timings.items()}

    facts = result["kpi run"]
    same = same_figures(facts, result["raw SQL"], user_ids)
    report = result["report"]
    print(f"{'KPI':<22}{'team':>20}  {'min of people':>16}{'max of people':>16}")
    for kpi in kpis:
        values = [facts[kpi.id][uid].value for uid in user_ids]
        known = [float(v) for v in values if v is not None]
        team = report.summary.get(kpi.id)
        print(
            f"{kpi.id:<22}{float(team or 0):>20,.2f}  "
            f"{min(known, default=0):>16,.2f}{max(known, default=0):>16,.2f}"
        )
    people = report.summary.get("people")
    print(f"the same figures: {same} ({len(kpis)} KPIs x {len(user_ids)} people; report: {people})")
    print(
        f"kpi run: {result['kpi run statements']} statements for {len(kpis)} KPIs x "
        f"{len(user_ids)} people (report: {result['report statements']}, "
        f"raw SQL: {result['raw SQL statements']})"
    )
    run_s, report_s, raw_s = medians["kpi run"], medians["report"], medians["raw SQL"]
    print(f"kpi run:              {run_s:8.3f} s (median of {args.repeat})")
    print(f"report:               {report_s:8.3f} s")
    print(f"raw SQL:              {raw_s:8.3f} s")
    print(f"ratio run / raw:      {run_s / raw_s:8.2f} (target <= {RATIO_TARGET})")
    print(f"ratio report / raw:   {report_s / raw_s:8.2f} (target <= {RATIO_TARGET})")
    ok = same and run_s / raw_s <= RATIO_TARGET and report_s / raw_s <= RATIO_TARGET
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
