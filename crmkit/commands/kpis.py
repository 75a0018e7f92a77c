"""``crmkit kpi list``: the KPIs plugins registered (``crmkit_kpis``).

Their values are the ``kpi`` report (``crmkit report kpi``), and plans and
bonuses are computed from them.
"""

from __future__ import annotations

import click

from crmkit.cli import State, cli, emit, format_option, pass_state

KPI_COLUMNS = ["id", "title", "unit", "direction", "kind", "per", "source"]


@cli.group("kpi")
def kpi() -> None:
    """KPIs: what is measured per person and team (values: crmkit report kpi)."""


@kpi.command("list")
@click.option("--kind", type=click.Choice(["result", "process"]), help="Only KPIs of this kind.")
@format_option
@pass_state
def kpi_list(state: State, kind: str | None, fmt: str) -> None:
    """List the KPIs: id, title, unit, whether higher or lower is better, result or process.

    ``per`` names the KPI that divides a ratio KPI; ``source`` is the rows it
    is computed from (one SQL statement per source for a whole team).
    """
    found = [k.describe() for k in state.crm().kpis.values() if kind in (None, k.kind)]
    emit(found, fmt, columns=KPI_COLUMNS if fmt == "table" else None)
