"""crmkit-vip-access: the VIP reviews of the example plugin under the access policies.

The example plugin of the plugin guide (``crmkit_vip``, next to this file)
keeps a table of its own, ``vip_reviews``: which VIP clients wait for a
review by the head of sales. This module, the example of the "Access
policies" page, puts that table under the policies:

* it declares a resource, ``vip_review``, whose records are the rows of
  ``vip_reviews``, with the owner and the team of the reviewed client as
  attributes, and a new action, ``review``, on client cards
  (``crmkit_access_resources``);
* it registers the rules about them (``crmkit_access_policies``);
* it reads and changes its table only through the policies:
  :func:`open_reviews` lists what the acting user may read, filtered by the
  database, and :func:`mark_reviewed` checks one record first.

Load it next to ``crmkit_vip``: ``[plugins] modules = ["crmkit_vip",
"crmkit_vip_access"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:  # for the annotations only
    from crmkit import Session
    from crmkit.core.access import Resource


@hookimpl
def crmkit_access_resources() -> list[Resource]:
    from crmkit.core.access import Attribute, Col, Resource, Via

    # the client's owner, and the owner's team, reached through foreign keys
    owner = Via("client_id", "clients", Col("owner_id"), fk_nullable=False)
    team = Via("client_id", "clients", Via("owner_id", "users", Col("team_id")), fk_nullable=False)
    return [
        Resource(
            name="vip_review",
            table="vip_reviews",
            attributes={
                "id": Attribute("id", "integer", Col("id"), nullable=False),
                "client_id": Attribute("client_id", "integer", Col("client_id"), nullable=False),
                "owner_id": Attribute("owner_id", "integer", owner, True, "the client's owner"),
                "team_id": Attribute("team_id", "integer", team, True, "the owner's team"),
            },
            actions=("read", "update"),
            title="VIP reviews",
        ),
        # a resource named like an existing one adds to it: here, one more action
        Resource(name="client", table="clients", actions=("review",)),
    ]


@hookimpl
def crmkit_access_policies() -> list[dict[str, Any]]:
    team = {"team_id": {"enum": {"$subject": "team_ids"}}}
    return [
        {
            "version": 1,
            "id": "vip-reviews",
            "rules": [
                {
                    "id": "head-vip-reviews",
                    "description": "Heads see and close the VIP reviews of their teams.",
                    "effect": "allow",
                    "roles": ["head"],
                    "actions": ["read", "update"],
                    "resource": "vip_review",
                    "when": {"properties": {"resource": {"properties": team}}},
                },
                {
                    "id": "head-reviews-vip-clients",
                    "description": "Heads review the VIP clients of their teams.",
                    "effect": "allow",
                    "roles": ["head"],
                    "actions": ["review"],
                    "resource": "client",
                    "when": {
                        "properties": {
                            "resource": {"properties": {**team, "segment": {"const": "vip"}}}
                        }
                    },
                },
            ],
        }
    ]


def open_reviews(session: Session) -> list[dict[str, Any]]:
    """The reviews not done yet that the acting user may read, oldest first."""
    from sqlalchemy import select

    reviews, clients = session.table("vip_reviews"), session.table("clients")
    query = (
        select(reviews.c.id, reviews.c.client_id, clients.c.name)
        .join_from(reviews, clients, reviews.c.client_id == clients.c.id)
        .where(reviews.c.done_at.is_(None))
        .order_by(reviews.c.id)
    )
    # the database keeps only the rows the policies let this user read
    query = session.access.filter(query, "read", "vip_review")
    return [dict(row._mapping) for row in session.connection.execute(query)]


def mark_reviewed(session: Session, review_id: int) -> None:
    """Close a review: the user must be allowed to update it and to review its client."""
    from sqlalchemy import update

    from crmkit import NotFound
    from crmkit.core.schema import utcnow

    view = session.access.view("vip_review", review_id)  # None: no such review
    if view is None or not session.access.allows("read", "vip_review", view):
        raise NotFound(f"no VIP review with id {review_id}", field="review")
    session.access.require("update", "vip_review", view)
    session.clients.require("review", view["client_id"])
    reviews = session.table("vip_reviews")
    session.connection.execute(
        update(reviews).where(reviews.c.id == review_id).values(done_at=utcnow())
    )
    session.record("client", view["client_id"], "vip_reviewed", {"review": review_id})
