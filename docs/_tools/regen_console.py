"""Rewrite the console outputs of a documentation page from the current code.

Usage::

    python docs/_tools/regen_console.py docs/segments.rst [--check] [--keep] [--subprocess]

The page is walked top to bottom in a new temporary folder exactly as
``tests/test_docs.py`` walks it (see :mod:`console` next to this file): its
console commands and pycon examples run, its ``.. crmkit-test:`` steps are
performed, and every output that no longer matches what the page shows is
replaced (outputs that still match, once timestamps and the folder are
normalized, are kept as written). ``--check`` only lists the differences and
exits with 1 when there are any; ``--keep`` keeps the temporary folder;
``--subprocess`` runs every command in its own process (by default, plain
``crmkit`` lines run in this one, as the test does; the output is the same).
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import tempfile
from pathlib import Path

from console import normalized, rewritten, walk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the .rst page to run and rewrite")
    parser.add_argument("--check", action="store_true", help="report differences, change nothing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--subprocess", action="store_true", help="run every command in its own process"
    )
    args = parser.parse_args(argv)

    text = args.page.read_text("utf-8")
    folder = Path(tempfile.mkdtemp(prefix="regen-console-"))
    try:
        walked = walk(text, folder, in_process=False if args.subprocess else None)
    finally:
        if args.keep:
            print(f"deployment folder: {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    for shown in walked.mismatches:
        print(f"--- {args.page}:{shown.block.line}: {shown.source.splitlines()[0]}")
        diff = difflib.unified_diff(
            normalized(shown.expected).splitlines(),
            normalized(shown.actual).splitlines(),
            "page",
            "now",
            lineterm="",
        )
        print("\n".join(list(diff)[2:]))
    for block in walked.unchecked:
        print(f"{args.page}:{block.line}: {block.lang} block neither run nor used by a step")
    print(
        f"{len(walked.shown)} outputs, {len(walked.mismatches)} changed, "
        f"{len(walked.steps)} hidden steps, {len(walked.skipped)} lines skipped",
        file=sys.stderr,
    )
    if args.check:
        return 1 if walked.mismatches else 0
    new = rewritten(text, walked)
    if new != text:
        args.page.write_text(new, "utf-8")
        print(f"rewrote {args.page}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
