"""``crmkit audit verify`` and ``crmkit audit show``: the tamper-evident audit log."""

from __future__ import annotations

import json
from typing import Any

import click

from crmkit.cli import WHEN_HELP, State, cli, emit, format_option, limit_option, pass_state, show

DETAIL_WIDTH = 60  # characters of an entry's detail in a table (JSON has all of it)
SHOW_COLUMNS = ("id", "at", "login", "kind", "action", "resource", "allowed", "records", "detail")


@cli.group()
def audit() -> None:
    """The audit log: every access decision and every change, hash-chained. Admins only."""


@audit.command("verify")
@click.option(
    "--head",
    "expect_head",
    metavar="HASH",
    help="A head hash printed by an earlier verify: fail unless the log still holds that entry.",
)
@format_option
@pass_state
def audit_verify(state: State, expect_head: str | None, fmt: str) -> None:
    """Check the hash chain of the whole log; name the first broken entry.

    Exits with 0 and prints the number of entries and the head hash (keep it
    elsewhere: with --head it shows later that no entry was removed from the
    end); a broken chain is an error (exit code 8) naming the first broken
    entry and why it is broken.
    """
    from crmkit.core import audit as auditing
    from crmkit.core.errors import AuditError
    from crmkit.core.model import Role

    with state.session(readonly=True) as s:
        s.require_role(Role.ADMIN)
        result = auditing.verify(s.connection, expect_head=expect_head)
    if not result.ok:
        intact = f"#1-#{result.head_id}" if result.head_id else "none"
        if result.broken_id is None:
            raise AuditError(f"audit log: {result.reason}; the chain itself is intact ({intact})")
        raise AuditError(
            f"audit log broken at entry #{result.broken_id}: {result.reason}; "
            f"entries intact before it: {intact}"
        )
    if fmt == "json":
        emit(result.to_json(), fmt)
        return
    click.echo(f"audit log intact: {result.checked} entries; head {result.head}")


@audit.command("show")
@click.option("--user", metavar="LOGIN", help="Only entries of this acting user.")
@click.option("--since", metavar="WHEN", help="Only from this moment on. " + WHEN_HELP)
@click.option("--resource", metavar="NAME", help="Only about this resource (client, deal ...).")
@click.option("--kind", type=click.Choice(["access", "change"]), help="Only this kind of entry.")
@limit_option("entries")
@format_option
@pass_state
def audit_show(
    state: State,
    user: str | None,
    since: str | None,
    resource: str | None,
    kind: str | None,
    limit: int,
    fmt: str,
) -> None:
    """List audit entries, newest first: who, when, what, which records, allowed or not."""
    from crmkit.core import audit as auditing
    from crmkit.core.model import Role
    from crmkit.core.validation import parse_when

    crm = state.crm()
    when = None if since is None else parse_when(since, crm.tz, field="since")
    with state.session(readonly=True) as s:
        s.require_role(Role.ADMIN)
        filters: dict[str, Any] = {}
        if user is not None:
            found = s.users.find(user)
            # a user's entries outlive the user's row: then the login stored in them finds them
            filters = {"user_id": found.id} if found is not None else {"login": user}
        rows = auditing.entries(
            s.connection, since=when, resource=resource, kind=kind, limit=limit, **filters
        )
    if fmt == "json":
        emit(rows, fmt)
        return
    show([_row(r) for r in rows], fmt, crm.tz, columns=SHOW_COLUMNS)


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry for a table: its records shortened, allowed as yes/no."""
    ids = entry["record_ids"]
    if ids is None:
        records = ""
    elif len(ids) <= 5:
        records = ", ".join(f"#{i}" for i in ids)
    else:
        records = ", ".join(f"#{i}" for i in ids[:3]) + f" ... ({len(ids)} records)"
    detail = json.dumps(entry["detail"], ensure_ascii=False) if entry["detail"] else ""
    if len(detail) > DETAIL_WIDTH:
        detail = detail[: DETAIL_WIDTH - 3] + "..."
    return {
        **entry,
        "allowed": "yes" if entry["allowed"] else "DENIED",
        "records": records,
        "detail": detail,
    }
