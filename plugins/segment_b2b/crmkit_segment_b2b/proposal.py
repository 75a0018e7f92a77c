"""Rendering the commercial proposal, behind the gate.

:func:`render` is the whole workflow of the source in one call: it refuses a
client whose card or needs card is incomplete (:class:`ProposalRefused`, with
every missing field), renders the segment's template with the client, its
needs and the recommended products to HTML and Markdown, and logs the
rendering as an interaction (``document`` / ``proposal`` / ``prepared``),
whose outcome rule in the ``b2b`` pipeline moves the deal to the proposal
stage; that move passes the same gate.

Templates are Jinja2 files named ``SEGMENT.html.j2`` and ``SEGMENT.md.j2``.
A deployment overrides any of them (or the shared ``base.html.j2``) by putting
a file of the same name in ``templates/segment_b2b/`` of its folder, or in
the folder named by ``[plugin.segment_b2b] templates``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import field, frozen

from crmkit import ValidationError

from .catalog import Product, recommend

if TYPE_CHECKING:  # pragma: no cover
    from jinja2 import Environment

    from crmkit import CRM, Document, Problem, Session


class ProposalRefused(ValidationError):
    """The gate is not met: ``problems`` lists every missing field (exit code 2)."""

    def __init__(self, message: str, problems: list[Problem], *, step: str) -> None:
        super().__init__(message, field=problems[0].field if problems else None, problems=problems)
        #: ``"card"`` (primary fields missing) or ``"needs"`` (the needs card is incomplete)
        self.step = step


@frozen
class Proposal:
    """A rendered commercial proposal and what rendering it did."""

    client_id: int
    segment: str
    potential_score: float
    potential_category: str
    products: list[Product]
    html: str = field(repr=False)
    markdown: str = field(repr=False)
    deal_id: int | None = None
    interaction_id: int | None = None
    #: the stage the deal moved to, when the rendering moved it
    moved_to: str | None = None
    #: moves that were proposed but refused (the pipeline's order, a gate)
    refused: list[str] = field(factory=list)


def render(
    session: Session, client_id: int, *, deal_id: int | None = None, log: bool = True
) -> Proposal:
    """Render the proposal for ``client_id`` (about ``deal_id``) and log it.

    Raises :class:`ProposalRefused` while the gate is unmet, and
    :class:`crmkit.ValidationError` for a deal of another client.
    """
    from .gate import proposal_problems
    from .needs import get, needs_schema

    crm = session.crm
    client = session.clients.get(client_id)
    deal = None
    if deal_id is not None:
        deal = session.deals.get(deal_id)
        if deal.client_id != client.id:
            raise ValidationError(
                f"deal #{deal.id} belongs to client #{deal.client_id}, not #{client.id}",
                field="deal",
            )
    problems = proposal_problems(session, client, require_segment=True)
    if problems:
        needs_step = all(p.field and p.field.startswith("needs.") for p in problems)
        if needs_step:
            message = (
                f"client #{client.id} is a {crm.segment(client.segment or '').title.lower()} "
                f"of potential {client.potential_category} ({client.potential_score}); "
                "fill in its needs card first ('crmkit needs set')"
            )
        else:
            message = f"client #{client.id}'s card is incomplete; fill in its primary fields first"
        raise ProposalRefused(message, problems, step="needs" if needs_step else "card")
    assert client.segment is not None
    assert client.potential_score is not None and client.potential_category is not None
    segment = crm.segment(client.segment)
    card = get(session, client.id)
    schema = needs_schema(segment)
    products = recommend(crm, client)
    context = {
        "client": client,
        "segment": segment,
        "deal": deal,
        "manager": session.user,
        "date": dt.datetime.now(crm.tz).date(),
        "currency": crm.config.currency,
        "potential": {"score": client.potential_score, "category": client.potential_category},
        "params": _rows(segment.properties, client.params),
        "needs": _rows(schema["properties"], card.data if card else {}),
        "products": products,
        "total": sum((p.price for p in products), Decimal(0)),
    }
    env = environment(crm)
    html = _render(env, f"{segment.name}.html.j2", context)
    markdown = _render(env, f"{segment.name}.md.j2", context)
    interaction_id, moved_to, refused = None, None, []
    if log:
        skus = ", ".join(p.sku for p in products) or "none"
        logged = session.interactions.log(
            client.id,
            "document",
            topic="proposal",
            outcome="prepared",
            deal_id=deal_id,
            note=f"Commercial proposal ({segment.name}, potential {client.potential_category}): "
            f"{skus}",
        )
        interaction_id = logged.interaction.id
        moves = [c.to_stage for c in logged.changes if c.entity == "deal"]
        moved_to = moves[-1] if moves else None
        refused = list(logged.refused)
    return Proposal(
        client_id=client.id,
        segment=segment.name,
        potential_score=client.potential_score,
        potential_category=client.potential_category,
        products=products,
        html=html,
        markdown=markdown,
        deal_id=deal_id,
        interaction_id=interaction_id,
        moved_to=moved_to,
        refused=refused,
    )


def document(session: Session, client_id: int, *, deal_id: int | None = None) -> Document:
    """The proposal as a :class:`crmkit.Document` (``crmkit_render_document``), rendered and logged.

    The same workflow as :func:`render` (and ``crmkit proposal render``):
    another plugin that sends the document prepares the proposal, so the
    rendering is logged (``document`` / ``proposal`` / ``prepared``) and the
    deal moves to the proposal stage through its gate. The HTML marks its
    pages with ``data-page``; ``text`` is the Markdown rendering.
    """
    from crmkit import Document

    proposal = render(session, client_id, deal_id=deal_id, log=True)
    client = session.clients.get(client_id)
    return Document(
        name="proposal",
        title=f"Commercial proposal for {client.name}",
        html=proposal.html,
        text=proposal.markdown,
        client_id=client_id,
        deal_id=deal_id,
    )


def _render(env: Environment, name: str, context: dict[str, Any]) -> str:
    """Render template ``name``; a broken template is a configuration error naming it."""
    import traceback

    import jinja2

    from crmkit import ConfigError

    field = "plugin.segment_b2b.templates"
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"no template {exc.name!r} for this segment", field=field) from None
    except jinja2.TemplateError as exc:
        where, line = getattr(exc, "filename", None), getattr(exc, "lineno", None)
        if line is None:  # an error while rendering: Jinja2 maps the frame to the template
            frames = traceback.extract_tb(exc.__traceback__)
            found = [f for f in frames if f.filename.endswith(".j2")]
            if found:
                where, line = found[-1].filename, found[-1].lineno
        at = f"{where or name}, line {line}" if line else where or name
        raise ConfigError(f"template {at}: {exc.message}", field=field) from None


def _rows(props: dict[str, Any], values: dict[str, Any]) -> list[dict[str, Any]]:
    """``(name, title, value, unit)`` for each filled property, in the schema's order."""
    rows = []
    for name, spec in props.items():
        if values.get(name) in (None, "", []):
            continue
        rows.append(
            {
                "name": name,
                "title": spec.get("title", name),
                "value": values[name],
                "unit": spec.get("x-unit", ""),
            }
        )
    return rows


