"""Stays: each stage change is closed by the record's next one (``left_at``, ``next_stage``).

Whoever writes ``stage_changes`` keeps the three columns true: a live move
(:func:`crmkit.core.lifecycle.move_entity`), the deal importer (which writes
whole histories) and the bulk moves of clients that imported wins make; the
migration ``crmkit_0007`` fills them for what was stored before. Each test
compares them with what the history says, computed here from the rows in order.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def stays(crm: Any) -> dict[int, tuple[Any, ...]]:
    """``{change id: (left_at, next_stage, stay_seconds)}`` as stored."""
    t = crm.metadata.tables["stage_changes"]
    with crm.connect() as conn:
        rows = conn.execute(select(t.c.id, t.c.left_at, t.c.next_stage, t.c.stay_seconds))
        return {r.id: (r.left_at, r.next_stage, r.stay_seconds) for r in rows}


def expected_stays(crm: Any) -> dict[int, tuple[Any, ...]]:
    """The same, from each record's changes in order (``at``, then id)."""
    t = crm.metadata.tables["stage_changes"]
    with crm.connect() as conn:
        rows = conn.execute(
            select(t.c.id, t.c.entity, t.c.entity_id, t.c.to_stage, t.c.at).order_by(
                t.c.entity, t.c.entity_id, t.c.at, t.c.id
            )
        ).all()
    found: dict[int, tuple[Any, ...]] = {}
    for row, after in zip(rows, [*rows[1:], None], strict=True):
        same = after is not None and (after.entity, after.entity_id) == (row.entity, row.entity_id)
        found[row.id] = (
            (after.at, after.to_stage, int((after.at - row.at).total_seconds()))
            if same
            else (None, None, None)
        )
    return found


def test_a_live_move_closes_the_stay_it_ends(crm):
    with crm.session() as s:
        client = s.clients.create("Acme")
        deal = s.deals.open(client.id, pipeline="webshop", at=T0)
        s.deals.move(deal.id, "visit", at=T0 + dt.timedelta(hours=5, seconds=7))
        s.deals.move(deal.id, "cart", at=T0 + dt.timedelta(days=2))
        s.deals.lose(deal.id, "abandoned_cart", at=T0 + dt.timedelta(days=3))
        history = s.deals.history(deal.id)
    assert [(h.to_stage, h.next_stage, h.stay_seconds) for h in history] == [
        ("ad", "visit", 5 * 3600 + 7),
        ("visit", "cart", 2 * 86400 - 5 * 3600 - 7),
        ("cart", "lost", 86400),
        ("lost", None, None),
    ]
    assert [h.left_at for h in history] == [h.at for h in history[1:]] + [None]
    assert stays(crm) == expected_stays(crm)


def test_imported_histories_and_the_clients_they_make_customers(crm, tmp_path):
    """The importer writes closed stays; the wins it imports move clients, whose stays close too."""
    from crmkit.transfer.importer import import_file

    since = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with crm.session() as s:
        s.clients.create("One", external_id="C-1", created_at=since)
        two = s.clients.create("Two", external_id="C-2", created_at=since)
        s.clients.move(two.id, "lost", reason="competitor", at=since + dt.timedelta(days=1))
    source = tmp_path / "deals.csv"
    source.write_text(
        "client_external_id,pipeline,title,status,stage.ad,stage.cart,closed_at,external_id\n"
        "C-1,webshop,First,won,2026-01-10,2026-01-11T06:30,2026-01-12,D-1\n"
        "C-1,webshop,Second,won,2026-02-10,,2026-02-11,D-2\n"
        "C-2,webshop,Back,won,2026-03-01,,2026-03-02,D-3\n"
        "C-2,webshop,Open,open,2026-03-05,2026-03-06,,D-4\n"
    )
    result = import_file(crm, "deals", source)
    assert result.inserted == 4, result.errors
    stored = stays(crm)
    assert stored == expected_stays(crm)
    with crm.session(readonly=True) as s:
        first = next(d for d in s.deals.list() if d.external_id == "D-1")
        assert [(h.to_stage, h.stay_seconds) for h in s.deals.history(first.id)] == [
            ("ad", 30 * 3600 + 1800),
            ("cart", 17 * 3600 + 1800),
            ("won", None),
        ]
        clients = [h.next_stage for h in s.history.of("client", two.id)]
    assert clients == ["customer", None]  # lost, then a customer again at the imported win


@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_the_migration_fills_the_stays_already_stored(crm):
    from alembic import command

    from crmkit.core.migrate import alembic_config

    with crm.session() as s:
        client = s.clients.create("Acme", created_at=T0 - dt.timedelta(days=30))
        for n in range(3):
            deal = s.deals.open(client.id, pipeline="webshop", at=T0 + dt.timedelta(hours=n))
            s.deals.move(deal.id, "visit", at=T0 + dt.timedelta(days=1, hours=n))
            if n:
                s.deals.move(deal.id, "cart", at=T0 + dt.timedelta(days=1 + n, minutes=n))
        s.clients.move(client.id, "lost", reason="competitor", at=T0 + dt.timedelta(days=9))
    before = stays(crm)
    assert sum(1 for left_at, _, _ in before.values() if left_at is not None) == 5
    with crm.connect() as conn:
        command.downgrade(alembic_config(crm, conn), "crmkit@crmkit_0006")
    with crm.connect() as conn:
        command.upgrade(alembic_config(crm, conn), "crmkit@head")
    assert stays(crm) == before == expected_stays(crm)


def test_a_stay_carries_the_amount_of_its_time(crm):
    """``deal_amount``: at entry, then new amounts while the deal is there; closed stays keep it."""
    with crm.session() as s:
        client = s.clients.create("Acme")
        deal = s.deals.open(client.id, pipeline="webshop", amount=100, at=T0)
        s.deals.move(deal.id, "visit", at=T0 + dt.timedelta(days=1))
        s.deals.update(deal.id, amount=250)
        s.deals.move(deal.id, "cart", at=T0 + dt.timedelta(days=2))
        s.deals.update(deal.id, amount="300.50")
        history = s.deals.history(deal.id)
    assert [(h.to_stage, h.deal_amount, h.deal_opened_at) for h in history] == [
        ("ad", 100, T0),
        ("visit", 250, T0),
        ("cart", Decimal("300.50"), T0),
    ]
