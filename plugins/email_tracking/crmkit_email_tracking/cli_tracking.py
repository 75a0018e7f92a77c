"""``crmkit email show`` and ``crmkit email keys``: what was tracked, and the signing keys."""

from __future__ import annotations

from typing import Any

import click

from crmkit.cli import State, emit, format_option, pass_state, show

from .cli import email_group


def _machines(split: dict[str, Any]) -> str:
    machines = split["machines"]
    return ", ".join(f"{k} {v}" for k, v in sorted(machines.items())) or "none"


@email_group.command("show")
@click.argument("message_id", type=int)
@format_option
@pass_state
def show_command(state: State, message_id: int, fmt: str) -> None:
    """Show a message and what its recipient did: opens, clicks, seconds per page.

    People (and Gmail's proxy, which fetches when the reader opens the mail)
    are counted apart from machines: Apple's privacy proxy, link scanners,
    bots. Every event is listed with the reasons for its classification.
    """
    from .summary import summary

    with state.session(readonly=True) as s:
        data = summary(s, message_id)
        tz = s.crm.tz
    if fmt == "json":
        emit(data, fmt)
        return
    head = {
        key: data[key]
        for key in ("id", "client_id", "deal_id", "to", "subject", "status", "sent_at", "opened_at")
    }
    for kind, label in (("opens", "opens"), ("clicks", "clicks"), ("document_views", "views")):
        head[label] = f"{data[kind]['people']} by people; machines: {_machines(data[kind])}"
    show(head, fmt, tz)
    if data["reading"]:
        click.echo()
        emit(data["reading"], fmt, columns=["page", "seconds", "views", "by"], title="Reading")
    if data["events"]:
        click.echo()
        show(
            data["events"],
            fmt,
            tz,
            columns=["at", "kind", "classification", "counted", "link", "reasons"],
            title="Events",
        )


def _admin_only(session: Any) -> None:
    from crmkit import PermissionDenied

    if str(session.user.role) != "admin":
        raise PermissionDenied("only an admin manages the signing keys", field="as_user")


@email_group.group("keys")
def keys_group() -> None:
    """The keys that sign tracking links (the newest signs; all verify)."""


@keys_group.command("list")
@format_option
@pass_state
def keys_list(state: State, fmt: str) -> None:
    """List the signing keys, never their secrets (admins only)."""
    from sqlalchemy import select

    from .tables import KEYS

    crm = state.crm()
    with state.session(readonly=True) as s:
        _admin_only(s)
        table = crm.metadata.tables[KEYS]
        rows = s.connection.execute(
            select(table.c.kid, table.c.created_at).order_by(table.c.kid)
        ).all()
    newest = max((r.kid for r in rows), default=None)
    data = [{"kid": r.kid, "created_at": r.created_at, "signs": r.kid == newest} for r in rows]
    show(data, fmt, crm.tz, columns=["kid", "created_at", "signs"])


@keys_group.command("rotate")
@format_option
@pass_state
def keys_rotate(state: State, fmt: str) -> None:
    """Make a new signing key; links already sent keep working (admins only)."""
    from . import signing

    crm = state.crm()
    with state.session(readonly=True) as s:
        _admin_only(s)
    kid = signing.keys(crm).rotate()
    emit({"kid": kid, "signs": True}, fmt)
