"""``crmkit lead key create|list|revoke``: the API keys of web lead forms (``POST /api/leads``)."""

from __future__ import annotations

from typing import Any

import click

from crmkit.cli import State, cli, emit, format_option, pass_state, show

KEY_COLUMNS = ["id", "name", "status", "created_at", "created_by", "last_used_at", "revoked_at"]


@cli.group("lead")
def lead() -> None:
    """Web leads: what a website's form posts to POST /api/leads of 'crmkit serve'."""


@lead.group("key")
def key() -> None:
    """The deployment's lead API keys, stored hashed. Only an admin manages them.

    A key may only send leads: put it in the website's form, not a user's
    API token.
    """


@key.command("create")
@click.option(
    "--name", default="website", show_default=True, help="Where the key is used (a label)."
)
@format_option
@pass_state
def key_create(state: State, name: str, fmt: str) -> None:
    """Make a lead API key and print it once.

    Only its hash is stored: copy the key now, it will not be shown again.
    The key goes to standard output alone (KEY=$(crmkit lead key create)
    keeps it), the messages to standard error.
    """
    from crmkit.plugins.leads_impl import LeadKeys

    with state.session() as s:
        secret, made = LeadKeys(s).create(name)
    if fmt == "json":
        emit({"key": secret, **_row(made)}, fmt)
        return
    click.echo(f"Created lead key #{made.id} {made.name!r}.", err=True)
    click.echo(secret)
    click.echo("Copy it now: it will not be shown again (crmkit keeps only its hash).", err=True)


@key.command("list")
@format_option
@pass_state
def key_list(state: State, fmt: str) -> None:
    """List the lead API keys, revoked ones too (never the keys themselves)."""
    from crmkit.plugins.leads_impl import LeadKeys

    with state.session(readonly=True) as s:
        rows = [_row(k) for k in LeadKeys(s).list()]
        tz = s.crm.tz
    show(rows, fmt, tz, columns=KEY_COLUMNS)


@key.command("revoke")
@click.argument("key_id", metavar="ID", type=int)
@format_option
@pass_state
def key_revoke(state: State, key_id: int, fmt: str) -> None:
    """Revoke the lead key ID: the next lead sent with it is refused (401)."""
    from crmkit.plugins.leads_impl import LeadKeys

    with state.session() as s:
        revoked = LeadKeys(s).revoke(key_id)
    if fmt == "json":
        emit(_row(revoked), fmt)
        return
    click.echo(f"Revoked lead key #{revoked.id} {revoked.name!r}.")


def _row(made: Any) -> dict[str, Any]:
    from crmkit.core.model import to_json

    data: dict[str, Any] = to_json(made)
    return data
