"""A 100,000-row client import with 1% bad rows: every bad row reported, every good row stored.

    python benchmarks/import_errors.py [--rows 100000] [--bad-every 100]

Plants a bad value in every Nth row (an invalid email, a negative turnover,
an unknown owner, a number that is not one, a missing name, in turn), runs
``crmkit import clients FILE --errors-to errors.csv`` in a child process, and
checks that the errors file names exactly the planted lines and that every
other row is stored. It prints crmkit's throughput next to raw ``sqlite3``
inserting the good rows of the same file (no validation), and their ratio.
Needs the crmkit-segment-b2b plugin installed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from import_clients import HEADER, init, raw_import

BAD = [
    ("email", "not-an-email"),
    ("param.turnover", "-5"),
    ("owner", "nobody"),
    ("param.sales_reps", "many"),
    ("name", ""),
]


def write(path: Path, rows: int, every: int) -> set[int]:
    planted: set[int] = set()
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow([*HEADER, "owner"])
        for i in range(rows):
            row = {
                "name": f"Distributor {i}",
                "email": f"buyer{i}@d{i % 997}.example",
                "phone": f"+7 900 {i:07d}",
                "external_id": f"ext-{i}",
                "source": "website",
                "segment": "distributor",
                "param.turnover": str(1000 + i),
                "param.sales_reps": str(1 + i % 90),
                "param.own_clients": str(i % 5000),
                "param.warehouse_area": "250.5",
                "owner": "admin",
            }
            if i % every == every - 1:
                column, value = BAD[(i // every) % len(BAD)]
                row[column] = value
                planted.add(i + 2)  # line numbers count the header as line 1
            out.writerow([row[c] for c in [*HEADER, "owner"]])
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--bad-every", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crmkit-bench-errors-"))
    source = work / "clients.csv"
    planted = write(source, args.rows, args.bad_every)
    init(work / "crmkit")
    errors = work / "errors.csv"
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "crmkit",
            "-C",
            str(work / "crmkit"),
            "import",
            "clients",
            str(source),
            "--errors-to",
            str(errors),
            "--no-progress",
            "--format",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    ours = time.perf_counter() - start
    summary = json.loads(done.stdout)
    with errors.open(newline="", encoding="utf-8") as handle:
        reported = {int(r["line"]) for r in csv.DictReader(handle)}
    con = sqlite3.connect(work / "crmkit" / "crmkit.db")
    stored = con.execute("SELECT count(*) FROM clients").fetchone()[0]
    con.close()
    good = args.rows - len(planted)
    assert reported == planted, f"reported {len(reported)} lines, planted {len(planted)}"
    assert (summary["inserted"], summary["rejected"], stored) == (good, len(planted), good)
    # the raw baseline inserts the good rows of the same file
    clean = work / "good.csv"
    with source.open(newline="", encoding="utf-8") as src, clean.open("w", newline="") as dst:
        reader, out = csv.reader(src), csv.writer(dst)
        out.writerow(next(reader)[:-1])
        for line, row in enumerate(reader, start=2):
            if line not in planted:
                out.writerow(row[:-1])
    init(work / "raw")
    raw = raw_import(work / "raw", clean, 5000)
    print(
        f"{args.rows} rows, {len(planted)} bad ({100 / args.bad_every:g}%): "
        f"all {len(planted)} reported with their line, all {good} good rows stored"
    )
    print(
        f"crmkit import   {args.rows / ours:10,.0f} rows/s  ({ours:5.1f} s, errors file "
        f"{errors.stat().st_size // 1024} KB)"
    )
    print(f"raw sqlite3     {good / raw:10,.0f} rows/s  ({raw:5.1f} s, good rows only)")
    print(f"ratio           {ours / raw:10.2f}")


if __name__ == "__main__":
    main()
