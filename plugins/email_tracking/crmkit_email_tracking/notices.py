"""The plugin's own handler of ``crmkit_email_opened``: a task to call now, and an interaction.

When the client opens a tracked message (or its hosted document), the
deal's owner gets a task due within :data:`CALL_WITHIN` ("the client opened
the proposal: call now"), and the open is logged as an ``email``
interaction of the client and deal, inbound, with the outcome ``opened``
(``proposal_read`` when the document was opened). A pipeline's outcome
rule on either outcome moves the deal like any other interaction's.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from crmkit.core.schema import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import Session

#: How soon the owner should call after the client opened the message.
CALL_WITHIN = dt.timedelta(hours=1)
#: The outcomes the plugin adds to the ``email`` interaction kind.
OUTCOMES = {"opened": "Opened (tracked)", "proposal_read": "Read the proposal (tracked)"}


def task_title(message: dict[str, Any], *, first: bool, document: bool) -> str:
    """The title of the owner's task."""
    if document:
        what = "read the proposal"
    elif message.get("document"):
        what = "opened the proposal email"
    else:
        what = "opened your email"
    again = "" if first else " again"
    return f"The client {what}{again}: call now ({message['subject']})"


def on_opened(session: Session, message: dict[str, Any], first: bool, document: bool) -> None:
    """Give the owner a task to call now, and log the open as an interaction.

    Reading the document right after opening the mail is one occasion to
    call, not two: a reading gets a task only when no open was told before.
    """
    client_id = message["client_id"]
    deal_id = message.get("deal_id")
    if not (document and message.get("notified_at") is not None):
        session.tasks.add(
            task_title(message, first=first, document=document),
            due=utcnow() + CALL_WITHIN,
            client_id=client_id,
            deal_id=deal_id,
            steps=["Call the client while the proposal is fresh", "Log the call and its outcome"],
        )
    topic = "proposal" if (document or message.get("document")) else "followup"
    session.interactions.log(
        client_id,
        "email",
        topic=topic,
        outcome="proposal_read" if document else "opened",
        direction="inbound",
        deal_id=deal_id,
        note=f"message #{message['id']} {'opened' if first else 'opened again'} "
        f"({message['subject']})",
    )
