"""The plugin's commands: ``needs``, ``offer``, ``product`` and ``proposal``.

Added to ``crmkit`` through the ``crmkit_cli`` hook. The commands reach the
deployment through :data:`crmkit.cli.pass_state` and print with
:func:`crmkit.cli.emit`, like the core's, so ``--format json`` works the same.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from crmkit.cli import State, emit, format_option, parse_values, pass_state


def add_commands(cli: click.Group) -> None:
    """Add the plugin's command groups to the root ``cli``."""
    for command in (needs, offer, product, proposal):
        cli.add_command(command)


# -- needs ------------------------------------------------------------------------------
@click.group()
def needs() -> None:
    """The needs-and-expectations card of a client (BANT and the segment's questions)."""


@needs.command("set")
@click.argument("client_id", type=int)
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--replace", is_flag=True, help="Replace the whole card instead of merging.")
@format_option
@pass_state
def needs_set(
    state: State, client_id: int, pairs: tuple[str, ...], replace: bool, fmt: str
) -> None:
    """Fill in the needs card of CLIENT_ID: KEY=VALUE, VALUE as JSON or text (empty removes)."""
    from .needs import needs_schema, set_needs

    with state.session() as s:
        client = s.clients.get(client_id)
        props: dict[str, Any] = {}
        if client.segment in s.crm.segments:
            props = needs_schema(s.crm.segment(client.segment))["properties"]
        set_needs(s, client_id, parse_values(pairs, props, option="needs"), replace=replace)
        view = _needs_view(s, client_id)
    if fmt == "table":
        click.echo(f"Updated the needs card of client #{client_id}")
    _emit_needs(view, fmt)


@needs.command("show")
@click.argument("client_id", type=int)
@format_option
@pass_state
def needs_show(state: State, client_id: int, fmt: str) -> None:
    """Show the needs card of CLIENT_ID and what it still lacks."""
    with state.session(readonly=True) as s:
        view = _needs_view(s, client_id)
    _emit_needs(view, fmt)


@needs.command("schema")
@click.argument("segment")
@format_option
@pass_state
def needs_schema_command(state: State, segment: str, fmt: str) -> None:
    """Show the questions of SEGMENT's needs card: BANT and the segment's own."""
    from crmkit.core.validation import describe_schema

    from .needs import needs_schema

    schema = needs_schema(state.crm().segment(segment))
    if fmt == "json":
        emit(schema, fmt)
        return
    required = set(schema["required"])
    rows = [
        {
            "field": name,
            "title": spec.get("title", ""),
            "allowed": describe_schema(spec),
            "required": "yes" if name in required else "",
        }
        for name, spec in schema["properties"].items()
    ]
    emit(rows, fmt, title=schema["title"])


def _needs_view(s: Any, client_id: int) -> dict[str, Any]:
    from .needs import get, missing

    client = s.clients.get(client_id)
    card = get(s, client_id)
    return {
        "client_id": client.id,
        "segment": client.segment,
        "data": card.data if card else {},
        "missing": missing(s, client),
        "updated_at": card.updated_at if card else None,
        "updated_by": card.updated_by if card else None,
    }


def _emit_needs(view: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        emit(view, fmt)
        return
    rows = [{"field": k, "value": v} for k, v in view["data"].items()]
    emit(rows, fmt, columns=["field", "value"], title=f"Needs of client #{view['client_id']}")
    if view["missing"]:
        click.echo("missing: " + ", ".join(view["missing"]))


# -- offer and products --------------------------------------------------------------------
PRODUCT_COLUMNS = ["sku", "name", "series", "price"]


@click.command()
@click.argument("client_id", type=int)
@format_option
@pass_state
def offer(state: State, client_id: int, fmt: str) -> None:
    """The products the offer matrix recommends for CLIENT_ID (by segment and potential)."""
    from .catalog import recommend

    with state.session(readonly=True) as s:
        client = s.clients.get(client_id)
        products = recommend(s.crm, client)
    if fmt == "json":
        emit(
            {
                "client_id": client.id,
                "segment": client.segment,
                "potential_score": client.potential_score,
                "potential_category": client.potential_category,
                "products": products,
            },
            fmt,
        )
        return
    if client.potential_category is None:
        why = "has no segment" if client.segment is None else "has an incomplete card"
        click.echo(f"Client #{client.id} {why}: no potential yet, so no recommendation.")
        return
    title = (
        f"Offer for client #{client.id} {client.name}: {client.segment}, "
        f"potential {client.potential_category} ({client.potential_score})"
    )
    emit(products, fmt, columns=PRODUCT_COLUMNS, title=title)


@click.group()
def product() -> None:
    """The product catalogue of the offer matrix."""


@product.command("list")
@format_option
@pass_state
def product_list(state: State, fmt: str) -> None:
    """List the catalogue ([plugin.segment_b2b.products] in crmkit.toml, or the default)."""
    from .catalog import products

    emit(list(products(state.crm()).values()), fmt, columns=PRODUCT_COLUMNS)


# -- proposal -----------------------------------------------------------------------------
@click.group()
def proposal() -> None:
    """Commercial proposals, rendered from the segment's template behind the gate."""


@proposal.command("render")
@click.argument("client_id", type=int)
@click.option("--deal", "deal_id", type=int, metavar="ID", help="The deal it is for; may move it.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE: HTML for .html/.htm, Markdown otherwise (default: Markdown to stdout).",
)
@click.option("--html", "as_html", is_flag=True, help="Print HTML instead of Markdown.")
@click.option("--no-log", is_flag=True, help="Render only: log no interaction, move no deal.")
@format_option
@pass_state
def proposal_render(
    state: State,
    client_id: int,
    deal_id: int | None,
    out: Path | None,
    as_html: bool,
    no_log: bool,
    fmt: str,
) -> None:
    """Render the commercial proposal for CLIENT_ID.

    Refused, with every missing field listed, while the client card's primary
    fields or its needs card are incomplete.
    """
    from crmkit import CrmError

    from .proposal import ProposalRefused, render

    try:
        with state.session() as s:
            made = render(s, client_id, deal_id=deal_id, log=not no_log)
            if out is not None:  # before the commit: a file that cannot be written logs nothing
                html = as_html or out.suffix.lower() in (".html", ".htm")
                try:
                    out.write_text(made.html if html else made.markdown, encoding="utf-8")
                except OSError as exc:
                    raise CrmError(f"cannot write {out}: {exc.strerror}", field="out") from None
    except ProposalRefused as refused:
        click.echo(f"Error: proposal refused: {refused.message}", err=True)
        for problem in refused.problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(refused.exit_code)
    if fmt == "json":
        emit(made, fmt)
        return
    notes = []
    if made.interaction_id is not None:
        notes.append(f"logged as interaction #{made.interaction_id}")
    if made.moved_to:
        notes.append(f"deal #{made.deal_id} moved to {made.moved_to}")
    notes += made.refused
    if out is None:  # the proposal on stdout, what was done on stderr
        text = made.html if as_html else made.markdown
        click.echo(text, nl=not text.endswith("\n"))
        if notes:
            click.echo("; ".join(notes), err=True)
    else:
        click.echo("; ".join([f"Wrote the proposal for client #{client_id} to {out}", *notes]))
