"""crmkit-vip: an example plugin for VIP clients.

It shows each kind of hook a plugin uses:

* registration: a ``vip`` segment with a JSON Schema (``crmkit_segments``),
  a table with its own Alembic branch (``crmkit_tables``,
  ``crmkit_migrations``) and a CLI command (``crmkit_cli``);
* check: a VIP client needs a phone number (``crmkit_check_client``);
* event: when a client becomes VIP, record an event and ask the head of
  sales for a review (``crmkit_client_saved``);
* lifecycle: check the plugin's settings when a deployment is opened
  (``crmkit_startup``): ``[plugin.vip] reviews = false`` in ``crmkit.toml``
  turns the reviews off.

Every ``crmkit`` command, ``--help`` included, imports this module, so it
imports only ``crmkit.hookimpl`` at the top; everything else is imported
inside the hooks that use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:  # for the annotations only: nothing heavy is imported at run time
    import click
    from sqlalchemy import MetaData

    from crmkit import CRM, Client, Problem, Segment, Session

__version__ = "1.0.0"

VIP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tier": {"type": "string", "enum": ["gold", "platinum"], "title": "VIP tier"},
        "annual_spend": {
            "type": "number",
            "minimum": 0,
            "title": "Spend over the last 12 months",
            "x-unit": "USD",
        },
        "account_manager": {"type": "string", "title": "Personal account manager"},
    },
    # The primary fields: a VIP card is complete once both are filled.
    "required": ["tier", "annual_spend"],
    "additionalProperties": False,
}


# -- registration hooks ------------------------------------------------------------
@hookimpl
def crmkit_segments() -> list[Segment]:
    from crmkit import Segment

    return [
        Segment(
            name="vip",
            title="VIP client",
            schema=VIP_SCHEMA,
            description="Clients served by a personal account manager.",
            plugin="vip",
        )
    ]


@hookimpl
def crmkit_tables(metadata: MetaData) -> None:
    from sqlalchemy import Column, ForeignKey, Integer, Table

    from crmkit.core.schema import UTCDateTime, utcnow

    Table(
        "vip_reviews",
        metadata,
        Column("id", Integer, primary_key=True),
        Column(
            "client_id",
            Integer,
            ForeignKey("clients.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        Column("requested_at", UTCDateTime, nullable=False, default=utcnow),
        Column("done_at", UTCDateTime, nullable=True),
    )


@hookimpl
def crmkit_migrations() -> list[dict[str, str]]:
    return [{"branch": "vip", "path": str(Path(__file__).parent / "migrations")}]


@hookimpl
def crmkit_cli(cli: click.Group) -> None:
    from crmkit.cli import State, emit, format_option, pass_state

    @cli.group()
    def vip() -> None:
        """VIP clients: reviews by the head of sales."""

    @vip.command("reviews")
    @format_option
    @pass_state
    def reviews(state: State, fmt: str) -> None:
        """List the VIP clients waiting for a review."""
        with state.session() as s:
            rows = pending_reviews(s)
        emit(rows, fmt, columns=["client_id", "name", "requested_at"])


# -- lifecycle hook ----------------------------------------------------------------
@hookimpl
def crmkit_startup(crm: CRM) -> None:
    reviews = crm.config.plugin("vip").get("reviews", True)
    if not isinstance(reviews, bool):
        from crmkit import ConfigError

        raise ConfigError(f"must be true or false, not {reviews!r}", field="plugin.vip.reviews")


# -- check hook -------------------------------------------------------------------
@hookimpl
def crmkit_check_client(client: Client) -> list[Problem]:
    # Accept only the arguments you need: crmkit calls every hook with keywords.
    from crmkit import Problem

    if client.segment == "vip" and not client.phone:
        return [Problem("phone", "a VIP client needs a phone number")]
    return []


# -- event hook -------------------------------------------------------------------
@hookimpl
def crmkit_client_saved(session: Session, client: Client, created: bool) -> None:
    if client.segment != "vip" or not session.crm.config.plugin("vip").get("reviews", True):
        return
    if pending_reviews(session, client_id=client.id):
        return
    # This runs inside the session's transaction: the review, the event and
    # the card commit together, or not at all.
    reviews = session.table("vip_reviews")
    session.connection.execute(reviews.insert().values(client_id=client.id))
    session.record("client", client.id, "vip_review_requested", {"created": created})


def pending_reviews(session: Session, client_id: int | None = None) -> list[dict[str, Any]]:
    """The VIP clients whose review is not done yet, oldest request first."""
    from sqlalchemy import select

    reviews, clients = session.table("vip_reviews"), session.table("clients")
    query = (
        select(reviews.c.client_id, clients.c.name, reviews.c.requested_at)
        .join_from(reviews, clients, reviews.c.client_id == clients.c.id)
        .where(reviews.c.done_at.is_(None))
        .order_by(reviews.c.id)
    )
    if client_id is not None:
        query = query.where(reviews.c.client_id == client_id)
    # only the clients the acting user may read: a plugin's own tables obey the policies too
    query = session.access.filter(query, "read", "client")
    return [dict(row._mapping) for row in session.connection.execute(query)]
