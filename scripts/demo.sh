#!/usr/bin/env bash
# Sets up .venv with crmkit and both plugins, then bootstraps a deployment in
# ./demo on SQLite (the embedded default) and shows it: a team, users, clients
# of two segments with their parameters, a contact person.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -e . -e plugins/segment_b2b -e plugins/email_tracking
export PATH="$PWD/.venv/bin:$PATH"

if [ -f demo/crmkit.toml ]; then rm -rf demo; fi   # a fresh demo each run
set -x
crmkit init demo
cd demo
crmkit plugins
crmkit team add Sales
crmkit team add "Key accounts" --parent Sales
crmkit user add anna --role manager --team "Key accounts" --name "Anna Smirnova"
crmkit user add boris --role head --team Sales --name "Boris Ivanov"
crmkit segment list
crmkit --as anna client add "Volga Distribution" --email buy@volga.example --phone "+7 846 200-10-10" \
  --segment distributor --param turnover=250000000 --param sales_reps=35 \
  --param own_clients=1200 --param warehouse_area=5400 --param 'regions=["Samara","Kazan"]' \
  --source event --requisite tax_id=6312345678
crmkit --as anna client add "Nord Steel" --email procurement@nordsteel.example \
  --segment corporate --param employees=2400 --param offices=6 \
  --param 'equipment=[{"type":"printer","count":140},{"type":"laptop","count":900}]' \
  --source website
crmkit contact add 1 "Irina Petrova" --position "Purchasing director" --email irina@volga.example
crmkit client list
crmkit client show 2
crmkit client list --owner anna --format json
# A duplicate never makes a second card: this fails with a clear message.
crmkit client add "Volga again" --email BUY@volga.example || true
