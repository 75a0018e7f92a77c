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
from typing import TYPE_CHECKING, Any

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


def build_segments(*, plugin: str | None = None) -> list[Segment]:
    """New :class:`crmkit.Segment` objects for ``distributor`` and ``corporate``.

    Each call returns fresh copies of the schemas, so that a caller changing
    one cannot change what the next caller gets.
    """
    from crmkit import Segment

    return [
        Segment(
            name=name,
            title=schema["title"],
            schema=copy.deepcopy(schema),
            description=schema["description"],
            plugin=plugin,
        )
        for name, schema in ((DISTRIBUTOR, DISTRIBUTOR_SCHEMA), (CORPORATE, CORPORATE_SCHEMA))
    ]
