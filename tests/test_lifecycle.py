"""The lifecycle engine through the Python API: interactions, pipelines, deals, invoices, tasks."""

from __future__ import annotations

import datetime as dt
import textwrap
from decimal import Decimal

import pytest

import crmkit
from crmkit import Conflict, NotFound, Segment, ValidationError, hookimpl

NOW = dt.datetime.now(dt.UTC)


class Segments:
    @hookimpl
    def crmkit_segments(self):
        return [Segment("retail", "Retail", {"type": "object"})]


@pytest.fixture
def crmkit_plugins():
    return [Segments()]


@pytest.fixture
def acme(session):
    """A client with a segment (so the proposal gate can open) and a contact."""
    client = session.clients.create("Acme", email="buy@acme.example", segment="retail")
    session.contacts.add(client.id, "Ivan Petrov")
    return client


def log_call(s, client, outcome, **kw):
    return s.interactions.log(
        client.id, "call", topic="first_contact", outcome=outcome, direction="outbound", **kw
    )


# -- interactions ----------------------------------------------------------------------
def test_log_an_interaction(session, acme):
    ivan = session.contacts.list(acme.id)[0]
    at = dt.datetime(2026, 3, 2, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    logged = log_call(
        session,
        acme,
        "interested",
        at=at,
        duration=12,
        respondents=[ivan.id],
        note="Wants a price list",
    )
    got = session.interactions.get(logged.interaction.id)
    assert got.kind == "call" and got.direction == "outbound" and got.outcome == "interested"
    assert got.occurred_at == at and got.occurred_at.utcoffset() == dt.timedelta(0)
    assert got.respondents == [ivan.id] and got.duration_min == 12 and got.user == "admin"
    assert got.note == "Wants a price list"
    assert session.interactions.list(client_id=acme.id) == [got]


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        (
            {"kind": "fax"},
            "kind",
            "allowed: call, campaign, document, email, event, letter, mailing, meeting",
        ),
        ({"topic": "weather"}, "topic", "allowed: first_contact, qualification"),
        ({"outcome": "happy"}, "outcome", "allowed: no_answer, callback_requested"),
        ({"direction": None}, "direction", "is required for this kind"),
        ({"direction": "sideways"}, "direction", "is not one of inbound, outbound"),
        ({"at": "next tuesday"}, "at", "is not a date or time"),
        ({"duration": -5}, "duration", "between 0 and 1440"),
        ({"respondents": [999]}, "respondent", "contact #999 is not a contact of client"),
    ],
)
def test_bad_interactions_are_refused_and_nothing_is_written(session, acme, kwargs, field, text):
    args = {
        "kind": "call",
        "topic": "first_contact",
        "outcome": "interested",
        "direction": "inbound",
        **kwargs,
    }
    kind = args.pop("kind")
    with pytest.raises(ValidationError) as err:
        session.interactions.log(acme.id, kind, **args)
    problems = {p.field: p.reason for p in err.value.problems}
    assert field in problems and text in problems[field], problems
    assert session.interactions.list() == []


def test_interaction_for_a_deal_of_another_client(session, acme):
    other = session.clients.create("Other")
    deal = session.deals.open(other.id, pipeline="b2b", amount=100)
    with pytest.raises(ValidationError, match=f"deal #{deal.id} belongs to client #{other.id}"):
        log_call(session, acme, "interested", deal_id=deal.id)


def test_kinds_are_extended_in_config(crm_factory):
    crm = crm_factory(plugins=[])
    path = crm.config.root / "crmkit.toml"
    path.write_text(
        path.read_text()
        + textwrap.dedent(
            """
        [interactions.call]
        outcomes = ["tender_won"]
        [interactions.visit]
        title = "Site visit"
        topics = {audit = "Warehouse audit"}
        outcomes = ["done"]
        """
        )
    )
    reopened = crmkit.CRM.open(crm.config.root, plugins=crm.plugins)
    assert "tender_won" in reopened.interaction_kind("call").outcomes
    assert "no_answer" in reopened.interaction_kind("call").outcomes  # built-ins kept
    assert reopened.interaction_kind("visit").topics == {"audit": "Warehouse audit"}
    with reopened.session() as s:
        client = s.clients.create("X")
        s.interactions.log(client.id, "visit", topic="audit", outcome="done")
    reopened.close()


