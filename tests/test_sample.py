"""The sample data set (``crmkit init DIR --sample``): realistic, seeded, and true to the rules."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import crmkit_segment_b2b
import pytest
from sqlalchemy import func, select

from crmkit import Conflict, ValidationError, hookimpl
from crmkit.core.pipeline import LOST, TERMINAL, WON
from crmkit.sample import COUNT_KEYS, populate

NOW = dt.datetime(2025, 11, 20, 15, 30, tzinfo=dt.UTC)
CLIENTS = 40


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    return [("segment_b2b", crmkit_segment_b2b)]


@pytest.fixture(scope="module")
def _shared_sample(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, dict[str, int]]]:
    """One deployment with the sample data, made once for the tests that only read it.

    Populating takes seconds (a minute on PostgreSQL under load), so the
    tests that only read the sample (``readonly`` sessions) share this one:
    a new deployment of the session's database kind (as ``crm`` makes, with
    the segment_b2b plugin), filled by ``populate(seed=7, clients=40, now=NOW)``.
    A test that writes uses ``crm`` or ``crm_factory`` and populates its own.
    """
    from crmkit import CRM
    from crmkit.core.plugins import load_plugins
    from crmkit.testing import database_kind

    plugins = load_plugins(entry_points=False)
    plugins.register(crmkit_segment_b2b, name="segment_b2b")
    plugins.pm.check_pending()
    url = None
    if database_kind(request.config) == "postgresql":
        server = request.getfixturevalue("crmkit_postgres")
        url = server.create_database(f"sample_{uuid.uuid4().hex[:16]}")
    root = tmp_path_factory.mktemp("sample") / "crm"
    crm = CRM.create(root, database_url=url, admin="admin", plugins=plugins)
    try:
        yield crm, populate(crm, seed=7, clients=CLIENTS, now=NOW)
    finally:
        crm.close()


@pytest.fixture
def sample(_shared_sample: tuple[Any, dict[str, int]]) -> tuple[Any, dict[str, int]]:
    """The shared sample deployment and the counts ``populate`` returned (read only)."""
    crm, counts = _shared_sample
    return crm, dict(counts)


def _count(s: Any, table: str, *where: Any) -> int:
    t = s.table(table)
    q = select(func.count()).select_from(t)
    for cond in where:
        q = q.where(cond(t.c))
    return int(s.connection.execute(q).scalar_one())


def _utc(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat()


def digest(crm: Any) -> str:
    """A fingerprint of what the sample made (ids left out: only content and order)."""
    with crm.session(readonly=True) as s:
        clients = {c.id: c for c in s.clients.iter()}
        deals = sorted(s.deals.list(limit=None), key=lambda d: d.id)
        deal_key = {d.id: (clients[d.client_id].name, d.title, _utc(d.opened_at)) for d in deals}

        def client_row(c: Any) -> list[Any]:
            return [
                c.name,
                c.email,
                c.phone,
                c.segment,
                c.params,
                c.owner,
                c.source,
                c.stage,
                _utc(c.created_at),
            ]

        def deal_row(d: Any) -> list[Any]:
            moves = [(h.from_stage, h.to_stage, _utc(h.at), h.cause) for h in s.deals.history(d.id)]
            return [
                deal_key[d.id],
                str(d.amount),
                d.stage,
                d.status.value,
                d.lost_reason,
                d.owner,
                _utc(d.stage_entered_at),
                _utc(d.closed_at),
                moves,
            ]

        def interaction_row(i: Any) -> list[Any]:
            return [
                clients[i.client_id].name,
                i.kind,
                i.topic,
                i.outcome,
                i.direction,
                i.user,
                _utc(i.occurred_at),
                deal_key.get(i.deal_id),
                i.duration_min,
            ]

        def invoice_row(v: Any) -> list[Any]:
            return [
                v.number,
                deal_key[v.deal_id],
                str(v.amount),
                v.status.value,
                _utc(v.issued_at),
                _utc(v.paid_at),
                _utc(v.cancelled_at),
            ]

        def task_row(t: Any) -> list[Any]:
            steps = [_utc(step.done_at) for step in t.steps]
            return [
                t.title,
                t.assignee,
                _utc(t.due_at),
                _utc(t.done_at),
                t.done_late,
                steps,
                deal_key.get(t.deal_id),
            ]

        def by_id(rows: list[Any]) -> list[Any]:
            return sorted(rows, key=lambda r: r.id)

        data = {
            "clients": [client_row(c) for c in clients.values()],
            "deals": [deal_row(d) for d in deals],
            "interactions": [interaction_row(i) for i in by_id(s.interactions.list(limit=None))],
            "invoices": [invoice_row(v) for v in by_id(s.invoices.list(limit=None))],
            "tasks": [task_row(t) for t in by_id(s.tasks.list(limit=None))],
        }
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def test_counts_match_the_database(sample: tuple[Any, dict[str, int]]) -> None:
    crm, counts = sample
    assert list(counts) == list(COUNT_KEYS)
    with crm.session(readonly=True) as s:
        assert counts["teams"] == len(s.teams.list()) == 3
        assert counts["users"] == len(s.users.list()) - 1  # the admin was there before
        assert 6 <= len(s.users.list(role="manager")) <= 8
        assert len(s.users.list(role="head")) == len(s.users.list(role="marketer")) == 1
        assert counts["clients"] == s.clients.count() == CLIENTS
        assert counts["contacts"] == _count(s, "contacts")
        assert counts["deals"] == _count(s, "deals")
        for status in ("won", "lost", "open"):
            assert counts[f"deals_{status}"] == len(s.deals.list(status=status, limit=None))
        assert counts["deals_won"] + counts["deals_lost"] + counts["deals_open"] == counts["deals"]
        assert counts["deals_stalled"] == len(s.deals.list(stalled=True, now=NOW, limit=None))
        assert counts["interactions"] == _count(s, "interactions")
        assert counts["invoices"] == _count(s, "invoices")
        assert counts["invoices_paid"] == len(s.invoices.list(status="paid", limit=None))
        assert counts["tasks"] == _count(s, "tasks")
        assert counts["tasks_overdue"] == len(s.tasks.list(overdue=True, now=NOW, limit=None))
        # every recorded time is at or before the reference time
        assert all(c.created_at <= NOW for c in s.clients.iter())
        assert all(i.occurred_at <= NOW for i in s.interactions.list(limit=None))


def test_the_people_and_the_clients_look_real(sample: tuple[Any, dict[str, int]]) -> None:
    crm, _ = sample
    with crm.session(readonly=True) as s:
        sales = s.teams.get("Sales")
        teams = [t for t in s.teams.list() if t.parent_id == sales.id]
        assert len(teams) == 2
        managers = {u.login for u in s.users.list(role="manager")}
        for team in teams:
            assert s.users.list(team=team.id, role="manager")
        clients = list(s.clients.iter())
        emails = [c.email.lower() for c in clients]
        assert len(set(emails)) == len(emails)
        assert all(e.endswith(".example") for e in emails)
        assert all(c.phone and c.owner in managers for c in clients)
        assert all(c.source in crm.channels for c in clients)
        assert len({c.source for c in clients}) >= 4
        oldest = min(c.created_at for c in clients)
        assert NOW - dt.timedelta(days=366) <= oldest < NOW - dt.timedelta(days=90)
        segmented = [c for c in clients if c.segment]
        assert len(segmented) > len(clients) * 0.7
        assert {c.segment for c in segmented} == {"distributor", "corporate"}
        for c in segmented:  # complete cards, valid for the segment's schema
            assert crm.segment(c.segment).validate(c.params, complete=True) == []
        for c in clients:
            contacts = s.contacts.list(c.id)
            assert 1 <= len(contacts) <= 3
            assert len({x.email for x in contacts}) == len(contacts)
        kinds = {i.kind for i in s.interactions.list(limit=None)}
        assert {"call", "meeting", "email", "mailing"} <= kinds
        calls = s.interactions.list(kind="call", limit=None)
        assert {c.direction.value for c in calls} == {"inbound", "outbound"}
        for i in s.interactions.list(limit=None):  # formal lists only
            spec = crm.interaction_kinds[i.kind]
            assert i.topic in spec.topics and i.outcome in spec.outcomes


def test_same_seed_and_now_give_the_same_data(crm_factory: Any) -> None:
    first, second, other = crm_factory("a"), crm_factory("b"), crm_factory("c")
    assert populate(first, seed=3, clients=25, now=NOW) == populate(
        second, seed=3, clients=25, now=NOW
    )
    populate(other, seed=4, clients=25, now=NOW)
    assert digest(first) == digest(second)
    assert digest(first) != digest(other)


def test_won_lost_open_stalled_and_overdue_are_all_there(
    sample: tuple[Any, dict[str, int]],
) -> None:
    crm, counts = sample
    for key in ("deals_won", "deals_lost", "deals_open", "deals_stalled", "tasks_overdue"):
        assert counts[key] > 0, key
    flow = crm.pipelines["b2b"]
    with crm.session(readonly=True) as s:
        lost = s.deals.list(status="lost", limit=None)
        assert all(d.lost_reason in flow.lost_reasons for d in lost)
        assert len({d.lost_reason for d in lost}) >= 3
        lost_from = {s.deals.history(d.id)[-1].from_stage for d in lost}
        assert len(lost_from) >= 3  # lost at various stages
        stalled = s.deals.list(stalled=True, now=NOW, limit=None)
        assert all(s.deals.is_stalled(d, NOW) for d in stalled)
        assert [d for d in s.deals.list(status="open", limit=None) if d not in stalled]
        # a won deal of the sales pipeline has been invoiced and paid before it was won
        for deal in s.deals.list(status="won", pipeline="b2b", limit=None):
            invoices = s.invoices.list(deal_id=deal.id)
            paid = [v for v in invoices if v.status.value == "paid"]
            assert paid and all(v.paid_at <= deal.closed_at for v in paid)
            issued_in = s.deals.stage_at(deal.id, paid[0].issued_at)
            assert issued_in == "contract_invoice"
        tasks = s.tasks.list(limit=None)
        late = [t for t in tasks if t.done_at is not None and t.done_late]
        on_time = [t for t in tasks if t.done_at is not None and not t.done_late]
        open_overdue = [t for t in tasks if t.done_at is None and t.due_at < NOW]
        assert late and on_time and open_overdue
        assert all(t.done_at > t.due_at for t in late)
        # the outcome rules did move deals, and made the follow-up tasks
        causes = {h.cause for d in s.deals.list(limit=None) for h in s.deals.history(d.id)[1:]}
        assert {"interaction", "manual"} <= causes
        assert any(t.title == "Prepare and send the commercial proposal" for t in tasks)


def _check_history(s: Any, flow: Any, deal: Any, rng: random.Random) -> None:
    history = s.deals.history(deal.id)
    assert history, deal
    first = history[0]
    assert (first.from_stage, first.to_stage, first.cause) == (None, flow.first.name, "opened")
    assert first.at == deal.opened_at
    order = {name: flow.stage(name).order for name in [*flow.stage_names, *TERMINAL]}
    for before, after in itertools.pairwise(history):
        assert before.at <= after.at, deal
        assert after.from_stage == before.to_stage, deal
        assert order[after.to_stage] > order[after.from_stage], deal  # forward only
        assert before.to_stage not in TERMINAL, deal
    last = history[-1]
    assert last.to_stage == deal.stage
    assert last.at == deal.stage_entered_at
    assert s.deals.stage_at(deal.id, NOW) == deal.stage
    if deal.status.value in TERMINAL:
        assert deal.closed_at == last.at and deal.stage == deal.status.value
        if deal.stage == LOST:
            assert last.note == deal.lost_reason or "cannot move" in last.note
    else:
        assert deal.closed_at is None
    assert s.deals.stage_at(deal.id, deal.opened_at - dt.timedelta(seconds=1)) is None
    span = (NOW - deal.opened_at).total_seconds()
    moments = [deal.opened_at + dt.timedelta(seconds=rng.uniform(0, span)) for _ in range(5)]
    moments += [h.at for h in history]
    for moment in moments:
        replayed = None
        for change in history:
            if change.at <= moment:
                replayed = change.to_stage
        assert s.deals.stage_at(deal.id, moment) == replayed, (deal.id, moment)


def test_the_stage_history_of_every_deal_is_complete(sample: tuple[Any, dict[str, int]]) -> None:
    crm, counts = sample
    flow = crm.pipelines["b2b"]
    rng = random.Random(1)
    with crm.session(readonly=True) as s:
        deals = s.deals.list(limit=None)
        assert len(deals) == counts["deals"]
        for deal in _sales(s, deals):
            _check_history(s, flow, deal, rng)
        # the client lifecycle chains as well
        first = s.crm.lifecycle.first.name
        for client in s.clients.iter():
            # the first stage is implied by the client's creation; moves chain from it
            history = s.history.of("client", client.id)
            assert s.history.stage_at("client", client.id, client.created_at) == (
                history[0].to_stage if history and history[0].at == client.created_at else first
            )
            if not history:
                assert client.stage == first
                continue
            assert history[0].from_stage == first and history[0].at >= client.created_at
            for before, after in itertools.pairwise(history):
                assert before.at <= after.at and after.from_stage == before.to_stage
            assert history[-1].to_stage == client.stage
        reached = {h.to_stage for d in deals for h in s.deals.history(d.id)}
        assert {*flow.stage_names, WON, LOST} <= reached


def _sales(s: Any, deals: list[Any]) -> list[Any]:
    """The deals of the sales pipeline; the web orders are checked to be what they are.

    The sample's web orders (``crmkit.sample._shortcuts``) were won at once
    from the ``webshop`` pipeline's first stage with nothing logged: the deals
    no bonus counts.
    """
    web = [d for d in deals if d.pipeline == "webshop"]
    assert len(web) >= 2
    for deal in web:
        first = s.crm.pipelines["webshop"].first.name
        assert [(h.from_stage, h.to_stage) for h in s.deals.history(deal.id)] == [
            (None, first),
            (first, WON),
        ]
        assert s.interactions.list(deal_id=deal.id, limit=None) == []
    return [d for d in deals if d.pipeline == "b2b"]


def test_without_a_segment_plugin_deals_stop_before_the_proposal_gate(crm_factory: Any) -> None:
    crm = crm_factory("plain", plugins=[])
    assert not crm.segments
    counts = populate(crm, seed=7, clients=30, now=NOW)
    flow = crm.pipelines["b2b"]
    proposal = flow.stage("proposal").order
    rng = random.Random(2)
    with crm.session(readonly=True) as s:
        assert all(c.segment is None for c in s.clients.iter())
        deals = s.deals.list(limit=None)
        assert len(deals) == counts["deals"] > 0
        sales = _sales(s, deals)
        assert not [d for d in sales if d.status.value == "won"] and counts["invoices"] == 0
        assert counts["deals_lost"] > 0 and counts["deals_open"] > 0
        for deal in sales:
            _check_history(s, flow, deal, rng)
            assert all(
                h.to_stage in TERMINAL or flow.stage(h.to_stage).order < proposal
                for h in s.deals.history(deal.id)
            )


class StrictContracts:
    """A gate the sample does not know about: big deals need a signed framework contract."""

    @hookimpl
    def crmkit_check_stage_entry(
        self, session: Any, pipeline: Any, stage: Any, deal: Any, client: Any
    ) -> list[str]:
        if deal is not None and stage.name == "contract_invoice" and deal.amount > 300_000:
            return ["a framework contract must be signed first"]
        return []


def test_a_move_refused_by_an_unknown_gate_loses_the_deal(crm_factory: Any) -> None:
    plugins = [("segment_b2b", crmkit_segment_b2b), ("strict", StrictContracts())]
    crm = crm_factory("strict", plugins=plugins)
    counts = populate(crm, seed=7, clients=CLIENTS, now=NOW)
    flow = crm.pipelines["b2b"]
    rng = random.Random(3)
    with crm.session(readonly=True) as s:
        deals = s.deals.list(limit=None)
        assert len(deals) == counts["deals"]
        refused = [
            d
            for d in deals
            if d.stage == LOST and "framework contract" in s.deals.history(d.id)[-1].note
        ]
        assert refused and all(d.lost_reason == "bad_fit" for d in refused)
        for deal in _sales(s, deals):
            _check_history(s, flow, deal, rng)
            if deal.amount > 300_000:
                assert "contract_invoice" not in {h.to_stage for h in s.deals.history(deal.id)}


def test_only_a_new_deployment_takes_sample_data(crm: Any) -> None:
    populate(crm, seed=1, clients=3, now=NOW)
    with pytest.raises(Conflict, match="new deployment"):
        populate(crm, seed=1, clients=3, now=NOW)
    with crm.session(readonly=True) as s:
        assert s.clients.count() == 3


def test_bad_arguments(crm: Any) -> None:
    with pytest.raises(ValidationError):
        populate(crm, clients=-1, now=NOW)
    counts = populate(crm, clients=0, now=NOW)
    assert counts["clients"] == counts["deals"] == counts["interactions"] == 0
    assert counts["users"] == 9


def test_plans_bonuses_penalties_and_unattributed_deals(sample: tuple[Any, dict[str, int]]) -> None:
    """Issue 8 on the sample: plans for the last and current month, bonuses with penalties,
    and the web orders won with nothing logged listed as unattributed."""
    crm, _ = sample
    last_month = (NOW.date().replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    with crm.session(readonly=True) as s:
        plans = s.plans.list(period=last_month)
        assert {p.kpi for p in plans} >= {"attributed_revenue", "calls_outbound"}
        bonus = {
            period: s.report("bonus", period=period, as_of=NOW.date().isoformat())
            for period in (last_month, NOW.strftime("%Y-%m"))
        }
    rows = [row for result in bonus.values() for row in result.rows]
    assert any(row["penalty"] > 0 for row in rows)
    assert any(row["bonus"] > 0 for row in rows)
    assert sum(row["unattributed"] for row in rows) >= 2
    assert (crm.config.root / "crmkit.toml").read_text("utf-8").count("[plugin.kpis]") == 1
