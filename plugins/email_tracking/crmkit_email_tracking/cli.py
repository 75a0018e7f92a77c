"""The plugin's commands: the ``crmkit email`` group.

Added to ``crmkit`` through the ``crmkit_cli`` hook (:func:`register`).
Other modules of the plugin add their commands to :data:`email_group`
(``@email_group.command("show")``); this module imports them at its end, so
the group is whole whoever imports it (``crmkit``, the docs' sphinx-click).

Start-up stays light: Jinja2, SQLAlchemy and smtplib are imported inside the
commands.
"""

from __future__ import annotations

from typing import Any

import click

from crmkit.cli import WHEN_HELP, State, emit, format_option, limit_option, pass_state, show

LIST_COLUMNS = [
    "id",
    "client_id",
    "to_address",
    "template",
    "subject",
    "status",
    "send_at",
    "attempts",
    "sent_at",
    "last_error",
]


@click.group("email")
def email_group() -> None:
    """Proposals by email: send, schedule, deliver and track them."""


def register(cli: click.Group) -> None:
    """Add the ``email`` group (with every module's commands) to the root ``cli``."""
    cli.add_command(email_group)


def _message_view(message: Any) -> dict[str, Any]:
    """A stored message for output: everything but the bodies and the token."""
    from crmkit.core.model import to_json

    data = to_json(message)
    for key in ("body_html", "body_text", "token"):
        data.pop(key, None)
    return data  # type: ignore[no-any-return]


@email_group.command("send")
@click.argument("client_id", type=int)
@click.option("--template", "-t", required=True, help="The template: proposal, thank_you ...")
@click.option("--deal", "deal_id", type=int, help="The deal the message is about.")
@click.option("--to", "contact_id", type=int, metavar="CONTACT_ID", help="Send to this contact.")
@click.option("--at", metavar="WHEN", help="When to send it; " + WHEN_HELP)
@click.option("--document", metavar="NAME", help="Host this document with the message.")
@click.option(
    "--no-document", is_flag=True, help="Host no document (the proposal template hosts one)."
)
@format_option
@pass_state
def send_command(
    state: State,
    client_id: int,
    template: str,
    deal_id: int | None,
    contact_id: int | None,
    at: str | None,
    document: str | None,
    no_document: bool,
    fmt: str,
) -> None:
    """Queue a message from a template to CLIENT_ID (the worker delivers it)."""
    from crmkit.core.errors import ValidationError

    from . import outbox

    if document and no_document:
        raise ValidationError("give --document NAME or --no-document, not both", field="document")
    crm = state.crm()
    with state.session() as s:
        message = outbox.send(
            s,
            client_id,
            template=template,
            deal_id=deal_id,
            contact_id=contact_id,
            at=at,
            document=False if no_document else document,
        )
    if fmt == "table":
        when = message.send_at.astimezone(crm.tz).strftime("%Y-%m-%d %H:%M %Z")
        click.echo(
            f"Queued message #{message.id} to {message.to_address} ({message.template}), "
            f"to be sent at {when}"
        )
        return
    emit(_message_view(message), fmt)


@email_group.command("list")
@click.option("--status", type=click.Choice(["queued", "sending", "sent", "failed"]))
@click.option("--client", "client_id", type=int, help="Only this client's messages.")
@limit_option("messages")
@format_option
@pass_state
def list_command(
    state: State, status: str | None, client_id: int | None, limit: int, fmt: str
) -> None:
    """The newest messages of the outbox (of the clients you may see)."""
    from . import outbox

    crm = state.crm()
    with state.session(readonly=True) as s:
        messages = outbox.list_messages(s, status=status, client_id=client_id, limit=limit)
    rows = [_message_view(m) for m in messages]
    show(rows, fmt, crm.tz, columns=LIST_COLUMNS if fmt == "table" else None, title="Outbox")


@email_group.command("worker")
@click.option("--once", is_flag=True, help="Deliver what is due now, then stop.")
@click.option(
    "--poll",
    type=click.FloatRange(0.05, 3600),
    default=5.0,
    show_default=True,
    help="Seconds between looks for due messages.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Messages claimed at a time.",
)
@format_option
@pass_state
def worker_command(state: State, once: bool, poll: float, batch: int, fmt: str) -> None:
    """Deliver due messages by SMTP (until SIGTERM or Ctrl-C, or --once).

    Prints a line per message: sent, retry (a temporary failure, tried again
    later), failed. With --format json: a JSON object per line (--once: one
    JSON list).
    """
    import json

    from crmkit.core.model import to_json

    from . import outbox

    crm = state.crm()
    tz = crm.tz

    def report(outcome: outbox.Outcome) -> None:
        if fmt == "json":
            if not once:
                click.echo(json.dumps(to_json(outcome), default=str), nl=True)
            return
        line = f"{outcome.status} #{outcome.message_id} to {outcome.to_address}"
        if outcome.status == "retry" and outcome.retry_at is not None:
            line += f" (attempt {outcome.attempts}; next at "
            line += f"{outcome.retry_at.astimezone(tz).strftime('%Y-%m-%d %H:%M:%S')})"
        if outcome.reply:
            line += f": {outcome.reply}"
        click.echo(line)

    def trouble(error: Exception) -> None:
        click.echo(f"Error: {error} (trying again in {poll:g}s)", err=True)

    done = outbox.run_worker(
        crm, once=once, poll=poll, limit=batch, on_outcome=report, on_error=trouble
    )
    if fmt == "json":
        if once:
            emit([to_json(o) for o in done], fmt)
        return
    counts = {s: sum(1 for o in done if o.status == s) for s in ("sent", "retry", "failed")}
    click.echo(
        f"{counts['sent']} sent, {counts['retry']} to retry, {counts['failed']} failed",
        err=not once,
    )


# The other modules' commands join the group (they import it from here).
from . import cli_tracking  # noqa: E402, F401
