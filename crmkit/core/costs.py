"""What marketing channels cost: ``s.channel_costs`` (``crmkit channel cost``)."""

from __future__ import annotations

import builtins
import datetime as dt
import decimal
from typing import TYPE_CHECKING, Any

from attrs import frozen
from sqlalchemy import and_, insert, select, update

from .errors import Problem, ValidationError
from .model import Role
from .schema import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from .store import Session


@frozen
class ChannelCost:
    """What a channel cost over a period: ``start`` included, ``end`` excluded."""

    id: int
    channel: str
    period: str
    start: dt.date
    end: dt.date
    amount: decimal.Decimal
    currency: str
    note: str | None = None


class ChannelCosts:
    """The recorded costs of marketing channels, one amount per channel, period and currency."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.t = session.tables["channel_costs"]

    def record(
        self,
        channel: str,
        *,
        period: str,
        amount: Any,
        currency: str | None = None,
        note: str | None = None,
    ) -> ChannelCost:
        """Record what ``channel`` cost over ``period``; the same period again replaces it.

        Admins, heads and marketers may. Raises :class:`ValidationError`
        naming every bad field: an unknown channel, a bad period, an amount
        that is not money or is negative, a currency that is not three letters.
        """
        from .lifecycle import _currency
        from .reports import parse_period
        from .validation import parse_money

        self.s.require_role(Role.ADMIN, Role.HEAD, Role.MARKETER)
        problems: list[Problem] = []
        values: dict[str, Any] = {}
        today = dt.datetime.now(self.s.crm.tz).date()
        for key, fn in (
            ("channel", lambda: self.s.crm.channel(channel).name),
            ("period", lambda: parse_period(period, today=today)),
            ("amount", lambda: parse_money(amount)),
            ("currency", lambda: _currency(currency or self.s.crm.config.currency)),
        ):
            try:
                values[key] = fn()
            except ValidationError as exc:
                problems.append(Problem(key, exc.message))
        if problems:
            raise ValidationError.from_problems(problems)
        span = values.pop("period")
        row = {
            "channel": values["channel"],
            "period_start": span.start,
            "period_end": span.end,
            "period": span.label,
            "amount": values["amount"],
            "currency": values["currency"],
            "note": note,
            "created_by": self.s.user.id,
            "created_at": utcnow(),
        }
        t = self.t
        match = and_(
            t.c.channel == row["channel"],
            t.c.period_start == span.start,
            t.c.period_end == span.end,
            t.c.currency == row["currency"],
        )
        conn = self.s.connection
        found = conn.execute(select(t.c.id, t.c.amount).where(match)).first()
        if found is None:
            cost_id = int(conn.execute(insert(t).values(row).returning(t.c.id)).scalar_one())
            self.s.record("channel_cost", cost_id, "recorded", _jsonable(row))
        else:
            cost_id = found.id
            conn.execute(update(t).where(t.c.id == cost_id).values(row))
            self.s.record(
                "channel_cost",
                cost_id,
                "updated",
                {"amount": {"old": str(found.amount), "new": str(row["amount"])}},
            )
        return self.get(cost_id)

    def get(self, cost_id: int) -> ChannelCost:
        """The cost record with this id."""
        from .errors import NotFound

        row = self.s.connection.execute(select(self.t).where(self.t.c.id == cost_id)).first()
        if row is None:
            raise NotFound(f"no channel cost with id {cost_id}", field="cost")
        return _cost(row)

    def list(
        self,
        *,
        channel: str | None = None,
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> builtins.list[ChannelCost]:
        """The cost records of ``channel`` (all channels by default) that overlap ``start..end``."""
        t = self.t
        q = select(t).order_by(t.c.period_start, t.c.channel, t.c.currency)
        if channel is not None:
            q = q.where(t.c.channel == self.s.crm.channel(channel).name)
        if start is not None:
            q = q.where(t.c.period_end > start)
        if end is not None:
            q = q.where(t.c.period_start < end)
        return [_cost(r) for r in self.s.connection.execute(q)]


def _cost(row: Any) -> ChannelCost:
    return ChannelCost(
        id=row.id,
        channel=row.channel,
        period=row.period,
        start=row.period_start,
        end=row.period_end,
        amount=decimal.Decimal(row.amount).quantize(decimal.Decimal("0.01")),
        currency=row.currency,
        note=row.note,
    )


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v.isoformat() if hasattr(v, "isoformat") else str(v) if k == "amount" else v)
        for k, v in row.items()
    }
