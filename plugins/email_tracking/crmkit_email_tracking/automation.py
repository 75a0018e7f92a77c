"""The automation action ``send_email``: a rule sends a message from a template.

A rule in ``crmkit.toml``::

    [automation.rules.thank_paid]
    event = "invoice.status_changed"
    when = { properties = { invoice = { properties = { status = { const = "paid" } } } } }
    actions = [{ do = "send_email", template = "thank_you" }]

Parameters:

``template`` (required)
    The email template (the deployment's, else the plugin's: ``proposal``,
    ``thank_you``, ``presentation``).
``document``
    The document to host with the message (a name a plugin renders through
    ``crmkit_render_document``), or ``false`` for none; without it, the
    template's own (``proposal`` for the template ``proposal``).
``to``
    ``"client"`` (the default: the client's address, else its first contact
    with one) or a contact's id.
``at``
    When to send it: a delay from now (``"+1h"``, ``"+30m"``, ``"+2d"``) or
    a time (``"2026-12-01T09:00"``; naive times are in the deployment's time
    zone). Without it, as soon as the worker runs.

The message is about the event's client (``client``, else the deal's) and
its deal, if the event has one; its sender is the user the rule acts as.
The action returns ``{"message": ID}``.

**Sent after commit.** The action does not talk to the SMTP server: it
*queues* the message with :func:`.outbox.send`, in the transaction of the
change that fired the rule (in the rule's savepoint). The worker (``crmkit
email worker``) only sees committed messages, so an email goes out only if
the change that triggered it is committed: a rule that fails later, or a
triggering change rolled back, leaves no message, and ``crmkit automation
test`` (a dry run, rolled back) sends nothing. That is how automation keeps
its "outgoing effects after commit" promise without a second queue. The
worker then sends it and logs the ``email`` interaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.automation import Action, Context

#: The JSON Schema of the action's parameters (checked when the deployment opens).
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["template"],
    "properties": {
        "template": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"},
        "document": {
            "anyOf": [
                {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"},
                {"const": False},
            ]
        },
        "to": {"anyOf": [{"const": "client"}, {"type": "integer", "minimum": 1}]},
        "at": {"type": "string", "minLength": 1},
    },
}


def send_email(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Queue a message from ``params["template"]`` to the event's client (sent after commit)."""
    from crmkit.core.errors import ValidationError

    from .outbox import send

    client = context.payload.get("client") or {}
    deal = context.payload.get("deal") or {}
    client_id = client.get("id") or deal.get("client_id")
    if client_id is None:
        raise ValidationError("the event has no client to send an email to", field="to")
    to = params.get("to", "client")
    message = send(
        context.session,
        int(client_id),
        template=params["template"],
        deal_id=deal.get("id"),
        contact_id=None if to == "client" else int(to),
        at=params.get("at"),
        document=params.get("document"),
    )
    return {"message": message.id}


def actions() -> list[Action]:
    """The plugin's automation actions."""
    from crmkit.core.automation import Action

    return [
        Action(
            "send_email",
            send_email,
            SCHEMA,
            "Send an email from a template to the client (queued; sent after commit)",
        )
    ]
