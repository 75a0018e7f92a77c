"""The proposal gate: what a client card lacks before it may get a commercial proposal.

The workflow of the source, as checks:

1. the card's *primary fields* for its segment must be filled (the segment's
   schema lists them in ``required``);
2. then the segment and the potential are known (crmkit computes them when
   the card is saved), and the *needs card* must be filled;
3. only then may a proposal be rendered, and only then may a deal enter a
   stage marked ``proposal``.

:func:`proposal_problems` answers both the renderer and the stage-gate hook
(``crmkit_check_stage_entry``), so the two can never disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .segments import CORPORATE, DISTRIBUTOR

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import Client, Problem, Session

#: The segments this plugin gates; clients of other segments are not its business.
GATED = (DISTRIBUTOR, CORPORATE)


def proposal_problems(
    session: Session, client: Client, *, require_segment: bool = False
) -> list[Problem]:
    """Why ``client`` may not have a proposal yet; empty when the gate is met.

    Problems come one step at a time: while primary fields are missing, only
    they are listed (the needs card's questions depend on the segment).
    ``require_segment`` also refuses a client without a segment (the
    renderer needs one; the stage gate leaves such clients to the pipeline).
    """
    from crmkit import Problem
    from crmkit.core.validation import describe_schema

    from .needs import missing as missing_needs
    from .needs import needs_schema

    crm = session.crm
    if client.segment is None:
        if not require_segment:
            return []
        hints = "; ".join(
            f"{seg.name}: {', '.join(seg.primary_fields)}"
            for seg in crm.segments.values()
            if seg.name in GATED
        )
        return [
            Problem(
                "client.segment",
                f"is not known: fill in the card's parameters ({hints}) or set the segment",
            )
        ]
    if client.segment not in GATED or client.segment not in crm.segments:
        return []
    segment = crm.segment(client.segment)
    absent = segment.missing(client.params)
    if absent:
        props = segment.properties
        return [
            Problem(
                f"client.params.{name}",
                f"{props.get(name, {}).get('title', name)} is a primary field of the "
                f"{segment.title.lower()} segment and is not filled "
                f"({describe_schema(props.get(name, {}))})",
            )
            for name in absent
        ]
    unfilled = missing_needs(session, client)
    if unfilled:
        props = needs_schema(segment)["properties"]
        return [
            Problem(
                f"needs.{name}",
                f"{props.get(name, {}).get('title', name)} is not in the needs card "
                f"({describe_schema(props.get(name, {}))})",
            )
            for name in unfilled
        ]
    return []
