#!/usr/bin/env bash
# The whole test suite: tox runs the tests on SQLite and on PostgreSQL, then
# lint (ruff, mypy) and the docs build. Extra arguments go to tox, e.g.
#   bash scripts/test.sh -e sqlite -- -k clients
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Debian's PostgreSQL server binaries, for the PostgreSQL run (the tests start
# their own throwaway server on 127.0.0.1; nothing else is used).
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing Debian's postgresql" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "scripts/test.sh: PostgreSQL is missing; install it with: sudo apt-get install postgresql" >&2
    exit 1
  fi
fi

# Debian's Chromium, for the tests that open mail and documents in a real browser
# (headless, driven by Playwright; CRMKIT_CHROMIUM names another binary).
if [ -z "${CRMKIT_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing Debian's chromium" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "scripts/test.sh: Chromium is missing; install it with: sudo apt-get install chromium" >&2
    exit 1
  fi
fi

if ! "$PY" -m tox --version >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --disable-pip-version-check 'tox>=4.11'
fi
exec "$PY" -m tox "$@"
