"""Import of deals with their stage history, against raw ``sqlite3`` on the same schema.

    python benchmarks/import_deals.py [--rows 1000000] [--batch-size 5000] [--keep DIR]

Writes a CSV of N deals of the ``b2b`` pipeline, each with the dates it
entered 3 to 5 stages (``stage.qualification`` ... ``stage.payment_shipment``),
a quarter of them lost (with a reason) and some won, referring to their
clients by external id. Both deployments get the same N/5 clients first (not
timed). Then it measures in the same run:

* **crmkit**: ``crmkit import deals FILE`` in a child process (its peak
  memory is that process's maximum resident set size): parsing, mapping,
  amounts and dates, the client looked up by external id, the stage history
  checked against the pipeline (known stages, forward order, no skipping,
  dates that never go back, lost reasons from the pipeline's list),
  deduplication against the database, the insert of the deals and of one
  ``stage_changes`` row per history entry, one event per batch;
* **raw**: plain ``sqlite3`` reading the same CSV with the ``csv`` module,
  looking the client up in a dict it loaded beforehand, and ``executemany``
  of the same deal rows and stage-change rows (each closed by the next as a
  stay, as crmkit stores them) into the same tables of a deployment made the
  same way, in transactions of the same size, with no validation;
* **raw, indexes deferred**: the same, but dropping the funnel's four
  indexes of ``stage_changes`` first and creating them again at the end, as
  crmkit does for a file this large (see ``crmkit.core.indexes``).

It prints the throughputs (deals per second) and the ratios of crmkit's time
to each raw time.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from import_clients import crmkit_import

STAGES = ["qualification", "presentation", "proposal", "contract_invoice", "payment_shipment"]
REASONS = ["price", "competitor", "no_budget", "no_need", "timing"]
HEADER = [
    "external_id",
    "client_external_id",
    "title",
    "amount",
    *[f"stage.{s}" for s in STAGES],
    "status",
    "closed_at",
    "lost_reason",
]
START = dt.date(2022, 1, 1)


def write_csv(path: Path, rows: int, clients: int, seed: int = 1) -> int:
    """The deals file; returns the number of stage changes it holds."""
    rng = random.Random(seed)
    changes = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(HEADER)
        for i in range(rows):
            reached = 3 + i % 3  # 3, 4 or 5 stages
            day = START + dt.timedelta(days=rng.randrange(900))
            dates = []
            for _ in range(reached):
                dates.append(day.isoformat())
                day += dt.timedelta(days=rng.randrange(0, 15))
            dates += [""] * (len(STAGES) - reached)
            status = closed = reason = ""
            if i % 4 == 0:
                status, closed, reason = "lost", day.isoformat(), REASONS[i % len(REASONS)]
            elif reached == 5 and i % 4 == 1:
                status, closed = "won", day.isoformat()
            changes += reached + (1 if status else 0)
            out.writerow(
                [
                    f"D-{i}",
                    f"C-{rng.randrange(clients)}",
                    f"Deal {i}",
                    f"{rng.randrange(100, 10_000_000)}.{rng.randrange(100):02d}",
                    *dates,
                    status,
                    closed,
                    reason,
                ]
            )
    return changes


def init(directory: Path, clients: int) -> None:
    """A deployment with ``clients`` clients (external ids C-0 ...), written directly."""
    subprocess.run(
        [sys.executable, "-m", "crmkit", "init", str(directory)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    con = sqlite3.connect(directory / "crmkit.db", isolation_level=None)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO clients (kind, name, requisites, params, owner_id, external_id, created_at,"
        " updated_at, stage) VALUES ('company', ?, '{}', '{}', 1, ?, ?, ?, 'lead')",
        ((f"Client {i}", f"C-{i}", now, now) for i in range(clients)),
    )
    con.execute("COMMIT")
    con.close()


def raw_import(directory: Path, source: Path, batch_size: int, defer: bool = False) -> float:
    con = sqlite3.connect(directory / "crmkit.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    funnel = (
        "ix_stage_changes_stays_in",
        "ix_stage_changes_stays_out",
        "ix_stage_changes_stay_seconds",
        "ix_stage_changes_lost",
    )
    ddl = dict(
        con.execute(
            f"SELECT name, sql FROM sqlite_master WHERE name IN ({', '.join('?' * len(funnel))})",
            funnel,
        )
    )
    assert len(ddl) == len(funnel), ddl
    deal_sql = (
        "INSERT INTO deals (id, client_id, pipeline, stage, status, title, amount, currency,"
        " owner_id, expected_close, lost_reason, opened_at, stage_entered_at, closed_at,"
        " created_by, external_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    change_sql = (
        "INSERT INTO stage_changes (entity, entity_id, pipeline, from_stage, to_stage, at,"
        " user_id, cause, note, left_at, next_stage, stay_seconds, lost_reason, deal_amount,"
        " deal_opened_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    start = time.perf_counter()
    if defer:
        con.execute("BEGIN")
        for name in funnel:
            con.execute(f"DROP INDEX {name}")
        con.execute("COMMIT")
    # the clients by external id, as the raw way would look them up
    clients = dict(con.execute("SELECT external_id, id FROM clients"))
    next_id = con.execute("SELECT coalesce(max(id), 0) + 1 FROM deals").fetchone()[0]
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        deals: list[tuple] = []
        changes: list[tuple] = []

        def flush() -> None:
            con.execute("BEGIN")
            con.executemany(deal_sql, deals)
            con.executemany(change_sql, changes)
            con.execute("COMMIT")
            deals.clear()
            changes.clear()

        for ext, client, title, amount, *rest in reader:
            dates, (status, closed, reason) = rest[:5], rest[5:]
            deal_id = next_id
            next_id += 1
            opened = dates[0] + " 00:00:00.000000"
            history = [(stage, day) for stage, day in zip(STAGES, dates, strict=True) if day]
            if status:
                history.append((status, closed))
            before = None
            last = None
            for i, (stage, day) in enumerate(history):
                last = day + " 00:00:00.000000"
                note = reason or None if stage == "lost" else None
                if i + 1 < len(history):  # the stay, closed by the next entry
                    after, left = history[i + 1]
                    stay = (
                        "deal", deal_id, "b2b", before, stage, last, 1, "import", note,
                        left + " 00:00:00.000000", after,
                        (dt.date.fromisoformat(left) - dt.date.fromisoformat(day)).days * 86400,
                        (reason or None) if after == "lost" else None,
                        float(amount), opened,
                    )  # fmt: skip
                else:
                    stay = (
                        "deal", deal_id, "b2b", before, stage, last, 1, "import", note,
                        None, None, None, None, float(amount), opened,
                    )  # fmt: skip
                changes.append(stay)
                before = stage
            deals.append(
                (
                    deal_id,
                    clients[client],
                    "b2b",
                    status or before,
                    status or "open",
                    title,
                    float(amount),
                    "RUB",
                    1,
                    None,
                    reason or None,
                    opened,
                    last,
                    last if status else None,
                    1,
                    ext,
                )
            )
            if len(deals) >= batch_size:
                flush()
        if deals:
            flush()
    if defer:
        con.execute("BEGIN")
        for name in funnel:
            con.execute(ddl[name])
        con.execute("COMMIT")
    seconds = time.perf_counter() - start
    con.close()
    return seconds


def count(directory: Path, table: str, where: str = "1 = 1") -> int:
    con = sqlite3.connect(directory / "crmkit.db")
    try:
        return int(con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0])
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Deals in the file.")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it.")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="crmkit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    clients = max(1, args.rows // 5)
    source = work / "deals.csv"
    changes = write_csv(source, args.rows, clients)
    for name in ("crmkit", "raw", "raw-deferred"):
        target = work / name
        if target.exists():
            raise SystemExit(f"{target} exists; remove it or use another --keep folder")
        init(target, clients)
    raw_seconds = raw_import(work / "raw", source, args.batch_size)
    deferred_seconds = raw_import(work / "raw-deferred", source, args.batch_size, defer=True)
    ours, peak_mb, summary = crmkit_import(work / "crmkit", source, args.batch_size, "deals")
    assert summary["inserted"] == args.rows, summary
    for table, where, expected in (
        ("deals", "1 = 1", args.rows),
        ("stage_changes", "entity = 'deal'", changes),
    ):
        found = tuple(
            count(work / name, table, where) for name in ("crmkit", "raw", "raw-deferred")
        )
        assert found == (expected,) * 3, (table, found, expected)
    indexes = "type = 'index' AND name LIKE 'ix_stage_changes_%'"
    kept = tuple(count(work / name, "sqlite_master", indexes) for name in ("crmkit", "raw"))
    assert kept[0] == kept[1], ("the indexes of stage_changes", kept)
    # crmkit also makes the clients of won deals customers (the raw baseline does not)
    customers = count(work / "crmkit", "stage_changes", "entity = 'client'")
    mb = os.path.getsize(source) / 1e6
    print(
        f"file: {args.rows} deals with {changes} stage changes ({changes / args.rows:.2f} per "
        f"deal), {clients} clients, {mb:.0f} MB CSV; batches of {args.batch_size}; "
        f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}"
    )
    print(
        f"crmkit import   {args.rows / ours:10,.0f} deals/s  ({ours:6.1f} s, "
        f"peak memory {peak_mb:.0f} MB; also {customers} client lifecycle moves for won deals)"
    )
    print(
        f"raw sqlite3     {args.rows / raw_seconds:10,.0f} deals/s  ({raw_seconds:6.1f} s, "
        "no validation, indexes kept)"
    )
    print(
        f"raw, deferred   {args.rows / deferred_seconds:10,.0f} deals/s  "
        f"({deferred_seconds:6.1f} s, no validation, funnel indexes dropped and created again)"
    )
    print(f"ratio           {ours / raw_seconds:10.2f}  (crmkit time / raw time, indexes kept)")
    print(f"ratio deferred  {ours / deferred_seconds:10.2f}  (crmkit time / raw deferred time)")


if __name__ == "__main__":
    main()
