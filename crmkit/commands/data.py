"""``crmkit export``, ``backup`` and ``restore``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from crmkit.cli import State, _safe_url, cli, emit, format_option, pass_state

EXPORT_KINDS = ("clients", "deals", "interactions")  # crmkit.transfer.export.KINDS
FILE_FORMATS = ("csv", "jsonl")  # crmkit.transfer.export.FORMATS


# -- export -----------------------------------------------------------------------------
@cli.command("export")
@click.argument("kind", type=click.Choice(EXPORT_KINDS))
@click.argument("file", metavar="FILE")
@click.option(
    "--file-format",
    type=click.Choice(FILE_FORMATS),
    help="The file's format (default: from its suffix, .csv or .jsonl; CSV for '-').",
)
@click.option(
    "--flatten-params",
    is_flag=True,
    help="CSV of clients: also one param.NAME column per segment parameter.",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="Text encoding of the file (utf-8-sig helps spreadsheets detect UTF-8).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Rows read from the database per query.",
)
@format_option
@pass_state
def export_command(
    state: State,
    kind: str,
    file: str,
    file_format: str | None,
    flatten_params: bool,
    encoding: str,
    batch_size: int,
    fmt: str,
) -> None:
    """Export every client, deal or interaction you may see to FILE ('-': stdout).

    FILE is CSV or JSON Lines (a .gz suffix compresses it). The rows are read
    in batches as the acting user (--as) and written as they come.
    """
    from crmkit.transfer import export as exporting

    to_stdout = file == "-"
    chosen = exporting.file_format(file, file_format)
    started = time.perf_counter()
    try:
        with state.session(readonly=True) as s:
            rows = exporting.export(
                s,
                kind,
                file,
                format=chosen,
                batch_size=batch_size,
                flatten_params=flatten_params,
                encoding=encoding,
            )
    except BrokenPipeError:  # `crmkit export clients - | head`
        _silence_stdout()
        raise click.exceptions.Exit(1) from None
    info = {
        "kind": kind,
        "rows": rows,
        "file": "-" if to_stdout else str(Path(file).resolve()),
        "file_format": chosen,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if fmt == "json":
        _json(info, err=to_stdout)
        return
    where = "stdout" if to_stdout else file
    click.echo(f"Exported {rows} {_noun(kind, rows)} to {where}", err=to_stdout)


def _noun(kind: str, count: int) -> str:
    return kind if count != 1 else kind[:-1]


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation: no real fd
        pass


def _json(data: Any, *, err: bool) -> None:
    import json

    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    click.echo(text, err=err)


# -- backup and restore -------------------------------------------------------------------
@cli.command("backup")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@format_option
@pass_state
def backup_command(state: State, file: Path, force: bool, fmt: str) -> None:
    """Write a consistent backup of the deployment (database and crmkit.toml) to FILE.

    Only an admin may: a backup holds every record.

    Safe while others keep working: SQLite is copied with its online backup
    API, PostgreSQL with pg_dump. FILE is a .tar.gz archive; bring it back
    with 'crmkit restore FILE DIR'.
    """
    from crmkit.transfer.backup import backup

    info = backup(state.crm(), file, overwrite=force, as_user=state.as_user)
    if fmt == "json":
        emit(info, fmt)
        return
    rows = info["tables"]
    click.echo(
        f"Backed up {state.crm().config.root} to {info['file']} "
        f"({_size(info['bytes'])}, {info['seconds']:.1f}s)"
    )
    click.echo(f"  database: {info['database']} ({info['dialect']})")
    click.echo(f"  schema: {_revisions(info['schema'])}")
    counts = ", ".join(f"{name} {rows[name]}" for name in _MAIN_TABLES if name in rows)
    click.echo(f"  rows: {counts}")


_MAIN_TABLES = ("users", "clients", "contacts", "deals", "interactions", "tasks", "invoices")


def _revisions(schema: list[dict[str, Any]]) -> str:
    return ", ".join(f"{row['branch']} {row['current'] or '(none)'}" for row in schema)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


@cli.command("restore")
@click.argument("file", type=click.Path(path_type=Path))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--database",
    "database_url",
    metavar="URL",
    help="Restore into this database: an empty PostgreSQL database (default: SQLite in DIRECTORY).",
)
@format_option
@pass_state
def restore_command(
    state: State, file: Path, directory: Path, database_url: str | None, fmt: str
) -> None:
    """Make a new deployment in DIRECTORY from the backup FILE.

    Writes crmkit.toml (with the new database), restores and checks the data,
    and upgrades the schema if this crmkit is newer than the backup.
    """
    from crmkit.transfer.backup import read_manifest, restore

    started = time.perf_counter()
    manifest = read_manifest(file)
    crm = restore(file, directory, database_url=database_url, plugins=state.plugins)
    was = {row["branch"]: row["current"] for row in manifest.get("schema") or []}
    try:
        schema = crm.schema_status()
        info = {
            "directory": str(crm.config.root),
            "database": _safe_url(crm.config.database_url),
            "backup": {
                "file": str(file),
                "created_at": manifest["created_at"],
                "crmkit_version": manifest.get("crmkit_version"),
                "dialect": manifest["dialect"],
                "schema": manifest.get("schema"),
            },
            "schema": schema,
            "upgraded": [
                {"branch": r["branch"], "from": was.get(r["branch"]), "to": r["current"]}
                for r in schema
                if r["current"] != was.get(r["branch"])
            ],
            "tables": manifest["tables"],
            "seconds": round(time.perf_counter() - started, 3),
        }
    finally:
        crm.close()
    if fmt == "json":
        emit(info, fmt)
    else:
        click.echo(f"Restored {file} ({manifest['created_at']}) into {info['directory']}")
        click.echo(f"  database: {info['database']}")
        click.echo(f"  schema: {_revisions(schema)}")
        upgraded = info["upgraded"]
        if upgraded:
            steps = [f"{u['branch']} {u['from'] or '(none)'} -> {u['to']}" for u in upgraded]
            click.echo(f"  upgraded: {', '.join(steps)}")
        rows = manifest["tables"]
        counts = ", ".join(f"{name} {rows[name]}" for name in _MAIN_TABLES if name in rows)
        click.echo(f"  rows: {counts}")
        click.echo(f"Next: cd {directory} && crmkit db current")
    if os.environ.get("CRMKIT_DATABASE_URL"):
        click.echo(
            "Warning: CRMKIT_DATABASE_URL is set and overrides the restored crmkit.toml's "
            "database in later commands",
            err=True,
        )
