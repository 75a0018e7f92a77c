"""The B2B segments and the JSON Schemas (draft 2020-12) of their parameters.

A client card whose ``segment`` is one of these has its ``params`` checked
against the segment's schema on every save. Following crmkit's rule (see
:meth:`crmkit.Segment.validate`), a save checks only the values present; the
schema's top-level ``required`` list names the *primary fields*, the ones a
card needs before it is complete (:meth:`crmkit.Segment.missing`).

Units are given in the ``x-unit`` keyword, which JSON Schema validators
ignore and ``crmkit segment show`` prints. A deployment that counts money in
another currency overrides the schema in ``crmkit.toml``
(``[segments.distributor] schema = {...}``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from crmkit.core.model import Potential

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import Segment

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

DISTRIBUTOR = "distributor"
CORPORATE = "corporate"

DISTRIBUTOR_SCHEMA: dict[str, Any] = {
    "$schema": JSON_SCHEMA_DIALECT,
    "title": "Distributor",
    "description": (
        "A company that buys our products to resell them to its own clients. "
        "Its potential follows from its turnover, sales force, client base and warehouse."
    ),
    "type": "object",
    "properties": {
        "turnover": {
            "title": "Annual turnover",
            "description": "The distributor's total turnover per year.",
            "type": "number",
            "minimum": 0,
            "x-unit": "RUB/year",
        },
        "sales_reps": {
            "title": "Sales representatives",
            "description": "Number of sales representatives (field and office sales staff).",
            "type": "integer",
            "minimum": 0,
        },
        "own_clients": {
            "title": "Own clients",
            "description": "Number of active clients the distributor serves itself.",
            "type": "integer",
            "minimum": 0,
        },
        "warehouse_area": {
            "title": "Warehouse area",
            "description": "Total floor area of the distributor's warehouses.",
            "type": "number",
            "minimum": 0,
            "x-unit": "m²",
        },
        "regions": {
            "title": "Regions",
            "description": "Regions where the distributor sells, each named once.",
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "uniqueItems": True,
        },
    },
    "required": ["turnover", "sales_reps", "own_clients", "warehouse_area"],
    "additionalProperties": False,
}

CORPORATE_SCHEMA: dict[str, Any] = {
    "$schema": JSON_SCHEMA_DIALECT,
    "title": "End corporate customer",
    "description": (
        "A company that uses our products itself. Its potential follows from its "
        "headcount, its offices and the equipment it runs."
    ),
    "type": "object",
    "properties": {
        "employees": {
            "title": "Employees",
            "description": "Number of employees.",
            "type": "integer",
            "minimum": 1,
        },
        "offices": {
            "title": "Offices",
            "description": "Number of offices and branches.",
            "type": "integer",
            "minimum": 1,
        },
        "equipment": {
            "title": "Equipment in use",
            "description": "Each type of equipment the customer uses and how many units.",
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {
                        "title": "Equipment type",
                        "description": "What kind of equipment, e.g. 'laser printer'.",
                        "type": "string",
                        "minLength": 1,
                    },
                    "count": {
                        "title": "Units",
                        "description": "How many units of this type are in use.",
                        "type": "integer",
                        "minimum": 1,
                    },
                },
                "required": ["type", "count"],
                "additionalProperties": False,
            },
        },
        "industry": {
            "title": "Industry",
            "description": "The customer's line of business, e.g. 'retail' or 'logistics'.",
            "type": "string",
            "minLength": 1,
        },
    },
    "required": ["employees", "offices", "equipment"],
    "additionalProperties": False,
}


# -- classification ---------------------------------------------------------------------
#: Parameters that only a reseller has: a client base and a sales force of its own.
RESELLER_SIGNALS = ("own_clients", "sales_reps")
#: Parameters that describe a company running our products itself.
USER_SIGNALS = ("employees", "equipment")


def classify_distributor(params: Mapping[str, Any]) -> float:
    """How well a card fits ``distributor``; crmkit asks only when every name is the segment's.

    Rules, in order:

    1. a card with a client base or a sales force of its own (``own_clients``
       or ``sales_reps`` above 0) is a reseller: 1.0;
    2. otherwise the share of the distributor's primary fields it fills
       (``turnover`` and ``warehouse_area`` alone say "distributor" only weakly).
    """
    if any(_positive(params.get(name)) for name in RESELLER_SIGNALS):
        return 1.0
    primary = DISTRIBUTOR_SCHEMA["required"]
    return sum(1 for name in primary if name in params) / len(primary)


def classify_corporate(params: Mapping[str, Any]) -> float:
    """How well a card fits ``corporate``; crmkit asks only when every name is the segment's.

    Rules: a company that states its headcount or the equipment it runs uses
    our products itself: 1.0; otherwise the share of the primary fields it
    fills (``offices`` alone says "corporate" only weakly, ``industry`` alone
    says nothing: every kind of company has one).
    """
    if any(params.get(name) for name in USER_SIGNALS):
        return 1.0
    primary = CORPORATE_SCHEMA["required"]
    return sum(1 for name in primary if name in params) / len(primary)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


# -- potential ---------------------------------------------------------------------------
def score(factors: Mapping[str, Any], settings: Mapping[str, Any]) -> Potential:
    """The potential from measured ``factors``, by the ``potential`` settings.

    Each factor's value is put on a 0..1 scale against its reference value
    (``scale``), by orders of magnitude: the reference or more scores 1, a
    tenth of it 0.5, a hundredth or less 0 (``1 + log10(value / reference) / 2``),
    so that a mid-size company is not lost beside a giant. The score is
    ``100 * sum(weight * scaled) / sum(weights)``, and the category the first
    of ``categories`` (highest threshold first) whose threshold the score
    reaches, else ``C``.
    """
    conf = settings["potential"]
    weights: Mapping[str, float] = conf["weights"]
    scale: Mapping[str, float] = conf["scale"]
    total = sum(weights.values()) or 1.0
    log10 = math.log10
    contributions: dict[str, float] = {}
    points = 0.0
    # a bulk import scores every row: plain arithmetic on locals, no helper calls
    for name, weight in weights.items():
        if not weight:  # a weight of 0 switches a factor off
            continue
        value = factors.get(name) or 0
        kind = value.__class__
        if kind is list:  # a list counts its items (the regions served ...)
            value = len(value)
        elif kind is not int and kind is not float:
            value = 0
        share = 0.0
        if value > 0:
            scaled = 1 + log10(value / scale[name]) / 2
            share = 100 * weight * (0.0 if scaled < 0 else 1.0 if scaled > 1 else scaled) / total
        points += share
        contributions[name] = round(share, 2)
    points = round(points, 1)
    category, reached = "C", -1.0
    for name, threshold in conf["categories"].items():  # the highest threshold reached
        if threshold <= points and threshold > reached:
            category, reached = name, threshold
    return Potential(score=points, category=category, factors=contributions)


def distributor_potential(params: Mapping[str, Any], settings: Mapping[str, Any]) -> Potential:
    """A distributor's potential: turnover, sales force, client base and warehouse.

    Every weighted parameter counts, so a parameter a deployment adds
    (``[segments.distributor.extend]``) scores once it has a weight and a scale.
    """
    return score(params, settings)


def corporate_potential(params: Mapping[str, Any], settings: Mapping[str, Any]) -> Potential:
    """A corporate customer's potential: headcount, offices and units of equipment in use.

    ``equipment`` counts the units of every type; other weighted parameters
    count as they are.
    """
    units = sum(int(item.get("count", 0)) for item in params.get("equipment", []))
    return score({**params, "equipment": units}, settings)


# -- settings: the defaults a deployment overrides under [segments.NAME] -------------------
#: The needs-and-expectations card every segment asks for: BANT.
BANT_PROPERTIES: dict[str, Any] = {
    "budget": {
        "title": "Budget",
        "description": "What the client can spend on this purchase.",
        "type": "number",
        "minimum": 0,
        "x-unit": "RUB",
    },
    "authority": {
        "title": "Authority",
        "description": "The role in the decision of the person we talk to.",
        "enum": ["decision_maker", "influencer", "user"],
    },
    "need": {
        "title": "Need",
        "description": "The problem the client wants solved, in the client's words.",
        "type": "string",
        "minLength": 3,
    },
    "timing": {
        "title": "Timing",
        "description": "When the client intends to buy.",
        "enum": ["this_month", "this_quarter", "this_half_year", "this_year", "later"],
    },
}
BANT = ["budget", "authority", "need", "timing"]

DISTRIBUTOR_SETTINGS: dict[str, Any] = {
    "potential": {
        "weights": {
            "turnover": 0.4,
            "sales_reps": 0.2,
            "own_clients": 0.25,
            "warehouse_area": 0.15,
        },
        "scale": {
            "turnover": 1_000_000_000,
            "sales_reps": 50,
            "own_clients": 2000,
            "warehouse_area": 10_000,
        },
        "categories": {"A": 65, "B": 40},
    },
    "offers": {
        "A": ["CRT-BULK", "DLR-KIT", "MFP-M60", "PRN-P80"],
        "B": ["CRT-BULK", "MFP-M30", "PRN-P20"],
        "C": ["CRT-T20", "PRN-P20"],
    },
    "needs": {
        "properties": {
            "monthly_volume": {
                "title": "Monthly volume",
                "description": "Units the distributor expects to buy per month.",
                "type": "integer",
                "minimum": 1,
                "x-unit": "units/month",
            },
            "target_margin": {
                "title": "Target margin",
                "description": "The resale margin the distributor needs.",
                "type": "number",
                "minimum": 0,
                "maximum": 100,
                "x-unit": "%",
            },
            "exclusivity": {
                "title": "Exclusivity",
                "description": "Whether it asks for exclusive rights in its regions.",
                "type": "boolean",
            },
        },
        "required": ["monthly_volume", "target_margin"],
    },
}

CORPORATE_SETTINGS: dict[str, Any] = {
    "potential": {
        "weights": {"employees": 0.4, "offices": 0.2, "equipment": 0.4},
        "scale": {"employees": 2000, "offices": 20, "equipment": 500},
        "categories": {"A": 65, "B": 40},
    },
    "offers": {
        "A": ["SRV-MPS", "MFP-M60", "PRN-P80", "SRV-CARE"],
        "B": ["MFP-M60", "SRV-MPS", "CRT-T20"],
        "C": ["MFP-M30", "CRT-T20"],
    },
    "needs": {
        "properties": {
            "devices_needed": {
                "title": "Devices needed",
                "description": "How many devices the customer wants to buy or replace.",
                "type": "integer",
                "minimum": 1,
            },
            "service_level": {
                "title": "Service level",
                "description": "The support the customer expects.",
                "enum": ["basic", "business", "premium"],
            },
            "pain_points": {
                "title": "Pain points",
                "description": "What goes wrong with the equipment today.",
                "type": "array",
                "items": {"type": "string", "minLength": 1},
            },
        },
        "required": ["devices_needed", "service_level"],
    },
}

#: The plugin's settings of each segment, before ``crmkit.toml`` is merged over them.
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    DISTRIBUTOR: DISTRIBUTOR_SETTINGS,
    CORPORATE: CORPORATE_SETTINGS,
}

#: What a deployment may set under ``[segments.NAME]`` (checked when the deployment opens).
SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "potential": {
            "type": "object",
            "required": ["weights", "scale", "categories"],
            "properties": {
                "weights": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"type": "number", "minimum": 0},
                },
                "scale": {
                    "type": "object",
                    "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
                },
                "categories": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 100},
                },
            },
        },
        "offers": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "needs": {
            "type": "object",
            "properties": {
                "properties": {"type": "object"},
                "required": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}


def build_segments(*, plugin: str | None = None) -> list[Segment]:
    """New :class:`crmkit.Segment` objects for ``distributor`` and ``corporate``.

    Each call returns fresh copies of the schemas and settings, so that a
    caller changing one cannot change what the next caller gets.
    """
    from crmkit import Segment

    return [
        Segment(
            name=name,
            title=schema["title"],
            schema=copy.deepcopy(schema),
            description=schema["description"],
            plugin=plugin,
            classifier=classifier,
            scorer=scorer,
            settings=copy.deepcopy(settings),
            settings_schema=SETTINGS_SCHEMA,
        )
        for name, schema, classifier, scorer, settings in (
            (
                DISTRIBUTOR,
                DISTRIBUTOR_SCHEMA,
                classify_distributor,
                distributor_potential,
                DISTRIBUTOR_SETTINGS,
            ),
            (
                CORPORATE,
                CORPORATE_SCHEMA,
                classify_corporate,
                corporate_potential,
                CORPORATE_SETTINGS,
            ),
        )
    ]
