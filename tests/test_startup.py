"""`crmkit --help` starts fast: no database driver, server or template engine."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "sqlalchemy",
    "sqlite3",
    "psycopg",
    "alembic",
    "jsonschema",
    "rich",
    "jinja2",
    "starlette",
    "uvicorn",
    "attrs",
    "cattrs",
)


def test_help_imports_nothing_heavy():
    code = (
        "import sys, json\n"
        "from crmkit.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert "Usage: crmkit" in result.stdout
    assert sorted(m for m in HEAVY if m in loaded) == []