def template_dirs(crm: CRM) -> list[Path]:
    """The deployment's template folders, searched before the plugin's own."""
    from . import PLUGIN_NAME

    configured = crm.config.plugin(PLUGIN_NAME).get("templates")
    root = Path(crm.config.root)
    if configured:
        return [(root / configured).resolve()]
    default = root / "templates" / PLUGIN_NAME
    return [default] if default.is_dir() else []


def environment(crm: CRM) -> Environment:
    """The Jinja2 environment: deployment templates first, then the plugin's; HTML escaped."""
    import jinja2

    loaders: list[jinja2.BaseLoader] = [
        jinja2.FileSystemLoader([str(d) for d in template_dirs(crm)]),
        jinja2.PackageLoader("crmkit_segment_b2b", "templates"),
    ]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "html")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["money"] = _money
    env.filters["value"] = _value
    return env


def _money(amount: Any) -> str:
    return f"{Decimal(str(amount)):,.2f}".replace(",", "\u00a0")


def _value(value: Any) -> str:
    """A parameter's value for people: lists joined, equipment as 'type \u00d7 count'."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}".replace(",", "\u00a0")
    if isinstance(value, list):
        return ", ".join(
            f"{v.get('type')} \u00d7 {v.get('count')}" if isinstance(v, dict) else str(v)
            for v in value
        )
    return str(value).replace("_", " ")
