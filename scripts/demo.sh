#!/usr/bin/env bash
# Sets up .venv with crmkit and both plugins, then bootstraps a deployment in
# ./demo on SQLite (the embedded default) filled with a seeded year of a sales
# department (crmkit init --sample), and shows crmkit's main job on it: clients
# with segment parameters, the B2B pipeline, a call that moves a deal, stalled
# deals and overdue tasks, and the access policies that protect the base.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -e . -e plugins/segment_b2b -e plugins/email_tracking
export PATH="$PWD/.venv/bin:$PATH"

if [ -f demo/crmkit.toml ]; then rm -rf demo; fi   # a fresh demo each run
set -x
crmkit init demo --sample
cd demo
crmkit plugins
crmkit user list
crmkit pipeline show b2b

# A new client of the distributor segment, its contact, and a deal that a call moves.
crmkit --as a.petrenko client add "Volga Distribution" --email buy@volga.example \
  --phone "+7 846 200-10-10" --segment distributor --param turnover=250000000 \
  --param sales_reps=35 --param own_clients=1200 --param warehouse_area=5400 \
  --param 'regions=["Samara","Kazan"]' --source event --requisite tax_id=6312345678
client=$(crmkit client list --search "Volga Distribution" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
crmkit contact add "$client" "Irina Petrova" --position "Purchasing director" --email irina@volga.example
deal=$(crmkit --as a.petrenko deal open "$client" --pipeline b2b --amount 1200000 --title "Printers for resale" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
crmkit --as a.petrenko log call "$client" --deal "$deal" --direction outbound --topic first_contact --outcome meeting_scheduled --note "Meeting on Tuesday"
# Asked for a proposal: the gate wants the needs card first (refused, listing what is missing).
crmkit --as a.petrenko log meeting "$client" --deal "$deal" --topic presentation --outcome proposal_requested
crmkit --as a.petrenko proposal render "$client" --deal "$deal" || true
crmkit --as a.petrenko needs set "$client" budget=3000000 authority=decision_maker \
  "need=Printers and cartridges to resell in Samara" timing=this_quarter monthly_volume=120 target_margin=20
crmkit offer "$client"
crmkit --as a.petrenko proposal render "$client" --deal "$deal" --out "proposal-$client.html"
crmkit deal show "$deal"
crmkit report abcxyz --period last-12-months | head -25

# What the head of sales looks at every morning.
crmkit deal list --stalled --limit 10
crmkit overdue --limit 10
# A duplicate never makes a second card: this fails with a clear message.
crmkit client add "Volga again" --email BUY@volga.example || true

# The base is protected: a manager lists only their clients and may not export
# (refused, exit 5), the policies explain every decision, and every access is in
# a tamper-evident audit log.
crmkit --as a.petrenko client list --limit 5
crmkit --as a.petrenko export clients - || true
crmkit policy check a.petrenko export client "$client"
crmkit policy sql a.petrenko read client
crmkit audit verify
