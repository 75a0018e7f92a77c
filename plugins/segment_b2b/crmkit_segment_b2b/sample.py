"""Sample needs cards for ``crmkit init --sample`` (the ``crmkit_sample_client`` hook)."""

from __future__ import annotations

import random as _random
from typing import TYPE_CHECKING

from .gate import GATED

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import Client, Session

NEEDS_TEXT = {
    "distributor": (
        "Widen the resale range with a reliable printer brand",
        "Replace a supplier that delivers late",
        "Cartridges at a dealer price for own clients",
    ),
    "corporate": (
        "Cut printing costs across the offices",
        "Replace an ageing printer fleet",
        "One service contract for every office",
    ),
}


def fill_needs(session: Session, client: Client, random: _random.Random) -> None:
    """A needs card for ``client`` when its card is complete and it has none yet."""
    from .needs import get, set_needs

    if client.segment not in GATED or client.potential_category is None:
        return
    if get(session, client.id) is not None:
        return
    values: dict[str, object] = {
        "budget": random.choice((300_000, 800_000, 1_500_000, 4_000_000)),
        "authority": random.choice(("decision_maker", "decision_maker", "influencer")),
        "need": random.choice(NEEDS_TEXT[client.segment]),
        "timing": random.choice(("this_month", "this_quarter", "this_quarter", "this_year")),
    }
    if client.segment == "distributor":
        values |= {
            "monthly_volume": random.randint(20, 400),
            "target_margin": random.choice((12, 15, 18, 20, 25)),
            "exclusivity": random.random() < 0.3,
        }
    else:
        values |= {
            "devices_needed": random.randint(5, 120),
            "service_level": random.choice(("basic", "business", "business", "premium")),
        }
    set_needs(session, client.id, values)
