"""``crmkit import``: clients (with contacts), deals (with stage history) and interactions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from crmkit.cli import State, cli, emit, format_option, pass_state


@cli.command("import")
@click.argument("kind", type=click.Choice(["clients", "deals", "interactions"]))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--mapping",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML file mapping the file's columns to fields, values and date formats.",
)
@click.option(
    "--on-error",
    type=click.Choice(["skip", "abort"]),
    default="skip",
    show_default=True,
    help="skip: store the good rows and report the bad ones; abort: store nothing "
    "if any row is bad (every bad row is still reported).",
)
@click.option(
    "--errors-to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every rejected row here (CSV: line, column, reason, row).",
)
@click.option(
    "--update-existing",
    is_flag=True,
    help="Merge rows that match a stored record (by external id, else a client's email, "
    "a deal's client, pipeline, title and opening time, an interaction's client, kind, "
    "time, user, topic and outcome) into it, instead of reporting them. A deal's stage "
    "history is never rewritten.",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="The file's encoding, e.g. cp1251 or latin-1.",
)
@click.option(
    "--file-format",
    type=click.Choice(["csv", "jsonl"]),
    help="The file's format (default: from its suffix; .jsonl/.ndjson are JSON Lines).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=5000,
    show_default=True,
    help="Rows per transaction.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar (default: when stderr is a terminal).",
)
@format_option
@pass_state
def import_command(
    state: State,
    kind: str,
    file: Path,
    mapping: Path | None,
    on_error: str,
    errors_to: Path | None,
    update_existing: bool,
    encoding: str,
    file_format: str | None,
    batch_size: int,
    progress: bool | None,
    fmt: str,
) -> None:
    """Import KIND (clients, deals or interactions) from FILE, a CSV or JSON Lines file.

    Rows are checked and written in batches; a row that matches a stored
    record (by external id, or what identifies it without one) is never
    doubled. Running the same import again changes nothing; rerunning an
    interrupted one completes it.

    Deals carry their stage history: a stage.NAME column holds the date the
    deal entered stage NAME (JSON Lines: "history": [{"stage": ..., "at": ...}]).
    Imported history is not checked against the stages' entry gates, and
    imported interactions do not apply outcome rules or plugin effects: both
    happened already.
    """
    from crmkit.transfer.importer import import_file

    crm = state.crm()
    show_bar = sys.stderr.isatty() if progress is None else progress
    bar = _Bar(file) if show_bar else None
    try:
        result = import_file(
            crm,
            kind,
            file,
            as_user=state.as_user,
            mapping=mapping,
            on_error=on_error,
            errors_to=errors_to,
            update_existing=update_existing,
            batch_size=batch_size,
            encoding=encoding,
            file_format=file_format,
            progress=bar.update if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()
    summary = {
        "kind": result.kind,
        "read": result.read,
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "rejected": result.rejected,
        "aborted": result.aborted,
        "seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows_per_second),
        "errors": [{"line": e.line, "column": e.column, "reason": e.reason} for e in result.errors],
        "errors_to": None if errors_to is None else str(errors_to),
    }
    if fmt == "json":
        emit(summary, fmt)
    else:
        _print_summary(summary)
    if result.aborted:
        raise click.exceptions.Exit(2)


def _print_summary(summary: dict[str, Any]) -> None:
    verb = "Aborted: nothing was written." if summary["aborted"] else "Imported"
    click.echo(
        f"{verb} {summary['kind']}: read {summary['read']}, inserted {summary['inserted']}, "
        f"updated {summary['updated']}, unchanged {summary['unchanged']}, "
        f"rejected {summary['rejected']} ({summary['seconds']} s, "
        f"{summary['rows_per_second']} rows/s)"
    )
    for error in summary["errors"][:10]:
        where = f"line {error['line']}" + (
            f", column {error['column']!r}" if error["column"] else ""
        )
        click.echo(f"  {where}: {error['reason']}", err=True)
    more = summary["rejected"] - min(10, len(summary["errors"]))
    if more > 0:
        target = summary["errors_to"] or "a file with --errors-to"
        click.echo(f"  ... and {more} more rejected rows: see {target}", err=True)


class _Bar:
    """A rich progress bar on stderr: rows read, rows per second, bytes of the file."""

    def __init__(self, file: Path) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]importing[/]"),
            BarColumn(),
            TextColumn("{task.fields[rows]} rows, {task.fields[rate]} rows/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("import", total=None, rows=0, rate=0)
        self.progress.start()

    def update(self, result: Any) -> None:
        self.progress.update(self.task, rows=result.read, rate=round(result.rows_per_second))

    def close(self) -> None:
        self.progress.stop()
