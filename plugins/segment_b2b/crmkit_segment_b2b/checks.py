"""What the plugin checks when a deployment opens (``crmkit_startup``).

A deployment tunes the plugin in ``crmkit.toml``; a mistake there should stop
the deployment at once with the key that is wrong (exit code 6 on the
command line), not surface later as a wrong number or an internal error in
front of a manager. :func:`check_deployment` checks:

* ``[plugin.segment_b2b]``: only ``products`` and ``templates``; each
  product against :data:`~crmkit_segment_b2b.catalog.PRODUCT_SCHEMA`; the
  templates folder exists;
* each segment's ``potential``: every weight above 0 names a parameter of
  the segment and has a reference value in ``scale`` (a weight of 0 switches
  a factor off: settings are merged over the plugin's, so a deployment
  cannot remove a key, only zero it);
* each segment's ``offers``: every SKU is in the catalogue;
* each segment's needs card: its schema is valid JSON Schema, and every
  required question is one of its questions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import CRM, Segment


def check_deployment(crm: CRM) -> None:
    """Raise :class:`crmkit.ConfigError` naming the first broken setting."""
    from crmkit import ConfigError
    from crmkit.core.validation import schema_problems

    from . import PLUGIN_NAME
    from .catalog import PRODUCT_SCHEMA, products
    from .gate import GATED
    from .proposal import template_dirs

    settings = crm.config.plugin(PLUGIN_NAME)
    prefix = f"plugin.{PLUGIN_NAME}"
    unknown = sorted(set(settings) - {"products", "templates"})
    if unknown:
        raise ConfigError(
            "is not a setting of the plugin (known: products, templates)",
            field=f"{prefix}.{unknown[0]}",
        )
    table = settings.get("products")
    if table is not None:
        if not isinstance(table, dict) or not table:
            raise ConfigError("must be a table of products by SKU", field=f"{prefix}.products")
        for sku, item in table.items():
            problems = schema_problems(PRODUCT_SCHEMA, item, prefix=f"{prefix}.products.{sku}")
            if problems:
                raise ConfigError(problems[0].reason, field=problems[0].field)
    if "templates" in settings:
        folder = template_dirs(crm)[0]
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a folder", field=f"{prefix}.templates")
    known = products(crm)
    for name in GATED:
        segment = crm.segments.get(name)
        if segment is not None:
            _check_potential(segment)
            _check_offers(segment, known)
            _check_needs(segment)


def _check_potential(segment: Segment) -> None:
    from crmkit import ConfigError

    from .segments import DEFAULT_SETTINGS

    potential = segment.settings.get("potential", {})
    defaults = DEFAULT_SETTINGS[segment.name]["potential"]["weights"]
    field = f"{segment.name}.potential"
    for factor, weight in potential.get("weights", {}).items():
        spec = segment.properties.get(factor)
        if not weight:  # 0 switches off a factor the plugin weighs (settings never remove)
            if spec is None and factor not in defaults:
                raise ConfigError(
                    f"{factor!r} is neither a parameter of the segment nor one of the "
                    f"plugin's weights ({', '.join(defaults)}), so a weight of 0 switches "
                    "nothing off",
                    field=f"segments.{field}.weights.{factor}",
                )
            continue
        if spec is None:
            raise ConfigError(
                f"{factor!r} is not a parameter of the segment "
                f"(parameters: {', '.join(segment.properties)})",
                field=f"segments.{field}.weights.{factor}",
            )
        if spec.get("type") not in ("number", "integer", "array"):
            raise ConfigError(
                f"{factor!r} is not a number or a list, so it cannot be weighed",
                field=f"segments.{field}.weights.{factor}",
            )
        if factor not in potential.get("scale", {}):
            raise ConfigError(
                f"the weighted parameter {factor!r} has no reference value",
                field=f"segments.{field}.scale",
            )


def _check_offers(segment: Segment, known: dict[str, object]) -> None:
    from crmkit import ConfigError

    for category, skus in segment.settings.get("offers", {}).items():
        for sku in skus:
            if sku not in known:
                raise ConfigError(
                    f"{sku!r} is not in the product catalogue (known: {', '.join(sorted(known))})",
                    field=f"segments.{segment.name}.offers.{category}",
                )


def _check_needs(segment: Segment) -> None:
    from crmkit import ConfigError, ValidationError
    from crmkit.core.validation import check_schema

    from .needs import needs_schema

    field = f"segments.{segment.name}.needs"
    schema = needs_schema(segment)
    try:
        check_schema(schema, field=field)
    except ValidationError as exc:  # in crmkit.toml: a configuration error
        raise ConfigError(exc.message, field=exc.field) from None
    for name in schema["required"]:
        if name not in schema["properties"]:
            raise ConfigError(
                f"{name!r} is not one of the needs card's questions", field=f"{field}.required"
            )
