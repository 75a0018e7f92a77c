"""``crmkit report NAME``: every report a plugin registers, as a command.

The group is lazy: it asks the plugins for their reports (``crmkit_reports``)
only when ``crmkit report`` itself is used, and builds each command from the
report's declaration: its filters (``--period`` ...) and its own options,
which are JSON Schema properties (an ``integer`` becomes an integer option, a
``boolean`` a flag, an ``enum`` a choice).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from crmkit.cli import State, _plain, cli
from crmkit.core.errors import CrmError

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.reports import Report, ReportResult


class ReportGroup(click.Group):
    """A group whose commands are the registered reports."""

    def _reports(self, ctx: click.Context) -> dict[str, Report]:
        state = ctx.find_object(State)
        if state is None:  # pragma: no cover - the root callback always makes one
            return {}
        from crmkit.core.reports import merge_reports

        found: dict[str, Report] = {}
        merge_reports(found, state.plugins.reports())
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._reports(ctx))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        report = self._reports(ctx).get(name)
        return None if report is None else report_command(report)


@cli.group(cls=ReportGroup)
def report() -> None:
    """Reports that plugins register; 'crmkit report NAME --help' shows each one's options."""


def report_command(report: Report) -> click.Command:
    """The click command that runs ``report``."""
    from crmkit.core.reports import FILTERS

    def run(**given: Any) -> None:
        state = click.get_current_context().find_object(State)
        assert state is not None
        fmt, out = given.pop("fmt"), given.pop("out")
        chart = given.pop("chart", None)
        with state.session(readonly=True) as s:
            result = s.report(report.name, **given)
        if chart is not None:
            drawn = report.draw(result, chart)
            click.echo(f"Drew the chart in {drawn}", err=True)
        if out is not None:
            try:
                with open(out, "w", encoding="utf-8", newline="") as handle:
                    _write(result, report, fmt, handle)
            except OSError as exc:
                raise CrmError(f"cannot write {out}: {exc.strerror}", field="out") from None
            click.echo(f"Wrote {len(result.rows)} rows to {out}", err=True)
            return
        _write(result, report, fmt, None)

    params: list[click.Parameter] = []
    for name in report.filters:
        help_text = FILTERS[name]
        if name == "period" and report.default_period:
            help_text += f" Default: {report.default_period}."
        params.append(click.Option([f"--{name}"], help=help_text))
    for name, spec in report.options.items():
        params.append(_option(name, spec))
    params.append(
        click.Option(
            ["--format", "fmt"],
            type=click.Choice(["table", "json", "csv"]),
            default="table",
            show_default=True,
            help="Output format: a table for people, JSON or CSV for programs.",
        )
    )
    params.append(
        click.Option(["--out"], metavar="FILE", help="Write the report to FILE instead of stdout.")
    )
    if report.chart is not None:
        params.append(
            click.Option(
                ["--chart"],
                metavar="FILE",
                help="Also draw the report into FILE (.png or .svg).",
            )
        )
    doc = report.title + (f"\n\n{report.description}" if report.description else "")
    return click.Command(
        report.name, callback=run, params=params, help=doc, short_help=report.title
    )


_CLICK_TYPES: dict[str, Any] = {"integer": int, "number": float, "string": str}


def _option(name: str, spec: dict[str, Any]) -> click.Option:
    """A click option for a report option declared as a JSON Schema property."""
    flag = "--" + name.replace("_", "-")
    help_text = spec.get("description") or spec.get("title") or ""
    if "default" in spec:
        help_text += f" Default: {spec['default']}."
    kind = spec.get("type")
    if kind == "boolean":
        return click.Option(
            [f"{flag}/--no-{name.replace('_', '-')}", name], default=None, help=help_text
        )
    if "enum" in spec:
        # the command line gives text; the report gets the declared value (3, not "3")
        values = {str(v): v for v in spec["enum"]}
        return click.Option(
            [flag, name],
            type=click.Choice(list(values)),
            help=help_text,
            callback=lambda _ctx, _param, given: None if given is None else values[given],
        )
    return click.Option([flag, name], type=_CLICK_TYPES.get(str(kind), str), help=help_text)


def _write(result: ReportResult, report: Report, fmt: str, handle: Any) -> None:
    if fmt == "json":
        data = _plain(result)
        data["title"] = report.title
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
        click.echo(text, file=handle)
        return
    if fmt == "csv":
        import csv

        writer = csv.writer(handle or sys.stdout, lineterminator="\n")
        writer.writerow([c.name for c in result.columns])
        for row in result.rows:
            writer.writerow([_csv_cell(row.get(c.name)) for c in result.columns])
        return
    title = report.title
    if result.period is not None:
        title += f", {result.period.label}"
    # cells by position: two columns may share a heading (they never share a name)
    rows = [[format_cell(row.get(c.name), c.type) for c in result.columns] for row in result.rows]
    from rich.console import Console

    if handle is not None:
        console = Console(file=handle, soft_wrap=False, width=200)
    else:
        console = Console(soft_wrap=False)
    _rich_table(console, title, [c.heading for c in result.columns], rows)
    for key, value in result.summary.items():
        shown = format_cell(value, "number" if isinstance(value, float) else "text")
        click.echo(f"{key.replace('_', ' ')}: {shown}", file=handle)
    for note in result.notes:
        click.echo(note, file=handle)


def _rich_table(console: Any, title: str, headings: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table
    from rich.text import Text  # cells as Text: data such as "[vip] Acme" is not rich markup

    table = Table(title=title)
    for heading in headings:
        table.add_column(heading, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
    if not rows:
        console.print("(none)")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def format_cell(value: Any, kind: str) -> str:
    """A value as a table shows it: money with two decimals, a share as a percentage."""
    if value is None:
        return ""
    if kind == "money":
        return f"{float(value):,.2f}"
    if kind == "percent":
        return f"{float(value) * 100:.1f}%"
    if kind == "number" and isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
