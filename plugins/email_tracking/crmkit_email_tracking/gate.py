"""The ``proposal_read`` gate: a stage marked so takes a deal only once its proposal was read.

A deployment marks a stage (``marks = ["proposal_read"]`` in its pipeline
definition), typically negotiation: the deal enters it only if the client
opened the document hosted with a message sent about this deal, and the open
counts (a person's, not a link scanner's). An outcome rule on the
``email`` outcome ``proposal_read`` can move the deal there at that moment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, select

from crmkit import Problem

from .tables import EVENTS, OUTBOX

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import Deal, Session

#: The stage mark this gate looks for.
MARK = "proposal_read"


def read_problems(session: Session, deal: Deal) -> list[Problem]:
    """A problem unless the client read a proposal sent about ``deal``."""
    outbox, events = session.table(OUTBOX), session.table(EVENTS)
    read = session.connection.execute(
        select(
            exists().where(
                and_(
                    outbox.c.deal_id == deal.id,
                    events.c.message_id == outbox.c.id,
                    events.c.kind == "page_view",
                    events.c.counted.is_(True),
                )
            )
        )
    ).scalar()
    if read:
        return []
    return [
        Problem(
            "deal",
            "the client has not read the proposal yet (no tracked reading of a proposal "
            f"sent about deal #{deal.id}); send it with 'crmkit email send --deal {deal.id}'",
        )
    ]
