"""The needs-and-expectations card: BANT plus the segment's own questions.

Every client of a B2B segment gets one card, stored in ``b2b_needs``. Its
schema (:func:`needs_schema`) is BANT (budget, authority, need, timing)
followed by the segment's own fields, the ``needs`` setting of the segment,
which a deployment extends under ``[segments.NAME.needs]`` in
``crmkit.toml``. As with segment parameters, saving checks the values given
and the card may stay incomplete; the proposal gate asks for the required
fields (:func:`missing`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from attrs import frozen

from .segments import BANT, BANT_PROPERTIES, JSON_SCHEMA_DIALECT

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import Client, Segment, Session


@frozen
class NeedsCard:
    """A client's needs card as stored."""

    client_id: int
    data: dict[str, Any]
    updated_at: dt.datetime | None = None
    updated_by: str | None = None


def needs_schema(segment: Segment) -> dict[str, Any]:
    """The JSON Schema of ``segment``'s needs card: BANT, then the segment's fields."""
    extra = segment.settings.get("needs", {})
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"Needs and expectations: {segment.title}",
        "type": "object",
        "properties": {**BANT_PROPERTIES, **extra.get("properties", {})},
        "required": [*BANT, *[f for f in extra.get("required", []) if f not in BANT]],
        "additionalProperties": False,
    }


def get(session: Session, client_id: int) -> NeedsCard | None:
    """The needs card of client ``client_id`` (None when nothing was filled in, or when the
    acting user may not read that client)."""
    from sqlalchemy import select

    needs, users = session.table("b2b_needs"), session.table("users")
    clients = session.table("clients")
    query = (
        select(needs, users.c.login)
        .select_from(
            needs.join(clients, clients.c.id == needs.c.client_id).outerjoin(
                users, users.c.id == needs.c.updated_by
            )
        )
        .where(needs.c.client_id == client_id)
    )
    # the card of a client the user may not read is none of their business
    row = session.connection.execute(session.access.filter(query, "read", "client")).first()
    if row is None:
        return None
    return NeedsCard(
        client_id=row.client_id,
        data=dict(row.data),
        updated_at=row.updated_at,
        updated_by=row.login,
    )


def missing(session: Session, client: Client) -> list[str]:
    """Required fields of ``client``'s needs card that are not filled yet."""
    segment = session.crm.segments.get(client.segment or "")
    if segment is None:
        return []
    card = get(session, client.id)
    data = card.data if card is not None else {}
    return [f for f in needs_schema(segment)["required"] if data.get(f) in (None, "", [])]


def set_needs(
    session: Session, client_id: int, values: Mapping[str, Any], *, replace: bool = False
) -> NeedsCard:
    """Fill in the needs card of ``client_id``; a value of None removes the field.

    The values are merged into the stored card (``replace`` starts from an
    empty one) and checked against the segment's needs schema, every problem
    at once (``needs.budget: -5 is less than the minimum of 0 ...``). The
    client needs a segment first: the card's questions depend on it.
    """
    from sqlalchemy import insert, update

    from crmkit import ValidationError
    from crmkit.core.schema import utcnow
    from crmkit.core.validation import schema_problems

    client = session.clients.get(client_id)
    session.clients.require("update", client.id)  # the needs are part of the client's card
    if not client.segment or client.segment not in session.crm.segments:
        raise ValidationError(
            f"client #{client.id} has no segment yet; fill in its parameters "
            "('crmkit client set-params') so that its segment is known",
            field="segment",
        )
    schema = needs_schema(session.crm.segment(client.segment))
    current = get(session, client.id)
    data = {} if replace or current is None else dict(current.data)
    for key, value in values.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    partial = {k: v for k, v in schema.items() if k != "required"}
    problems = schema_problems(partial, data, prefix="needs", explain=True)
    if problems:
        raise ValidationError.from_problems(problems)
    table = session.table("b2b_needs")
    row = {"data": data, "updated_at": utcnow(), "updated_by": session.user.id}
    if current is None:
        session.connection.execute(insert(table).values(client_id=client.id, **row))
    else:
        session.connection.execute(update(table).where(table.c.client_id == client.id).values(row))
    old = {} if current is None else current.data
    changed = {
        k: {"old": old.get(k), "new": data.get(k)}
        for k in {*old, *data}
        if old.get(k) != data.get(k)
    }
    session.record("client", client.id, "needs_updated", changed)
    card = get(session, client.id)
    assert card is not None
    return card