# -- deals: forward only ---------------------------------------------------------------
def test_open_a_deal(session, acme):
    deal = session.deals.open(
        acme.id, pipeline="b2b", amount="1 500,50", title="Pallets", expected_close="2026-12-31"
    )
    assert deal.stage == "qualification" and deal.status == "open"
    assert deal.amount == Decimal("1500.50") and deal.currency == "RUB"
    assert deal.expected_close == dt.date(2026, 12, 31) and deal.owner == "admin"
    [first] = session.deals.history(deal.id)
    assert (first.from_stage, first.to_stage, first.cause) == (None, "qualification", "opened")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pipeline": "nope"}, "pipeline"),
        ({"pipeline": "lifecycle"}, "pipeline"),  # a client pipeline is not for deals
        ({"amount": "-1"}, "amount"),
        ({"amount": "1.234"}, "amount"),
        ({"currency": "rubles"}, "currency"),
        ({"owner": "ghost"}, "owner"),
        ({"expected_close": "31.12.2026"}, "close_by"),
    ],
)
def test_bad_deals(session, acme, kwargs, field):
    with pytest.raises(ValidationError) as err:
        session.deals.open(acme.id, **{"pipeline": "b2b", **kwargs})
    assert field in {p.field for p in err.value.problems}


def test_moves_go_forward_only(session, acme):
    deal = session.deals.open(acme.id, pipeline="b2b", amount=100)
    session.deals.move(deal.id, "presentation")
    with pytest.raises(ValidationError, match=r"moves forward only.*goes backwards"):
        session.deals.move(deal.id, "qualification")
    with pytest.raises(ValidationError, match="the stage it is in"):
        session.deals.move(deal.id, "presentation")
    with pytest.raises(ValidationError, match=r"does not allow skipping stages \(proposal"):
        session.deals.move(deal.id, "contract_invoice")
    with pytest.raises(ValidationError, match="does not allow skipping"):
        session.deals.win(deal.id)
    with pytest.raises(ValidationError, match="not a stage of pipeline 'b2b'"):
        session.deals.move(deal.id, "negotiation")
    assert session.deals.get(deal.id).stage == "presentation"
    assert len(session.deals.history(deal.id)) == 2


def test_skipping_where_the_pipeline_allows_it(session, acme):
    deal = session.deals.open(acme.id, pipeline="webshop", amount=30)
    session.deals.move(deal.id, "cart")
    session.deals.win(deal.id)
    assert session.deals.get(deal.id).status == "won"


def test_win_and_lose(session, acme):
    won = session.deals.open(acme.id, pipeline="b2b", amount=100)
    for stage in ("presentation", "proposal", "contract_invoice", "payment_shipment"):
        session.deals.move(won.id, stage)
    session.deals.win(won.id)
    deal = session.deals.get(won.id)
    assert (deal.status, deal.stage) == ("won", "won") and deal.closed_at is not None
    with pytest.raises(ValidationError, match="already won"):
        session.deals.lose(won.id, "price")

    lost = session.deals.open(acme.id, pipeline="b2b", amount=100)
    with pytest.raises(ValidationError, match="give a reason"):
        session.deals.move(lost.id, "lost")
    with pytest.raises(ValidationError, match=r"'cheaper' is not a lost reason.*allowed: price"):
        session.deals.lose(lost.id, "cheaper")
    session.deals.lose(lost.id, "competitor", note="Went with Beta")
    deal = session.deals.get(lost.id)
    assert (deal.status, deal.lost_reason) == ("lost", "competitor")
    last = session.deals.history(lost.id)[-1]
    assert (last.from_stage, last.to_stage, last.note) == (
        "qualification",
        "lost",
        "Went with Beta",
    )


def test_a_move_cannot_be_dated_before_the_stage_was_entered(session, acme):
    deal = session.deals.open(acme.id, pipeline="b2b", amount=1, at=NOW - dt.timedelta(days=2))
    with pytest.raises(ValidationError, match="is before deal"):
        session.deals.move(deal.id, "presentation", at=NOW - dt.timedelta(days=3))


# -- gates -----------------------------------------------------------------------------
def test_gate_lists_every_unmet_requirement(session):
    bare = session.clients.create("No segment yet")
    deal = session.deals.open(bare.id, pipeline="b2b", amount=0)
    session.deals.move(deal.id, "presentation")
    with pytest.raises(ValidationError) as err:
        session.deals.move(deal.id, "proposal")
    assert {p.field for p in err.value.problems} == {"client.segment", "deal.amount"}
    assert str(err.value).startswith(f"stage: cannot move deal #{deal.id} to 'proposal': ")
    session.clients.update(bare.id, segment="retail")
    session.deals.update(deal.id, amount=5000)
    session.deals.move(deal.id, "proposal")


