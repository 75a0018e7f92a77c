"""How long `crmkit --help` takes, against the raw baseline `python -c "import click"`.

    python benchmarks/startup.py [--runs 40]

Both are run as fresh processes with the same interpreter, interleaved, and
the medians are compared. `crmkit --help` loads every installed plugin (entry
points) but no database driver, server or template engine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    crmkit_cmd = [sys.executable, "-c", "from crmkit.cli import main; main(['--help'])"]
    baseline_cmd = [sys.executable, "-c", "import click"]
    for cmd in (crmkit_cmd, baseline_cmd):  # warm the file cache
        timed(cmd)
    crmkit_times, baseline_times = [], []
    for _ in range(args.runs):
        crmkit_times.append(timed(crmkit_cmd))
        baseline_times.append(timed(baseline_cmd))
    ours, raw = statistics.median(crmkit_times), statistics.median(baseline_times)
    print(f"crmkit --help          median {ours * 1000:7.1f} ms  ({args.runs} runs)")
    print(f"python -c 'import click' median {raw * 1000:7.1f} ms  (baseline)")
    print(f"ratio                  {ours / raw:7.2f}x  (+{(ours - raw) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
