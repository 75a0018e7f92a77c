"""Import of clients with segment parameters, against raw ``sqlite3`` on the same schema.

    python benchmarks/import_clients.py [--rows 1000000] [--batch-size 5000] [--keep DIR]

Writes a CSV of N distributor clients (name, email, phone, external id,
source and four segment parameters validated against the segment's JSON
Schema), then measures in the same run:

* **crmkit**: ``crmkit import clients FILE`` in a child process (its peak
  memory is that process's maximum resident set size): parsing, mapping,
  type conversion, validation of every row (email, phone, owner, channel, the
  segment's JSON Schema), deduplication against the database, the insert
  and one event per batch;
* **raw**: plain ``sqlite3`` reading the same CSV with the ``csv`` module and
  ``executemany`` of the same rows (the parameters as JSON) into the same
  table of a deployment made the same way, in transactions of the same size,
  with no validation.

It prints both throughputs and their ratio (target: ratio <= 2.0, crmkit's
peak memory under 400 MB). Needs the crmkit-segment-b2b plugin installed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = [
    "name",
    "email",
    "phone",
    "external_id",
    "source",
    "segment",
    "param.turnover",
    "param.sales_reps",
    "param.own_clients",
    "param.warehouse_area",
]
SOURCES = ["website", "cold_call", "referral", "event", "partner"]


def write_csv(path: Path, rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(HEADER)
        for i in range(rows):
            out.writerow(
                [
                    f"Distributor {i}",
                    f"buyer{i}@d{i % 997}.example",
                    f"+7 9{rng.randrange(10**8, 10**9)}",
                    f"ext-{i}",
                    SOURCES[i % len(SOURCES)],
                    "distributor",
                    rng.randrange(10**6, 10**10),
                    rng.randrange(1, 200),
                    rng.randrange(1, 50_000),
                    f"{rng.randrange(100, 100_000)}.{rng.randrange(10)}",
                ]
            )


def init(directory: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "crmkit", "init", str(directory)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def crmkit_import(
    directory: Path, source: Path, batch_size: int, kind: str = "clients"
) -> tuple[float, float, dict]:
    """``crmkit import KIND`` in a child process: seconds, peak memory (MB), its JSON summary."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "crmkit",
            "-C",
            str(directory),
            "import",
            kind,
            str(source),
            "--batch-size",
            str(batch_size),
            "--no-progress",
            "--format",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads(done.stdout)
    return seconds, max(peak_kb, before) / 1024, summary


def raw_import(directory: Path, source: Path, batch_size: int) -> float:
    con = sqlite3.connect(directory / "crmkit.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    sql = (
        "INSERT INTO clients (kind, name, email, phone, requisites, segment, params, owner_id,"
        " source, external_id, created_at, updated_at, stage) VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    start = time.perf_counter()
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        batch = []
        for name, email, phone, ext, src, segment, turnover, reps, own, area in reader:
            params = json.dumps(
                {
                    "turnover": int(turnover),
                    "sales_reps": int(reps),
                    "own_clients": int(own),
                    "warehouse_area": float(area),
                }
            )
            batch.append(
                (
                    "company",
                    name,
                    email,
                    phone,
                    "{}",
                    segment,
                    params,
                    1,
                    src,
                    ext,
                    now,
                    now,
                    "lead",
                )
            )
            if len(batch) >= batch_size:
                con.execute("BEGIN")
                con.executemany(sql, batch)
                con.execute("COMMIT")
                batch = []
        if batch:
            con.execute("BEGIN")
            con.executemany(sql, batch)
            con.execute("COMMIT")
    seconds = time.perf_counter() - start
    con.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it.")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="crmkit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "clients.csv"
    if not source.exists():
        write_csv(source, args.rows)
    for name in ("crmkit", "raw"):
        target = work / name
        if target.exists():
            raise SystemExit(f"{target} exists; remove it or use another --keep folder")
        init(target)
    raw_seconds = raw_import(work / "raw", source, args.batch_size)
    ours, peak_mb, summary = crmkit_import(work / "crmkit", source, args.batch_size)
    assert summary["inserted"] == args.rows, summary
    mb = os.path.getsize(source) / 1e6
    print(
        f"file: {args.rows} clients, {mb:.0f} MB CSV; batches of {args.batch_size}; "
        f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}"
    )
    print(
        f"crmkit import   {args.rows / ours:10,.0f} rows/s  ({ours:6.1f} s, "
        f"peak memory {peak_mb:.0f} MB)"
    )
    print(
        f"raw sqlite3     {args.rows / raw_seconds:10,.0f} rows/s  ({raw_seconds:6.1f} s, "
        "no validation)"
    )
    print(f"ratio           {ours / raw_seconds:10.2f}  (crmkit time / raw time; target <= 2.0)")


if __name__ == "__main__":
    main()