def test_gate_hook_adds_plugin_checks(session, acme, register_plugin):
    class NeedsContract:
        @hookimpl
        def crmkit_check_stage_entry(self, session, pipeline, stage, deal, client):
            if stage.name == "contract_invoice" and not deal.expected_close:
                return ["deal.expected_close: set the expected close date first"]
            return []

    register_plugin(NeedsContract())
    deal = session.deals.open(acme.id, pipeline="b2b", amount=1)
    for stage in ("presentation", "proposal"):
        session.deals.move(deal.id, stage)
    with pytest.raises(ValidationError, match="set the expected close date first"):
        session.deals.move(deal.id, "contract_invoice")
    session.deals.update(deal.id, expected_close="2026-12-01")
    session.deals.move(deal.id, "contract_invoice")


# -- outcome rules ---------------------------------------------------------------------
def test_outcome_rules_move_the_deal_and_add_tasks(session, acme):
    deal = session.deals.open(acme.id, pipeline="b2b", amount=100)
    logged = log_call(session, acme, "meeting_scheduled", deal_id=deal.id)
    moves = [(c.entity, c.from_stage, c.to_stage, c.cause) for c in logged.changes]
    assert ("deal", "qualification", "presentation", "interaction") in moves
    assert ("client", "lead", "qualified", "interaction") in moves
    assert all(c.interaction_id == logged.interaction.id for c in logged.changes)

    logged = session.interactions.log(
        acme.id, "meeting", topic="presentation", outcome="proposal_requested", deal_id=deal.id
    )
    assert [c.to_stage for c in logged.changes] == ["proposal"]
    [task] = logged.tasks
    assert task.title == "Prepare and send the commercial proposal" and len(task.steps) == 3
    assert task.deal_id == deal.id and task.due_at == logged.interaction.occurred_at + dt.timedelta(
        hours=24
    )

    # the deal is past presentation: the rule for meeting_scheduled no longer applies
    again = log_call(session, acme, "meeting_scheduled", deal_id=deal.id)
    assert again.changes == [] and again.refused == []
    assert session.deals.get(deal.id).stage == "proposal"


def test_a_move_refused_by_the_gate_is_reported_and_the_call_kept(session):
    bare = session.clients.create("Bare")
    deal = session.deals.open(bare.id, pipeline="b2b", amount=100)
    session.deals.move(deal.id, "presentation")
    logged = session.interactions.log(
        bare.id, "meeting", topic="presentation", outcome="proposal_requested", deal_id=deal.id
    )
    assert [c.entity for c in logged.changes] == ["client"]  # the lifecycle still moves
    assert len(logged.refused) == 1 and "client.segment" in logged.refused[0]
    # instead of "prepare the proposal", the manager is asked to complete the card first
    [task] = logged.tasks
    assert task.title == (
        "Complete what 'proposal' needs, then: Prepare and send the commercial proposal"
    )
    assert [step.text for step in task.steps] == ["client.segment: is required (it is empty)"]
    assert session.interactions.get(logged.interaction.id).outcome == "proposal_requested"
    assert session.deals.get(deal.id).stage == "presentation"


def test_won_deals_make_customers_then_repeat_customers(session, acme):
    for n in range(2):
        deal = session.deals.open(acme.id, pipeline="webshop", amount=10)
        session.deals.win(deal.id)
        assert session.clients.get(acme.id).stage == ("customer", "repeat_customer")[n]
    history = session.history.of("client", acme.id)
    assert [(h.to_stage, h.cause) for h in history] == [
        ("customer", "automation"),
        ("repeat_customer", "automation"),
    ]


def test_client_lifecycle_moves_by_hand(session, acme):
    session.clients.move(acme.id, "qualified")
    with pytest.raises(ValidationError, match="forward only"):
        session.clients.move(acme.id, "lead")
    session.clients.move(acme.id, "lost", reason="closed_down")
    assert session.clients.get(acme.id).stage == "lost"


