"""``crmkit plan set|split|list|delete``: KPI targets for users and teams (``s.plans``)."""

from __future__ import annotations

import csv
import sys
from typing import Any

import click

from crmkit.cli import State, cli, emit, format_option, parse_pairs, pass_state

PLAN_COLUMNS = ["id", "kpi", "period", "scope", "user", "team", "target", "split_from", "note"]
PERIOD_HELP = "2026-11, 2026-Q3, 2026 or 2026-01-01..2026-03-31."


@cli.group()
def plan() -> None:
    """Plans: a KPI's target for a user or a team over a period ('crmkit report plan')."""


def _row(p: Any) -> dict[str, Any]:
    return {
        "id": p.id,
        "kpi": p.kpi,
        "period": p.period,
        "scope": p.scope,
        "user": p.user,
        "team": p.team,
        "target": p.target,
        "split_from": p.split_from,
        "note": p.note,
    }


def _line(p: Any) -> str:
    who = f"user {p.user}" if p.scope == "user" else f"team {p.team}"
    return f"Plan #{p.id}: {p.kpi} {p.target} for {who}, {p.period}"


@plan.command("set")
@click.option("--kpi", required=True, metavar="KPI", help="The KPI's id ('crmkit kpi list').")
@click.option("--period", required=True, help=PERIOD_HELP)
@click.option("--target", required=True, help="The target: a number of zero or more.")
@click.option("--user", metavar="LOGIN", help="The planned user.")
@click.option("--team", metavar="TEAM", help="The planned team.")
@click.option("--note", metavar="TEXT", help="Why this target.")
@format_option
@pass_state
def plan_set(
    state: State,
    kpi: str,
    period: str,
    target: str,
    user: str | None,
    team: str | None,
    note: str | None,
    fmt: str,
) -> None:
    """Set the target of KPI over a period for --user or --team (again: replaces it).

    Admins may set every plan, heads the plans of their team and of the
    teams nested in it (the default access policies).
    """
    with state.session() as s:
        done = s.plans.set(kpi, period=period, target=target, user=user, team=team, note=note)
    if fmt == "table":
        click.echo(_line(done))
        return
    emit(done, fmt)


@plan.command("split")
@click.option("--kpi", required=True, metavar="KPI", help="The KPI's id.")
@click.option("--period", required=True, help=PERIOD_HELP)
@click.option("--team", required=True, metavar="TEAM", help="The team whose plan is split.")
@click.option(
    "--weight",
    "weights",
    multiple=True,
    metavar="LOGIN=N",
    help="A member's weight (repeat; only the members named get a share). "
    "Default: equal shares for every active member.",
)
@format_option
@pass_state
def plan_split(
    state: State, kpi: str, period: str, team: str, weights: tuple[str, ...], fmt: str
) -> None:
    """Divide TEAM's plan of KPI among its active members, to the cent.

    The shares add up exactly to the team's target; each becomes the
    member's plan, and an earlier split of the same plan is replaced.
    """
    given = parse_pairs(weights, option="weights") if weights else None
    with state.session() as s:
        made = s.plans.split(kpi, period=period, team=team, weights=given)
    if fmt == "table":
        for p in made:
            click.echo(_line(p))
        return
    emit(made, fmt)


@plan.command("list")
@click.option("--period", help="Only plans whose period overlaps this one.")
@click.option("--kpi", metavar="KPI", help="Only plans of this KPI.")
@click.option("--user", metavar="LOGIN", help="Only this user's plans.")
@click.option("--team", metavar="TEAM", help="Only plans of this team and the teams inside it.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output format: a table for people, JSON or CSV for programs.",
)
@pass_state
def plan_list(
    state: State,
    period: str | None,
    kpi: str | None,
    user: str | None,
    team: str | None,
    fmt: str,
) -> None:
    """List the plans you may read."""
    with state.session(readonly=True) as s:
        found = s.plans.list(period=period, kpi=kpi, user=user, team=team)
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(PLAN_COLUMNS)
        for p in found:
            row = _row(p)
            writer.writerow(["" if row[c] is None else row[c] for c in PLAN_COLUMNS])
        return
    if fmt == "json":
        emit(found, fmt)
        return
    emit([_row(p) for p in found], fmt, columns=PLAN_COLUMNS)


@plan.command("delete")
@click.argument("plan_id", metavar="ID", type=int)
@format_option
@pass_state
def plan_delete(state: State, plan_id: int, fmt: str) -> None:
    """Delete the plan ID (plans split from it stay, as plans of their own)."""
    with state.session() as s:
        gone = s.plans.delete(plan_id)
    if fmt == "table":
        click.echo(f"Deleted p{_line(gone)[1:]}")
        return
    emit(gone, fmt)
