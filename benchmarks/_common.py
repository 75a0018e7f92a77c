"""What the benchmarks share: where the deployment lives and which database it uses.

A benchmark script imports this module from its own folder (``python
benchmarks/NAME.py`` puts ``benchmarks/`` first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from crmkit.core.app import CRM


def add_deployment_options(parser: argparse.ArgumentParser) -> None:
    """``--database-url``, ``--postgres``, ``--keep DIR`` and ``--check``."""
    parser.add_argument("--database-url", help="A PostgreSQL database (default: SQLite).")
    parser.add_argument(
        "--postgres", action="store_true", help="Start a throwaway PostgreSQL server."
    )
    parser.add_argument(
        "--keep", type=Path, help="Work in this folder and keep it (a second run reuses it)."
    )
    parser.add_argument("--check", action="store_true", help="Exit 1 when a target is missed.")


def deployment(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    name: str,
    build: Callable[[Path, str | None], CRM],
) -> CRM:
    """The benchmark's deployment: the one kept in ``--keep DIR``, or ``build(root, url)``.

    Without ``--keep`` it lives in a temporary folder; with ``--postgres`` on a
    throwaway server in it. Everything is cleaned up when ``stack`` closes.
    """
    if args.keep:
        root = args.keep
    else:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"crmkit-{name}-"))
        root = Path(scratch) / "crm"
    url = args.database_url
    if args.postgres:
        from crmkit.testing_postgres import PostgresServer

        server = stack.enter_context(PostgresServer(root.parent / "postgres"))
        url = server.create_database(f"{name}_bench")
    if (root / "crmkit.toml").is_file():
        crm = CRM.open(root, entry_points=False)
    else:
        crm = build(root, url)
    stack.callback(crm.engine.dispose)
    return crm