# -- SLA and stalled deals -------------------------------------------------------------
def test_stalled_deals(session, acme):
    fresh = session.deals.open(acme.id, pipeline="b2b", amount=1)
    old = session.deals.open(acme.id, pipeline="b2b", amount=1, at=NOW - dt.timedelta(days=8))
    moved = session.deals.open(acme.id, pipeline="b2b", amount=1, at=NOW - dt.timedelta(days=30))
    session.deals.move(moved.id, "presentation", at=NOW - dt.timedelta(days=1))
    assert [d.id for d in session.deals.list(stalled=True)] == [old.id]  # qualification: 7 days
    assert {d.id for d in session.deals.list(stalled=False)} == {fresh.id, moved.id}
    assert session.deals.is_stalled(session.deals.get(old.id))
    later = NOW + dt.timedelta(days=14, hours=1)  # presentation allows 14 days
    assert {d.id for d in session.deals.list(stalled=True, now=later)} == {
        fresh.id,
        old.id,
        moved.id,
    }
    session.deals.lose(old.id, "no_response")
    assert old.id not in [d.id for d in session.deals.list(stalled=True)]


# -- stage history ---------------------------------------------------------------------
def test_stage_at_any_past_moment_comes_from_the_history(session, acme):
    t0 = NOW - dt.timedelta(days=20)
    deal = session.deals.open(acme.id, pipeline="b2b", amount=1, at=t0)
    session.deals.move(deal.id, "presentation", at=t0 + dt.timedelta(days=2))
    session.deals.move(deal.id, "proposal", at=t0 + dt.timedelta(days=5))
    session.deals.lose(deal.id, "price", at=t0 + dt.timedelta(days=9))
    expect = {
        -1: None,
        0: "qualification",
        1: "qualification",
        2: "presentation",
        4: "presentation",
        6: "proposal",
        9: "lost",
        19: "lost",
    }
    for day, stage in expect.items():
        assert session.deals.stage_at(deal.id, t0 + dt.timedelta(days=day)) == stage
    assert session.deals.stage_at(deal.id, NOW) == session.deals.get(deal.id).stage


# -- invoices --------------------------------------------------------------------------
def test_invoices(session, acme, register_plugin):
    seen = []

    class Watcher:
        @hookimpl
        def crmkit_invoice_status_changed(self, session, invoice, old_status):
            seen.append((invoice.number, old_status, invoice.status.value))

    register_plugin(Watcher())
    deal = session.deals.open(acme.id, pipeline="b2b", amount=100)
    first = session.invoices.issue(deal.id, "100")
    second = session.invoices.issue(deal.id, 50, number="A-7")
    assert first.number.endswith("-00001") and first.status == "issued"
    paid = session.invoices.pay(first.id)
    assert paid.status == "paid" and paid.paid_at >= paid.issued_at
    with pytest.raises(Conflict, match="is paid; only an issued invoice"):
        session.invoices.pay(first.id)
    session.invoices.cancel(second.id)
    with pytest.raises(Conflict, match="already exists"):
        session.invoices.issue(deal.id, 1, number="A-7")
    assert seen == [
        (first.number, None, "issued"),
        ("A-7", None, "issued"),
        (first.number, "issued", "paid"),
        ("A-7", "issued", "cancelled"),
    ]
    assert [e["action"] for e in session.events("invoice", first.id)] == ["issued", "paid"]
    assert [i.number for i in session.invoices.list(status="paid")] == [first.number]
    lost = session.deals.open(acme.id, pipeline="b2b", amount=1)
    session.deals.lose(lost.id, "price")
    with pytest.raises(Conflict, match="is lost"):
        session.invoices.issue(lost.id, 1)


# -- tasks -----------------------------------------------------------------------------
def test_tasks_steps_deadlines_and_overdue(session, acme):
    session.users.add("anna", role="manager")
    late = session.tasks.add(
        "Send the price list",
        due=NOW - dt.timedelta(hours=2),
        assignee="anna",
        client_id=acme.id,
        steps=["Prepare", "Send"],
    )
    on_time = session.tasks.add("Call back", due="+2d", assignee="anna")
    open_overdue = session.tasks.add("Visit", due=NOW - dt.timedelta(days=1))
    with pytest.raises(ValidationError, match="steps 1, 2 are not done yet"):
        session.tasks.done(late.id)
    session.tasks.step(late.id, 1)
    session.tasks.step(late.id, 2)
    with pytest.raises(ValidationError, match="has 2 steps; there is no step 3"):
        session.tasks.step(late.id, 3)
    done = session.tasks.done(late.id)
    assert done.done_late is True and done.overdue(NOW)
    assert session.tasks.done(on_time.id).done_late is False
    with pytest.raises(Conflict, match="already done"):
        session.tasks.done(on_time.id)
    assert {t.id for t in session.tasks.list(overdue=True)} == {late.id, open_overdue.id}
    assert [t.id for t in session.tasks.list(overdue=True, done=False)] == [open_overdue.id]
    assert [t.id for t in session.tasks.list(assignee="anna", done=True)] == [late.id, on_time.id]
    forced = session.tasks.add("With steps", due="+1d", steps=["one"])
    assert session.tasks.done(forced.id, force=True).steps[0].done_at is None
    with pytest.raises(ValidationError) as err:
        session.tasks.add("", due="someday", assignee="ghost", deal_id=999)
    assert {p.field for p in err.value.problems} == {"title", "due", "assignee", "deal"}
    with pytest.raises(NotFound):
        session.tasks.get(999)


