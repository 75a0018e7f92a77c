"""What a recipient did with a message: opens, clicks, seconds per page; people, machines apart.

:func:`summary` is what ``crmkit email show ID`` prints. Counted events (a
person's, or Gmail's proxy fetching for a reader) and machine events (Apple's
privacy proxy, link scanners, bots) are kept apart everywhere: the totals,
the clicks, the reading time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from .tables import CLASSIFICATIONS, EVENTS, PAGE_TIME, VIEWS

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import Session


def summary(session: Session, message_id: int) -> dict[str, Any]:
    """The message (as the acting user may see it) and everything tracked about it."""
    from .outbox import get

    message = get(session, message_id)  # NotFound for a message of a client not visible
    conn = session.connection
    events = session.table(EVENTS)
    views = session.table(VIEWS)
    page_time = session.table(PAGE_TIME)
    rows = conn.execute(
        select(events).where(events.c.message_id == message.id).order_by(events.c.at, events.c.id)
    ).all()
    by_kind: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = by_kind.setdefault(row.kind, dict.fromkeys(CLASSIFICATIONS, 0))
        counts[row.classification] = counts.get(row.classification, 0) + 1
    reading = conn.execute(
        select(
            page_time.c.page,
            views.c.classification,
            func.sum(page_time.c.seconds).label("seconds"),
            func.count(page_time.c.view_id).label("views"),
        )
        .select_from(page_time.join(views, views.c.id == page_time.c.view_id))
        .where(page_time.c.message_id == message.id)
        .group_by(page_time.c.page, views.c.classification)
        .order_by(page_time.c.page)
    ).all()
    human_kinds = ("human", "gmail_proxy")
    return {
        "id": message.id,
        "client_id": message.client_id,
        "deal_id": message.deal_id,
        "to": message.to_address,
        "subject": message.subject,
        "status": message.status,
        "sent_at": message.sent_at,
        "opened_at": message.opened_at,
        "opens": _split(by_kind.get("open")),
        "clicks": _split(by_kind.get("click")),
        "document_views": _split(by_kind.get("page_view")),
        "reading": [
            {
                "page": r.page,
                "seconds": round(float(r.seconds), 1),
                "views": r.views,
                "by": "people" if r.classification in human_kinds else r.classification,
            }
            for r in reading
        ],
        "events": [
            {
                "at": r.at,
                "kind": r.kind,
                "classification": r.classification,
                "counted": bool(r.counted),
                "link": r.data.get("url") if r.kind == "click" else None,
                "reasons": "; ".join(r.data.get("reasons") or []),
            }
            for r in rows
        ],
    }


def _split(counts: dict[str, int] | None) -> dict[str, Any]:
    """``{"people": N, "machines": {classification: N}}`` of one kind of event."""
    counts = counts or {}
    people = counts.get("human", 0) + counts.get("gmail_proxy", 0)
    machines = {k: v for k, v in counts.items() if k not in ("human", "gmail_proxy") and v}
    return {"people": people, "machines": machines}
