"""``crmkit user deactivate|activate`` and ``crmkit user token create|list|revoke``."""

from __future__ import annotations

from typing import Any

import click

from crmkit.cli import State, emit, format_option, pass_state, show, user

TOKEN_COLUMNS = ["id", "user", "name", "status", "created_at", "expires_at", "last_used_at"]


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


# -- deactivation ----------------------------------------------------------------------
@user.command("deactivate")
@click.argument("login")
@click.option(
    "--reassign-to",
    metavar="LOGIN",
    help="The active user who takes over LOGIN's clients, open deals and open tasks "
    "(needed when LOGIN has any).",
)
@click.option("--note", metavar="TEXT", help="Why, recorded with the events.")
@format_option
@pass_state
def user_deactivate(
    state: State, login: str, reassign_to: str | None, note: str | None, fmt: str
) -> None:
    """End LOGIN's access at once and pass their work on. Only an admin may.

    In one transaction: LOGIN can no longer open a session, every API token
    of theirs is revoked (a script or server using one is refused at its
    next request), and their clients, open deals and open tasks pass to
    --reassign-to; each reassigned record gets a 'reassigned' event. Won and
    lost deals and done tasks keep their owner: past sales stay attributed
    to whoever made them. The deployment's admin and the last active admin
    cannot be deactivated. 'crmkit user activate LOGIN' undoes the flag only.
    """
    with state.session() as s:
        done = s.users.deactivate(login, reassign_to=reassign_to, note=note)
    if fmt == "json":
        emit(done, fmt)
        return
    click.echo(
        f"Deactivated {done['user']}: access ended, "
        f"{_plural(done['tokens_revoked'], 'token')} revoked."
    )
    if done["reassigned_to"] is not None:
        click.echo(
            f"Passed to {done['reassigned_to']}: {_plural(done['clients'], 'client')}, "
            f"{_plural(done['deals'], 'open deal')}, {_plural(done['tasks'], 'open task')} "
            "(closed deals and done tasks keep their owner)."
        )


@user.command("activate")
@click.argument("login")
@click.option("--note", metavar="TEXT", help="Why, recorded with the event.")
@format_option
@pass_state
def user_activate(state: State, login: str, note: str | None, fmt: str) -> None:
    """Let the deactivated user LOGIN work again. Only an admin may.

    Their old tokens stay revoked (make new ones with 'crmkit user token
    create'), and what was passed on at deactivation stays with its new owners.
    """
    with state.session() as s:
        again = s.users.activate(login, note=note)
    if fmt == "json":
        emit(again, fmt)
        return
    click.echo(
        f"Activated {again.login}; their old tokens stay revoked "
        f"('crmkit user token create {again.login}' makes a new one)."
    )


# -- API tokens -----------------------------------------------------------------------------
@user.group("token")
def token() -> None:
    """API tokens: how scripts and servers sign in as a user (crmkit --token TOKEN ...).

    Every user may manage their own tokens, an admin anyone's.
    """


@token.command("create")
@click.argument("login")
@click.option(
    "--name", default="default", show_default=True, help="What the token is for (a label)."
)
@click.option(
    "--expires-days",
    type=click.IntRange(1, 3650),
    metavar="DAYS",
    help="The token stops working after this many days (default: never).",
)
@format_option
@pass_state
def token_create(state: State, login: str, name: str, expires_days: int | None, fmt: str) -> None:
    """Make an API token that acts as LOGIN, and print it once.

    Only its hash is stored: copy the token now, it will not be shown again.
    The token goes to standard output alone (TOKEN=$(crmkit user token create
    LOGIN) keeps it), the messages to standard error.
    """
    with state.session() as s:
        secret, made = s.tokens.create(login, name=name, expires_in_days=expires_days)
        tz = s.crm.tz
    if fmt == "json":
        emit({"token": secret, **_row(made)}, fmt)
        return
    expires = "no expiry" if made.expires_at is None else f"expires {_when(made.expires_at, tz)}"
    click.echo(f"Created token #{made.id} {made.name!r} for {made.user} ({expires}).", err=True)
    click.echo(secret)
    click.echo("Copy it now: it will not be shown again (crmkit keeps only its hash).", err=True)


@token.command("list")
@click.argument("login", required=False)
@format_option
@pass_state
def token_list(state: State, login: str | None, fmt: str) -> None:
    """List the tokens of LOGIN (default: your own; an admin's: everyone's).

    Revoked and expired tokens are listed too, with their status.
    """
    with state.session(readonly=True) as s:
        rows = [_row(t) for t in s.tokens.list(login)]
        tz = s.crm.tz
    show(rows, fmt, tz, columns=TOKEN_COLUMNS)


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@format_option
@pass_state
def token_revoke(state: State, token_id: int, fmt: str) -> None:
    """Revoke the token ID: it stops working at once."""
    with state.session() as s:
        revoked = s.tokens.revoke(token_id)
    if fmt == "json":
        emit(_row(revoked), fmt)
        return
    click.echo(f"Revoked token #{revoked.id} {revoked.name!r} of {revoked.user}.")


def _row(made: Any) -> dict[str, Any]:
    from crmkit.core.model import to_json

    data: dict[str, Any] = to_json(made)
    return data


def _when(value: Any, tz: Any) -> str:
    return str(value.astimezone(tz).strftime("%Y-%m-%d %H:%M"))