def test_deadline_as_a_date_means_the_end_of_that_day(crm_factory):
    crm = crm_factory(plugins=[])
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text().replace('timezone = "UTC"', 'timezone = "Europe/Moscow"'))
    reopened = crmkit.CRM.open(crm.config.root, plugins=crm.plugins)
    with reopened.session() as s:
        task = s.tasks.add("Report", due="2026-12-01")
    assert task.due_at == dt.datetime(2026, 12, 1, 20, 59, 59, tzinfo=dt.UTC)
    reopened.close()


# -- pipelines from configuration ------------------------------------------------------
def test_pipeline_declared_in_config(crm_factory):
    crm = crm_factory(plugins=[])
    path = crm.config.root / "crmkit.toml"
    path.write_text(
        path.read_text()
        + textwrap.dedent(
            """
        [pipelines.tender]
        title = "Tenders"
        lost_reasons = ["lost_tender"]
        rules = [{outcome = "agreed", kind = "meeting", move_to = "bid"}]

        [[pipelines.tender.stages]]
        name = "announced"
        days = 3

        [[pipelines.tender.stages]]
        name = "bid"
        probability = 0.4
        [pipelines.tender.stages.gate.properties.deal.properties.expected_close]
        type = "string"
        """
        )
    )
    reopened = crmkit.CRM.open(crm.config.root, plugins=crm.plugins)
    tender = reopened.pipeline("tender")
    assert tender.stage_names == ["announced", "bid"] and tender.stage("bid").probability == 0.4
    with reopened.session() as s:
        client = s.clients.create("Gov")
        deal = s.deals.open(client.id, pipeline="tender", amount=10)
        refused = s.interactions.log(
            client.id, "meeting", topic="negotiation", outcome="agreed", deal_id=deal.id
        ).refused
        assert "deal.expected_close" in refused[0]
        s.deals.update(deal.id, expected_close="2027-01-15")
        s.interactions.log(
            client.id, "meeting", topic="negotiation", outcome="agreed", deal_id=deal.id
        )
        assert s.deals.get(deal.id).stage == "bid"
    reopened.close()


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"stages": []}, "should be non-empty"),
        ({"stages": [{"name": "won"}]}, "pipelines.bad.stages.0.name"),
        ({"stages": [{"name": "a"}, {"name": "a"}]}, "stage 'a' appears twice"),
        (
            {"stages": [{"name": "a"}], "rules": [{"outcome": "x", "move_to": "zz"}]},
            "'zz' is not a stage",
        ),
        ({"stages": [{"name": "a", "probability": 2}]}, "pipelines.bad.stages.0.probability"),
        ({"stages": [{"name": "a", "gate": {"type": "nonsense"}}]}, "not a valid JSON Schema"),
    ],
)
def test_invalid_pipeline_definitions_are_named(definition, message):
    with pytest.raises(ValidationError, match=message):
        crmkit.Pipeline.from_dict({"name": "bad", **definition})


def test_a_lost_client_who_buys_again_is_a_customer_again(session, acme):
    first = session.deals.open(acme.id, pipeline="webshop", amount=10)
    session.deals.win(first.id)
    session.clients.move(acme.id, "lost", reason="competitor")
    with pytest.raises(ValidationError, match="already lost"):
        session.clients.move(acme.id, "customer")  # not by hand
    again = session.deals.open(acme.id, pipeline="webshop", amount=10)
    session.deals.win(again.id)
    assert session.clients.get(acme.id).stage == "repeat_customer"
    assert [c.name for c in session.clients.list(stage="repeat_customer")] == ["Acme"]
    with pytest.raises(ValidationError, match="not a stage of pipeline 'lifecycle'"):
        session.clients.list(stage="won")  # clients are not won: they become customers
