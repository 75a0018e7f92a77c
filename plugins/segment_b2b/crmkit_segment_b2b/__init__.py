"""crmkit plugin: B2B client segments, their potential, the offer matrix and the proposal gate.

What it registers, hook by hook (each documented in crmkit's hook reference):

* :func:`crmkit_segments`: ``distributor`` and ``corporate``, each a JSON
  Schema of parameters with a classifier, a potential scorer and settings
  (potential weights, the offer matrix, the needs card's questions);
* :func:`crmkit_tables` and :func:`crmkit_migrations`: the ``b2b_needs``
  table of needs cards, on the Alembic branch ``segment_b2b``;
* :func:`crmkit_check_stage_entry`: the proposal gate on every stage marked
  ``proposal``;
* :func:`crmkit_cli`: ``needs``, ``offer``, ``product`` and ``proposal``;
* :func:`crmkit_reports`: ``abcxyz``;
* :func:`crmkit_client_details`: potential and needs in ``crmkit client show``;
* :func:`crmkit_sample_client`: needs cards for ``crmkit init --sample``;
* :func:`crmkit_render_document`: the ``proposal`` document, for other plugins
  (the email tracking plugin sends it as a hosted link);
* :func:`crmkit_startup`: checks the catalogue and the offer matrix.

The Python API is importable from the package itself, loaded on first use::

    from crmkit_segment_b2b import render_proposal, set_needs

    with crm.session(as_user="anna") as s:
        set_needs(s, client_id, {"budget": 1_000_000, "authority": "decision_maker", ...})
        proposal = render_proposal(s, client_id, deal_id=deal_id)

crmkit imports this module on every command, ``--help`` included, so it
imports only :data:`crmkit.hookimpl` here; everything else is imported when
a hook is called or an API name is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmkit import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    import click
    from sqlalchemy import MetaData

    from crmkit import CRM, Client, Deal, Document, Problem, Report, Segment, Session, Stage

__version__ = "0.2.0"

#: The plugin's name: its entry point in the ``crmkit`` group and its Alembic branch.
PLUGIN_NAME = "segment_b2b"

#: The Python API: name -> (module, attribute), imported on first use.
_API = {
    "render_proposal": ("proposal", "render"),
    "Proposal": ("proposal", "Proposal"),
    "ProposalRefused": ("proposal", "ProposalRefused"),
    "proposal_problems": ("gate", "proposal_problems"),
    "set_needs": ("needs", "set_needs"),
    "get_needs": ("needs", "get"),
    "missing_needs": ("needs", "missing"),
    "needs_schema": ("needs", "needs_schema"),
    "NeedsCard": ("needs", "NeedsCard"),
    "recommend": ("catalog", "recommend"),
    "products": ("catalog", "products"),
    "Product": ("catalog", "Product"),
}
__all__ = ["PLUGIN_NAME", "__version__", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{target[0]}"), target[1])
    globals()[name] = value
    return value


@hookimpl
def crmkit_segments() -> list[Segment]:
    """The ``distributor`` and ``corporate`` segments."""
    from .segments import build_segments

    return build_segments(plugin=PLUGIN_NAME)


@hookimpl
def crmkit_tables(metadata: MetaData) -> None:
    """Add ``b2b_needs`` to crmkit's metadata."""
    from .tables import define_tables

    define_tables(metadata)


@hookimpl
def crmkit_migrations() -> list[dict[str, str]]:
    """The ``segment_b2b`` Alembic branch, which creates ``b2b_needs``."""
    from pathlib import Path

    versions = Path(__file__).resolve().parent / "migrations" / "versions"
    return [{"branch": PLUGIN_NAME, "path": str(versions)}]


@hookimpl
def crmkit_startup(crm: CRM) -> None:
    """Refuse a deployment whose settings are broken, naming the key (see :mod:`.checks`)."""
    from .checks import check_deployment

    check_deployment(crm)


@hookimpl
def crmkit_check_stage_entry(
    session: Session, stage: Stage, deal: Deal | None, client: Client
) -> list[Problem]:
    """The proposal gate: a deal enters a stage marked ``proposal`` only with a complete card."""
    if deal is None or "proposal" not in stage.marks:
        return []
    from .gate import proposal_problems

    return proposal_problems(session, client)


@hookimpl
def crmkit_cli(cli: click.Group) -> None:
    """Add ``needs``, ``offer``, ``product`` and ``proposal``."""
    from .cli import add_commands

    add_commands(cli)


@hookimpl
def crmkit_reports() -> list[Report]:
    """``abcxyz``: ABC analysis of clients by revenue, XYZ by regularity of purchases."""
    from .abcxyz import build_report

    return [build_report(plugin=PLUGIN_NAME)]


@hookimpl
def crmkit_client_details(session: Session, client: Client) -> dict[str, Any] | None:
    """Potential, its factors, what the proposal gate still lacks, and the recommended SKUs."""
    from .gate import GATED

    if client.segment not in GATED:
        return None
    from .catalog import recommend
    from .gate import proposal_problems
    from .needs import get

    segment = session.crm.segments.get(client.segment or "")
    now = segment.potential(client.params) if segment is not None else None
    card = get(session, client.id)
    facts: dict[str, Any] = {
        "potential": None
        if client.potential_score is None
        else f"{client.potential_score} ({client.potential_category})",
        "factors": None if now is None else now.factors,
        "needs": card.data if card is not None else {},
        "proposal_gate": [str(p) for p in proposal_problems(session, client)] or "met",
        "offer": [p.sku for p in recommend(session.crm, client)],
    }
    if now is not None and now.score != client.potential_score:  # the settings changed since
        facts["potential_now"] = f"{now.score} ({now.category}); run 'crmkit segment rescore'"
        facts["factors_now"] = facts.pop("factors")  # they add up to the new score
    return facts


@hookimpl
def crmkit_sample_client(session: Session, client: Client, random: Any) -> None:
    """Fill in a plausible needs card for a sample client whose card is complete."""
    from .sample import fill_needs

    fill_needs(session, client, random)


@hookimpl
def crmkit_render_document(
    session: Session, name: str, client_id: int, deal_id: int | None
) -> Document | None:
    """``proposal``: the commercial proposal as a :class:`crmkit.Document`; other names: None.

    Rendering it is preparing the proposal, as ``crmkit proposal render`` does:
    the gate applies (:class:`ProposalRefused` names what is missing) and the
    rendering is logged, which moves the deal to the proposal stage.
    """
    if name != "proposal":
        return None
    from .proposal import document

    return document(session, client_id, deal_id=deal_id)
