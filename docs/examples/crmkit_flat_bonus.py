"""crmkit-flat-bonus: a motivation scheme as a plugin.

A flat amount for each deal the person won in the period with a complete
record, minus a fixed amount for each overdue task, never below zero.
Select it in ``crmkit.toml``::

    [plugin.motivation]
    scheme = "flat"
    flat_per_deal = 1000     # paid per won deal with a complete record
    flat_per_overdue = 100   # taken per overdue task
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from crmkit import Bonus, ConfigError, Scheme, Standing, hookimpl

DEFAULTS = {"flat_per_deal": 1000, "flat_per_overdue": 100}


def check(settings: dict[str, Any], crm: Any) -> None:
    """Refuse a setting that is not an amount of zero or more, naming the key."""
    for key in DEFAULTS:
        value = settings.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(
                f"[plugin.motivation] {key} must be an amount of zero or more, not {value!r}",
                field=f"plugin.motivation.{key}",
            )


def flat(session: Any, standing: Standing) -> Bonus:
    """``flat_per_deal`` x complete won deals - ``flat_per_overdue`` x overdue tasks."""
    per_deal = Decimal(str(standing.settings.get("flat_per_deal", DEFAULTS["flat_per_deal"])))
    per_task = Decimal(str(standing.settings.get("flat_per_overdue", DEFAULTS["flat_per_overdue"])))
    # complete_records is (won deals with a complete record) / (won deals)
    complete = int(standing.facts["complete_records"].numerator)
    gross = (per_deal * complete).quantize(Decimal("0.01"))
    penalty = min(gross, per_task * len(standing.overdue)).quantize(Decimal("0.01"))
    return Bonus(
        base=per_deal,
        penalties=standing.overdue,
        gross=gross,
        penalty=penalty,
        total=gross - penalty,
        unattributed=standing.unattributed,
        notes=(f"{complete} won deals with a complete record x {per_deal}",),
    )


@hookimpl
def crmkit_motivation_schemes() -> list[Scheme]:
    return [Scheme("flat", "A flat amount per complete won deal", flat, check=check)]
