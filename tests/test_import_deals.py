"""Bulk import of deals (with their stage history) and interactions."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal

import pytest

from crmkit import ValidationError, hookimpl
from crmkit.transfer.importer import import_file

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def clients(crm):
    """Two clients with external ids, and a manager."""
    with crm.session() as s:
        s.users.add("anna", role="manager")
        acme = s.clients.create("Acme", email="buy@acme.example", external_id="C-1")
        beta = s.clients.create("Beta", email="hello@beta.example", external_id="C-2")
        return {"acme": acme.id, "beta": beta.id}


def count(crm, table):
    with crm.session(readonly=True) as s:
        return s.connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()


def by_external_id(s, external_id):
    (deal_id,) = s.connection.exec_driver_sql(
        f"SELECT id FROM deals WHERE external_id = '{external_id}'"
    ).one()
    return s.deals.get(deal_id)


DEALS_MAPPING = """
[columns]
"Amount" = "amount"
"Manager" = "owner"
"Qualified" = "stage.qualification"
[values.owner]
"Anna Smirnova" = "anna"
[dates]
stage = "%d.%m.%Y"
"""

# the stage columns in no particular order: the pipeline's order is what counts
DEALS_CSV = (
    "external_id,client_external_id,title,Amount,Manager,stage.proposal,Qualified,"
    "stage.presentation,stage.contract_invoice,stage.payment_shipment,status,closed_at,"
    "lost_reason,expected_close\n"
    'D-1,C-1,Pumps,"1 500,50",Anna Smirnova,01.02.2024,10.01.2024,15.01.2024,,,,,,2024-03-31\n'
    "D-2,C-2,,2000,,05.01.2024,02.01.2024,03.01.2024,06.01.2024,07.01.2024,won,"
    "2024-01-08T14:30,,\n"
    "D-3,C-1,Valves,300.5,,,10.01.2024,12.01.2024,,,lost,2024-01-20,competitor,\n"
)


def test_deals_with_stage_dates_rebuild_the_history_exactly(crm, clients, tmp_path):
    source = write(tmp_path / "deals.csv", DEALS_CSV)
    mapping = write(tmp_path / "map.toml", DEALS_MAPPING)
    result = import_file(crm, "deals", source, mapping=mapping)
    assert (result.read, result.inserted, result.rejected) == (3, 3, 0), result.errors
    with crm.session(readonly=True) as s:
        pumps = by_external_id(s, "D-1")
        assert (pumps.client_id, pumps.title, pumps.pipeline) == (clients["acme"], "Pumps", "b2b")
        assert (pumps.stage, pumps.status.value, pumps.owner) == ("proposal", "open", "anna")
        assert pumps.amount == Decimal("1500.50") and pumps.currency == crm.config.currency
        assert pumps.opened_at == at("2024-01-10") and pumps.stage_entered_at == at("2024-02-01")
        assert pumps.expected_close == dt.date(2024, 3, 31) and pumps.closed_at is None
        history = s.deals.history(pumps.id)
        assert [(h.from_stage, h.to_stage, h.at) for h in history] == [
            (None, "qualification", at("2024-01-10")),
            ("qualification", "presentation", at("2024-01-15")),
            ("presentation", "proposal", at("2024-02-01")),
        ]
        assert {(h.cause, h.user, h.entity) for h in history} == {("import", "admin", "deal")}
        for moment, stage in [
            ("2024-01-09T23:59", None),
            ("2024-01-10T00:00", "qualification"),
            ("2024-01-14", "qualification"),
            ("2024-01-20", "presentation"),
            ("2024-02-01", "proposal"),
            ("2026-01-01", "proposal"),
        ]:
            assert s.deals.stage_at(pumps.id, at(moment)) == stage, moment

        won = by_external_id(s, "D-2")
        assert won.title == "Beta"  # the client's name by default
        assert (won.stage, won.status.value, won.closed_at) == (
            "won",
            "won",
            at("2024-01-08 14:30"),
        )
        assert won.stage_entered_at == won.closed_at and won.owner == "admin"
        assert [h.to_stage for h in s.deals.history(won.id)] == [
            "qualification",
            "presentation",
            "proposal",
            "contract_invoice",
            "payment_shipment",
            "won",
        ]
        assert s.deals.stage_at(won.id, at("2024-01-08 14:29")) == "payment_shipment"
        assert s.deals.stage_at(won.id, at("2024-01-08 14:30")) == "won"

        lost = by_external_id(s, "D-3")
        assert (lost.status.value, lost.lost_reason, lost.amount) == (
            "lost",
            "competitor",
            Decimal("300.50"),
        )
        last = s.deals.history(lost.id)[-1]
        assert (last.from_stage, last.to_stage, last.note) == ("presentation", "lost", "competitor")
        assert s.deals.stage_at(lost.id, at("2024-01-19")) == "presentation"
        assert s.deals.stage_at(lost.id, at("2024-01-20")) == "lost"
        # one event for the batch, not one per deal
        events = s.connection.exec_driver_sql(
            "SELECT count(*) FROM events WHERE action = 'deals_imported'"
        ).scalar()
        assert events == 1


def test_a_deal_without_dates_enters_its_stage_when_opened(crm, clients, tmp_path):
    source = write(
        tmp_path / "d.csv",
        "client_email,opened_at,pipeline,stage\n"
        "BUY@acme.example,2024-05-01T09:00,b2b,\n"
        "hello@beta.example,2024-05-02,webshop,cart\n",  # the web shop allows skipping
    )
    result = import_file(crm, "deals", source)
    assert result.inserted == 2, result.errors
    with crm.session(readonly=True) as s:
        first, cart = sorted(s.deals.list(), key=lambda d: d.id)
        assert (first.client_id, first.stage, first.opened_at) == (
            clients["acme"],
            "qualification",
            at("2024-05-01 09:00"),
        )
        assert [(h.from_stage, h.to_stage) for h in s.deals.history(cart.id)] == [(None, "cart")]


def test_bad_deal_rows_are_reported_with_column_and_reason(crm, clients, tmp_path):
    header = (
        "line,client_external_id,pipeline,title,amount,opened_at,stage.qualification,"
        "stage.presentation,stage.proposal,stage.payment_shipment,stage.cart,status,closed_at,"
        "lost_reason\n"
    )
    rows = [
        "backward,C-1,,,,,2024-01-10,2024-01-05,,,,,,",
        "other pipeline,C-1,webshop,,,,2024-01-10,,,,,,,",
        "unknown reason,C-1,,,,,2024-01-10,,,,,lost,2024-01-11,too_expensive",
        "no reason,C-1,,,,,2024-01-10,,,,,lost,2024-01-11,",
        "no client,C-404,,,,,2024-01-10,,,,,,,",
        "skipping,C-1,,,,,2024-01-10,,2024-01-20,,,,,",
        "won early,C-1,,,,,2024-01-10,2024-01-11,,,,won,2024-01-12,",
        "won undated,C-1,,,,,2024-01-10,,,,,won,,",
        "late opening,C-1,,,,2024-01-11,2024-01-10,,,,,,,",
        "cents,C-1,,,1.005,,2024-01-10,,,,,,,",
        "reason of open,C-1,,,,,2024-01-10,,,,,,,price",
        "closed too early,C-1,,,,,2024-01-10,,,,,lost,2024-01-09,price",
        "no date,C-1,,,,,,,,,,,,",
        "good,C-2,webshop,Good,10,,,,,,2024-01-10,,,",
    ]
    source = write(tmp_path / "d.csv", header + "\n".join(rows) + "\n")
    errors_to = tmp_path / "errors.csv"
    result = import_file(crm, "deals", source, errors_to=errors_to)
    assert (result.read, result.inserted, result.rejected) == (14, 1, 13)
    with errors_to.open(newline="") as handle:
        reported = {
            json.loads(r["row"])["line"]: (r["column"], r["reason"]) for r in csv.DictReader(handle)
        }
    assert reported == {
        "backward": (
            "stage.presentation",
            "stage.presentation: 2024-01-05 is before the deal entered 'qualification' "
            "(2024-01-10)",
        ),
        "other pipeline": (
            "stage.qualification",
            "stage.qualification: 'qualification' is not a stage of pipeline 'webshop' "
            "(allowed: ad, visit, product_view, cart, payment, delivery, won, lost)",
        ),
        "unknown reason": (
            "lost_reason",
            "lost_reason: 'too_expensive' is not a lost reason (allowed: price, competitor, "
            "no_budget, no_need, no_response, timing, bad_fit, other)",
        ),
        "no reason": (
            "lost_reason",
            "lost_reason: give a reason (allowed: price, competitor, no_budget, no_need, "
            "no_response, timing, bad_fit, other)",
        ),
        "no client": (
            "client_external_id",
            "client_external_id: no client with external id 'C-404'",
        ),
        "skipping": (
            "stage.proposal",
            "stage.proposal: pipeline 'b2b' does not allow skipping stages "
            "(presentation comes first)",
        ),
        "won early": (
            "status",
            "status: pipeline 'b2b' does not allow skipping stages "
            "(proposal, contract_invoice, payment_shipment come first)",
        ),
        "won undated": ("closed_at", "closed_at: is required for a won deal"),
        "late opening": (
            "opened_at",
            "opened_at: 2024-01-11 is after the deal entered 'qualification' (2024-01-10)",
        ),
        "cents": ("amount", "amount: '1.005' has more than two decimals"),
        "reason of open": (
            "lost_reason",
            "lost_reason: only a lost deal has a lost reason (this one is open)",
        ),
        "closed too early": (
            "status",
            "status: 2024-01-09 is before the deal entered 'qualification' (2024-01-10)",
        ),
        "no date": (
            "opened_at",
            "opened_at: is required (or stage.NAME columns: the dates the deal entered its stages)",
        ),
    }
    with crm.session(readonly=True) as s:
        [good] = s.deals.list()
        assert (good.title, good.stage) == ("Good", "cart")
    assert count(crm, "stage_changes") == 1


def test_abort_writes_no_deal_and_reports_every_bad_row(crm, clients, tmp_path):
    good = "".join(f"C-1,Deal {i},2024-01-10,2024-01-11\n" for i in range(12))
    source = write(
        tmp_path / "d.csv",
        "client_external_id,title,stage.qualification,stage.presentation\n"
        + good
        + "C-1,Backward,2024-01-10,2024-01-01\n"
        + good.replace("Deal", "More")
        + "C-404,Nobody,2024-01-10,\n",
    )
    result = import_file(crm, "deals", source, on_error="abort", batch_size=5)
    assert result.aborted and result.inserted == 0
    assert [e.line for e in result.errors] == [14, 27]
    assert count(crm, "deals") == 0 and count(crm, "stage_changes") == 0


def test_importing_deals_twice_changes_nothing(crm, clients, tmp_path):
    mapping = write(tmp_path / "map.toml", DEALS_MAPPING)
    with_ids = write(tmp_path / "deals.csv", DEALS_CSV)
    # without external ids a deal is its client, pipeline, title and opening time
    without_ids = write(
        tmp_path / "plain.csv",
        "client_id,title,stage.qualification,stage.presentation\n"
        + "".join(
            f"{clients['beta']},Order {i},2024-02-0{i},2024-02-0{i + 1}\n" for i in range(1, 8)
        ),
    )
    first = [
        import_file(crm, "deals", with_ids, mapping=mapping, batch_size=2),
        import_file(crm, "deals", without_ids, batch_size=2),
    ]
    assert [r.inserted for r in first] == [3, 7]
    counts = [count(crm, t) for t in ("deals", "stage_changes", "events")]
    again = [
        import_file(crm, "deals", with_ids, mapping=mapping, batch_size=2),
        import_file(crm, "deals", without_ids, batch_size=2),
    ]
    assert [(r.inserted, r.unchanged, r.rejected) for r in again] == [(0, 3, 0), (0, 7, 0)]
    assert [count(crm, t) for t in ("deals", "stage_changes", "events")] == counts


def test_a_stored_deal_is_merged_but_its_history_is_never_rewritten(crm, clients, tmp_path):
    source = write(
        tmp_path / "d.csv",
        "external_id,client_external_id,title,amount,stage.qualification,stage.presentation\n"
        "D-1,C-1,Pumps,100,2024-01-10,2024-01-15\n",
    )
    assert import_file(crm, "deals", source).inserted == 1
    pricier = write(tmp_path / "p.csv", source.read_text().replace(",100,", ",150,"))
    refused = import_file(crm, "deals", pricier)
    assert refused.errors[0].reason == (
        "deal #1 'Pumps' already exists and differs in amount; use --update-existing to merge"
    )
    assert import_file(crm, "deals", pricier, update_existing=True).updated == 1
    moved = write(tmp_path / "m.csv", pricier.read_text().replace("2024-01-15", "2024-01-16"))
    rewritten = import_file(crm, "deals", moved, update_existing=True)
    assert (rewritten.updated, rewritten.rejected) == (0, 1)
    assert rewritten.errors[0].reason == (
        "deal #1 'Pumps' already exists and differs in stage history; an import does not "
        "rewrite a stored deal's client, pipeline or stage history"
    )
    # a file without the history (no stage dates) merges the rest and keeps the history
    plain = write(
        tmp_path / "plain.csv", "external_id,client_external_id,title\nD-1,C-1,Pumps and valves\n"
    )
    assert import_file(crm, "deals", plain, update_existing=True).updated == 1
    # such a row cannot make a new deal: it has no date to start its history
    unknown = write(tmp_path / "u.csv", "external_id,client_external_id,title\nD-2,C-1,New\n")
    [error] = import_file(crm, "deals", unknown).errors
    assert (error.column, error.reason) == (
        "opened_at",
        "opened_at: is required (or stage.NAME columns: the dates the deal entered its stages) "
        "for a new deal",
    )
    with crm.session(readonly=True) as s:
        deal = s.deals.get(1)
        assert (deal.title, deal.amount, deal.stage) == ("Pumps and valves", 150, "presentation")
        assert len(s.deals.history(1)) == 2


def test_duplicates_of_a_deal_within_the_file(crm, clients, tmp_path):
    source = write(
        tmp_path / "d.csv",
        "external_id,client_external_id,title,opened_at\n"
        "D-1,C-1,A,2024-01-01\n"
        "D-1,C-1,B,2024-01-01\n"
        ",C-2,Same,2024-01-01\n"
        ",C-2,Same,2024-01-01\n",
    )
    result = import_file(crm, "deals", source)
    assert {e.line: e.reason for e in result.errors} == {
        3: "duplicate of line 2 in this file",
        5: "duplicate of line 4 in this file",
    }
    assert result.inserted == 2


def test_jsonl_deals_with_a_history_list(crm, clients, tmp_path):
    mapping = write(tmp_path / "map.toml", '[values.stage]\n"Корзина" = "cart"\n')
    source = jsonl(
        tmp_path / "d.jsonl",
        {
            "client_email": "buy@acme.example",
            "pipeline": "webshop",
            "title": "Order 1",
            "amount": 99.9,
            "history": [
                {"stage": "ad", "at": "2024-03-01T10:00:00+03:00"},
                {"stage": "Корзина", "at": "2024-03-01T10:05:00+03:00"},
                {"stage": "won", "at": "2024-03-02T12:00:00+03:00"},
            ],
            "external_id": "W-1",
        },
        {
            "client_external_id": "C-2",
            "history": [
                {"stage": "qualification", "at": "2024-03-01"},
                {"stage": "proposal", "at": "2024-03-02"},
                {"stage": "presentation", "at": "2024-03-03"},
            ],
        },
        {"client_external_id": "C-2", "history": [{"stage": "qualification"}]},
        {"client_external_id": "C-2", "history": "soon"},
    )
    result = import_file(crm, "deals", source, mapping=mapping)
    assert (result.inserted, result.rejected) == (1, 3)
    assert [(e.line, e.column, e.reason) for e in result.errors] == [
        (
            2,
            "history",
            "history.2: pipeline 'b2b' does not allow skipping stages (presentation comes first)",
        ),
        (3, "history", 'history.1: must be an object {"stage": ..., "at": ...}'),
        (4, "history", "history: is not a JSON list"),
    ]
    with crm.session(readonly=True) as s:
        deal = by_external_id(s, "W-1")
        assert (deal.status.value, deal.amount, deal.opened_at) == (
            "won",
            Decimal("99.90"),
            at("2024-03-01 07:00"),
        )
        assert [(h.to_stage, h.at) for h in s.deals.history(deal.id)] == [
            ("ad", at("2024-03-01 07:00")),
            ("cart", at("2024-03-01 07:05")),
            ("won", at("2024-03-02 09:00")),
        ]


def test_a_history_that_goes_backwards_is_refused(crm, clients, tmp_path):
    source = jsonl(
        tmp_path / "d.jsonl",
        {
            "client_external_id": "C-1",
            "history": [
                {"stage": "qualification", "at": "2024-03-01"},
                {"stage": "presentation", "at": "2024-03-02"},
                {"stage": "qualification", "at": "2024-03-03"},
            ],
        },
    )
    [error] = import_file(crm, "deals", source).errors
    assert error.reason == (
        "history.3: b2b moves forward only: 'presentation' -> 'qualification' goes backwards"
    )


def test_the_import_hook_is_called_once_per_batch(crm, clients, tmp_path, register_plugin):
    calls = []

    class Listener:
        @hookimpl
        def crmkit_records_imported(self, kind, inserted_ids, updated_ids):
            calls.append((kind, len(inserted_ids), updated_ids))

    register_plugin(Listener())
    source = write(
        tmp_path / "d.csv",
        "client_external_id,title,opened_at\n"
        + "".join(f"C-1,Deal {i},2024-01-0{i}\n" for i in range(1, 6)),
    )
    import_file(crm, "deals", source, batch_size=2)
    assert calls == [("deals", 2, []), ("deals", 2, []), ("deals", 1, [])]


# -- interactions ----------------------------------------------------------------------
@pytest.fixture
def deals(crm, clients, tmp_path):
    source = write(
        tmp_path / "deals.csv",
        "external_id,client_external_id,title,opened_at\nD-1,C-1,Pumps,2024-01-10\n"
        "D-2,C-2,Beta deal,2024-01-10\n",
    )
    assert import_file(crm, "deals", source).inserted == 2
    with crm.session(readonly=True) as s:
        return {d.title: d.id for d in s.deals.list()}


INTERACTIONS_MAPPING = """
[columns]
"Type" = "kind"
"Result" = "outcome"
"When" = "at"
"Who" = "user"
[values.kind]
"Phone" = "call"
[values.outcome]
"Wants a proposal" = "proposal_requested"
[values.user]
"Anna Smirnova" = "anna"
"""


def test_interactions_are_imported_as_history(crm, deals, tmp_path):
    source = write(
        tmp_path / "i.csv",
        "external_id,client_email,deal_external_id,Type,topic,Result,direction,When,duration,"
        "Who,note\n"
        "I-1,buy@acme.example,D-1,Phone,qualification,Wants a proposal,Outbound,"
        "2024-01-11T10:00,12,Anna Smirnova,Needs 40 pumps\n"
        "I-2,hello@beta.example,,email,proposal,sent,,2024-01-12,,,\n",
    )
    mapping = write(tmp_path / "map.toml", INTERACTIONS_MAPPING)
    result = import_file(crm, "interactions", source, mapping=mapping)
    assert (result.inserted, result.rejected) == (2, 0), result.errors
    with crm.session(readonly=True) as s:
        call, mail = sorted(s.interactions.list(), key=lambda i: i.id)
        assert (call.kind, call.topic, call.outcome, call.direction.value) == (
            "call",
            "qualification",
            "proposal_requested",
            "outbound",
        )
        assert (call.deal_id, call.user, call.duration_min, call.note) == (
            deals["Pumps"],
            "anna",
            12,
            "Needs 40 pumps",
        )
        assert call.occurred_at == at("2024-01-11 10:00") and call.external_id == "I-1"
        assert (mail.deal_id, mail.user, mail.direction) == (None, "admin", None)
        # history, not news: the outcome rule (proposal_requested -> proposal) did not run
        assert s.deals.get(deals["Pumps"]).stage == "qualification"
        assert s.tasks.list() == []
    again = import_file(crm, "interactions", source, mapping=mapping)
    assert (again.inserted, again.unchanged) == (0, 2)


def test_bad_interaction_rows(crm, deals, tmp_path):
    with crm.session() as s:
        s.users.add("gone", role="manager", active=False)
    source = write(
        tmp_path / "i.csv",
        "client_external_id,deal_external_id,kind,topic,outcome,direction,at,duration,user\n"
        "C-1,D-2,email,proposal,sent,,2024-01-12,,\n"
        "C-1,,call,qualification,interested,,2024-01-12,,\n"
        "C-1,,call,qualification,delighted,inbound,2024-01-12,,\n"
        "C-1,,fax,x,y,,2024-01-12,,\n"
        "C-1,D-404,email,proposal,sent,,2024-01-12,,\n"
        "C-1,,email,proposal,sent,sideways,2024-01-12,,\n"
        "C-1,,email,proposal,sent,,2024-01-12,2 hours,\n"
        "C-1,,email,proposal,sent,,yesterday,,\n"
        "C-1,,email,proposal,sent,,2024-01-12,,nobody\n"
        "C-404,,email,proposal,sent,,2024-01-12,,\n"
        "C-1,,email,proposal,sent,,2024-01-12,,gone\n",
    )
    result = import_file(crm, "interactions", source)
    assert (result.inserted, result.rejected) == (1, 10)  # a former employee's email is history
    assert [(e.line, e.column, e.reason) for e in result.errors] == [
        (2, "deal_external_id", "deal_external_id: deal #2 belongs to client #2, not to client #1"),
        (3, "direction", "direction: is required for a call (inbound or outbound)"),
        (
            4,
            "outcome",
            "outcome: 'delighted' is not a known call outcome (allowed: no_answer, "
            "callback_requested, not_interested, interested, meeting_scheduled, "
            "proposal_requested, agreed, payment_promised, resolved)",
        ),
        (
            5,
            "kind",
            "kind: unknown interaction kind 'fax' (allowed: call, campaign, document, email, "
            "event, letter, mailing, meeting)",
        ),
        (6, "deal_external_id", "deal_external_id: no deal with external id 'D-404'"),
        (7, "direction", "direction: 'sideways' is not inbound or outbound"),
        (8, "duration", "duration: '2 hours' is not a whole number"),
        (
            9,
            "at",
            "at: 'yesterday' is not a date in the format ISO 8601 such as 2026-11-22 or "
            "2026-11-22T15:30",
        ),
        (10, "user", "user: no user 'nobody'"),
        (11, "client_external_id", "client_external_id: no client with external id 'C-404'"),
    ]


def test_interactions_without_external_ids_are_not_doubled(crm, deals, tmp_path):
    source = write(
        tmp_path / "i.csv",
        "client_id,kind,topic,outcome,direction,occurred_at\n"
        + "".join(
            f"1,call,first_contact,no_answer,outbound,2024-01-1{i}T10:00\n" for i in range(8)
        ),
    )
    assert import_file(crm, "interactions", source, batch_size=3).inserted == 8
    noted = write(tmp_path / "n.csv", source.read_text().replace("outbound,", "inbound,"))
    differs = import_file(crm, "interactions", noted, batch_size=3)
    assert differs.rejected == 8
    assert differs.errors[0].reason == (
        "interaction #1 already exists and differs in direction; use --update-existing to merge"
    )
    assert import_file(crm, "interactions", noted, update_existing=True).updated == 8
    assert count(crm, "interactions") == 8


def test_files_without_the_needed_columns(crm, clients, tmp_path):
    source = write(tmp_path / "d.csv", "title,opened_at\nA,2024-01-01\n")
    with pytest.raises(ValidationError, match="no column gives the deal's client") as err:
        import_file(crm, "deals", source)
    assert err.value.field == "client"
    source = write(tmp_path / "i.csv", "client_id,kind,topic,at\n1,call,service,2024-01-01\n")
    with pytest.raises(ValidationError, match="no column gives the interaction's outcome"):
        import_file(crm, "interactions", source)
    with pytest.raises(ValidationError, match="cannot import 'tasks'"):
        import_file(crm, "tasks", source)


# -- the command -----------------------------------------------------------------------
def test_cli_imports_deals_and_interactions(invoke, crm, deals, tmp_path):
    source = write(
        tmp_path / "d.csv",
        "external_id,client_external_id,title,stage.qualification,stage.presentation\n"
        "D-9,C-1,New,2024-02-01,2024-02-03\n"
        "D-10,C-1,Broken,2024-02-05,2024-02-03\n",
    )
    result = invoke("import", "deals", str(source), json=True)
    assert result.exit_code == 0, result
    assert (result.json["kind"], result.json["inserted"], result.json["rejected"]) == (
        "deals",
        1,
        1,
    )
    assert result.json["errors"] == [
        {
            "line": 3,
            "column": "stage.presentation",
            "reason": "stage.presentation: 2024-02-03 is before the deal entered "
            "'qualification' (2024-02-05)",
        }
    ]
    table = invoke("import", "deals", str(source))
    assert table.output.startswith("Imported deals: read 2, inserted 0, updated 0, unchanged 1")
    assert "line 3, column 'stage.presentation'" in table.stderr
    calls = write(
        tmp_path / "i.csv",
        "client_external_id,deal_external_id,kind,topic,outcome,direction,at\n"
        "C-1,D-9,call,presentation,agreed,inbound,2024-02-04\n",
    )
    logged = invoke("import", "interactions", str(calls), "--on-error", "abort", json=True)
    assert (logged.exit_code, logged.json["inserted"]) == (0, 1)


# -- the migration ---------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_the_external_id_migration_keeps_what_refers_to_deals(crm, clients):
    """crmkit_0003 adds the columns in place: no rebuilt table, no cascading deletes."""
    from alembic import command

    from crmkit.core.migrate import alembic_config

    with crm.session() as s:
        deal = s.deals.open(clients["acme"], amount=10)
        s.invoices.issue(deal.id, 10)
        s.tasks.add("Call back", due="+1d", deal_id=deal.id)
        s.interactions.log(
            clients["acme"], "email", topic="proposal", outcome="sent", deal_id=deal.id
        )
    for revision in ("crmkit@crmkit_0002", "crmkit@head"):  # head: through crmkit_0003
        with crm.connect() as conn:
            if revision.endswith("0002"):
                command.downgrade(alembic_config(crm, conn), revision)
            else:
                command.upgrade(alembic_config(crm, conn), revision)
        assert [count(crm, t) for t in ("deals", "invoices", "tasks", "interactions")] == [1] * 4
    with crm.session(readonly=True) as s:
        assert s.interactions.list()[0].deal_id == deal.id
        assert s.deals.get(deal.id).external_id is None


def test_imported_won_deals_make_customers(crm, tmp_path):
    """A won deal makes its client a customer, at its closing time, as a live win does."""
    import datetime as dt

    from crmkit.transfer.importer import import_file

    since = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)  # the clients came long before the deals
    with crm.session() as s:
        one = s.clients.create("One", external_id="C-1", created_at=since)
        two = s.clients.create("Two", external_id="C-2", created_at=since)
        s.clients.move(two.id, "lost", reason="competitor")
        three = s.clients.create("Three", external_id="C-3", created_at=since)
    source = tmp_path / "deals.csv"
    source.write_text(
        "client_external_id,pipeline,title,status,stage.ad,closed_at,external_id\n"
        "C-1,webshop,First,won,2026-01-10,2026-01-12,D-1\n"
        "C-1,webshop,Second,won,2026-02-10,2026-02-11,D-2\n"
        "C-2,webshop,Back,won,2030-03-01,2030-03-02,D-3\n"
        "C-3,webshop,Open,open,2026-03-01,,D-4\n"
    )
    result = import_file(crm, "deals", source)
    assert result.inserted == 4, result.errors
    with crm.session(readonly=True) as s:
        assert s.clients.get(one.id).stage == "repeat_customer"
        moves = [
            (h.from_stage, h.to_stage, h.at.date().isoformat(), h.cause)
            for h in s.history.of("client", one.id)
        ]
        assert moves == [
            ("lead", "customer", "2026-01-12", "import"),
            ("customer", "repeat_customer", "2026-02-11", "import"),
        ]
        assert s.clients.get(two.id).stage == "customer"  # a lost client who buys again
        assert s.clients.get(three.id).stage == "lead"
    again = import_file(crm, "deals", source)
    assert again.unchanged == 4
    with crm.session(readonly=True) as s:
        assert len(s.history.of("client", one.id)) == 2
