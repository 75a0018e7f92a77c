"""Products and the offer matrix: what to recommend to which client.

The catalogue is a list of products (``sku``, ``name``, ``series``,
``price``). The plugin ships a demonstration catalogue of printing equipment;
a deployment replaces it with its own under ``[plugin.segment_b2b.products]``
in ``crmkit.toml``, one table per SKU::

    [plugin.segment_b2b.products.MFP-M30]
    name = "Office MFP M30"
    series = "Office"
    price = 32000

The *offer matrix* is a setting of each segment: ``offers`` maps a potential
category to the SKUs recommended for it, in order, and a deployment changes
it under ``[segments.NAME.offers]`` (``A = ["MFP-M60", "SRV-MPS"]``). Every
SKU the matrix names must be in the catalogue:
:func:`crmkit_segment_b2b.checks.check_deployment` refuses the deployment at
start-up otherwise, naming the key.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from attrs import frozen

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import CRM, Client

#: The demonstration catalogue: printing equipment, supplies and services (prices in RUB).
DEFAULT_PRODUCTS: dict[str, dict[str, Any]] = {
    "PRN-P20": {"name": "Laser printer P20", "series": "Office", "price": 18500},
    "MFP-M30": {"name": "Office MFP M30", "series": "Office", "price": 32000},
    "MFP-M60": {"name": "Workgroup MFP M60", "series": "Office", "price": 89000},
    "PRN-P80": {"name": "Production printer P80", "series": "Pro", "price": 640000},
    "CRT-T20": {"name": "Toner cartridge T20, pack of 10", "series": "Supplies", "price": 24000},
    "CRT-BULK": {"name": "Cartridge wholesale pallet", "series": "Supplies", "price": 420000},
    "SRV-MPS": {
        "name": "Managed print service, per device and year",
        "series": "Service",
        "price": 12000,
    },
    "SRV-CARE": {"name": "Service contract, per year", "series": "Service", "price": 60000},
    "DLR-KIT": {
        "name": "Dealer starter kit: demo units and sales materials",
        "series": "Partner",
        "price": 250000,
    },
}

PRODUCT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "price"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "series": {"type": "string"},
        "price": {"type": "number", "minimum": 0},
        "description": {"type": "string"},
    },
}


@frozen
class Product:
    """A product of the catalogue."""

    sku: str
    name: str
    series: str = ""
    price: Decimal = Decimal(0)
    description: str = ""


def products(crm: CRM) -> dict[str, Product]:
    """The deployment's catalogue by SKU: ``[plugin.segment_b2b.products]`` or the default."""
    from . import PLUGIN_NAME

    table = crm.config.plugin(PLUGIN_NAME).get("products") or DEFAULT_PRODUCTS
    return {
        sku: Product(
            sku=sku,
            name=item["name"],
            series=item.get("series", ""),
            price=Decimal(str(item["price"])),
            description=item.get("description", ""),
        )
        for sku, item in table.items()
    }


def recommend(crm: CRM, client: Client) -> list[Product]:
    """The products the offer matrix recommends for ``client``, in the matrix's order.

    Empty while the client has no segment of this plugin or no potential yet
    (an incomplete card).
    """
    segment = crm.segments.get(client.segment or "")
    if segment is None or client.potential_category is None:
        return []
    catalogue = products(crm)
    skus = segment.settings.get("offers", {}).get(client.potential_category, [])
    return [catalogue[sku] for sku in skus if sku in catalogue]
