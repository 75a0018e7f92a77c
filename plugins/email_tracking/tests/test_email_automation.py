"""The automation action ``send_email`` and the email examples, with a real SMTP server.

The rules are the ones crmkit ships (``crmkit/automation_examples_email.toml``,
what ``crmkit init --rules examples`` adds): a web lead with an email gets
the presentation; an invoice paid after being issued, a thank-you. The
events are raised for real (an invoice paid) or fired as ``POST /api/leads``
fires them; the worker delivers to :mod:`aiosmtpd` on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from importlib.resources import files
from typing import Any

import pytest
import smtp_server
from crmkit_email_tracking import outbox
from smtp_server import SENDER, MailServer, World, make_world, outbox_rows
from sqlalchemy import select

from crmkit import CRM
from crmkit.core.automation import payload_of

# the shared fixtures (smtp_server.py)
crmkit_plugins = smtp_server.crmkit_plugins
mail_server = smtp_server.mail_server

EXAMPLES = files("crmkit").joinpath("automation_examples_email.toml").read_text("utf-8")


@pytest.fixture
def rules_crm(crm: CRM, mail_server: MailServer) -> Iterator[Callable[[str], CRM]]:
    """``rules_crm(TOML)``: the deployment with these rules, sending through ``mail_server``."""
    opened: list[CRM] = []

    def make(text: str) -> CRM:
        path = crm.config.root / "crmkit.toml"
        path.write_text(path.read_text("utf-8") + "\n" + text, "utf-8")
        fresh = smtp_server.configure(crm, mail_server.port)
        opened.append(fresh)
        return fresh

    yield make
    for fresh in opened:
        fresh.close()


@pytest.fixture
def examples(rules_crm: Callable[[str], CRM]) -> CRM:
    return rules_crm(EXAMPLES)


def runs(crm: CRM) -> list[Any]:
    with crm.connect(readonly=True) as conn:
        table = crm.metadata.tables["automation_runs"]
        return list(conn.execute(select(table).order_by(table.c.id)).all())


def capture(crm: CRM, name: str, email: str | None, *, key: str | None = None) -> Any:
    """A web lead, as ``POST /api/leads`` raises it: a new client and the event."""
    with crm.session(as_user="anna") as s:
        client = s.clients.create(name, email=email, owner="anna")
        lead = {"name": name, "email": email, "message": "Please send your catalogue"}
        fired = crm.automation.fire(
            s,
            "lead.captured",
            payload_of(client=client, created=True, lead=lead, channel="website"),
            key or f"lead:{client.id}",
        )
    return client, fired


def _interaction(crm: CRM, interaction_id: int) -> Any:
    with crm.session() as s:
        return s.interactions.get(interaction_id)


def test_a_web_lead_with_an_email_gets_the_presentation(
    examples: CRM, mail_server: MailServer
) -> None:
    crm = examples
    make_world(crm)
    client, fired = capture(crm, "Nova Ltd", "hello@nova.example")
    [run] = fired
    assert (run.rule, run.status) == ("web_lead_presentation", "fired")
    [row] = outbox_rows(crm)
    assert run.results == [{"do": "send_email", "message": row.id}]
    assert (row.template, row.to_address, row.status) == (
        "presentation",
        "hello@nova.example",
        "queued",
    )
    assert mail_server.messages == []  # queued in the transaction; the worker sends it
    # the same event again (a retried request): the rule does not fire twice
    with crm.session(as_user="anna") as s:
        payload = payload_of(client=client, created=False, lead={}, channel="website")
        assert crm.automation.fire(s, "lead.captured", payload, f"lead:{client.id}") == []
    # a lead without an email: the condition does not hold
    _, none = capture(crm, "Quiet Ltd", None)
    assert none == []

    [done] = outbox.run_worker(crm, once=True)
    assert (done.message_id, done.status) == (row.id, "sent")
    [got] = mail_server.messages
    assert got["To"] == "hello@nova.example" and got["From"] == SENDER
    assert got["Subject"] == "Nova Ltd, thank you for your interest: who we are and what we offer"
    text = got.get_body(("plain",)).get_content()
    assert "what we can do for Nova Ltd" in text and "Anna Petrova" in text
    [row] = outbox_rows(crm)
    assert row.status == "sent" and row.interaction_id is not None
    logged = _interaction(crm, row.interaction_id)
    assert (logged.client_id, logged.kind, logged.outcome, logged.direction) == (
        client.id,
        "email",
        "sent",
        "outbound",
    )
    assert outbox.run_worker(crm, once=True) == []  # sent once
    assert len(mail_server.messages) == 1
    assert [(r.rule, r.status) for r in runs(crm)] == [("web_lead_presentation", "fired")]


def test_an_invoice_paid_after_issued_gets_a_thank_you(
    examples: CRM, mail_server: MailServer
) -> None:
    crm = examples
    world: World = make_world(crm)
    with crm.session(as_user="anna") as s:
        paid = s.invoices.issue(world.deal_id, 1000)
        cancelled = s.invoices.issue(world.deal_id, 500)
    assert outbox_rows(crm) == []  # issued: old_status is null, not "issued"
    with crm.session(as_user="anna") as s:
        s.invoices.cancel(cancelled.id)
    assert outbox_rows(crm) == []  # cancelled, not paid
    with crm.session(as_user="anna") as s:
        s.invoices.pay(paid.id)
    [row] = outbox_rows(crm)
    assert (row.template, row.to_address, row.deal_id, row.client_id) == (
        "thank_you",
        "buy@acme.example",
        world.deal_id,
        world.client_id,
    )
    [run] = runs(crm)
    assert (run.rule, run.event_key, run.status) == (
        "thank_paid_invoice",
        f"invoice:{paid.id}:paid",
        "fired",
    )
    assert run.results == [{"do": "send_email", "message": row.id}]

    [done] = outbox.run_worker(crm, once=True)
    assert done.status == "sent"
    [got] = mail_server.messages
    assert got["To"] == "buy@acme.example" and got["Subject"] == "Thank you, Acme"
    assert "Thank you for choosing us for" in got.get_body(("plain",)).get_content()
    [row] = outbox_rows(crm)
    logged = _interaction(crm, row.interaction_id)
    assert (logged.kind, logged.topic, logged.outcome, logged.deal_id) == (
        "email",
        "thank_you",
        "sent",
        world.deal_id,
    )
    assert outbox.run_worker(crm, once=True) == [] and len(mail_server.messages) == 1


def test_nothing_is_sent_when_the_triggering_change_rolls_back(
    examples: CRM, mail_server: MailServer
) -> None:
    crm = examples
    world = make_world(crm)
    with crm.session(as_user="anna") as s:
        invoice = s.invoices.issue(world.deal_id, 1000)
    with pytest.raises(RuntimeError), crm.session(as_user="anna") as s:
        s.invoices.pay(invoice.id)
        assert len(outbox_rows(crm)) == 0  # not visible outside the transaction
        raise RuntimeError("the command fails after paying")
    assert outbox_rows(crm) == [] and runs(crm) == []
    assert outbox.run_worker(crm, once=True) == [] and mail_server.messages == []
    with crm.session() as s:
        assert s.invoices.get(invoice.id).status.value == "issued"


def test_a_dry_run_queues_nothing(examples: CRM) -> None:
    crm = examples
    world = make_world(crm)
    with crm.session(as_user="anna") as s:
        client = s.clients.get(world.client_id)
        payload = payload_of(client=client, created=True, lead={}, channel="website")
        answer = crm.automation.test(s, "web_lead_presentation", payload)
    assert answer["fires"] is True and answer["actions"][0]["do"] == "send_email"
    assert outbox_rows(crm) == [] and runs(crm) == []


RECIPIENT = """
[automation.rules.call_summary]
event = "interaction.logged"
when = { properties = { interaction = { properties = { kind = { const = "call" } } } } }
actions = [{ do = "send_email", template = "thank_you", to = TO, at = "+1h" }]
"""


def test_to_a_contact_later(
    crm: CRM, rules_crm: Callable[[str], CRM], mail_server: MailServer
) -> None:
    world = make_world(crm)
    crm = rules_crm(RECIPIENT.replace("TO", str(world.contact_id)))  # Ivan
    before = dt.datetime.now(dt.UTC)
    with crm.session(as_user="anna") as s:
        s.interactions.log(
            world.client_id, "call", topic="service", outcome="resolved", direction="outbound"
        )
    [row] = outbox_rows(crm)
    assert (row.to_address, row.contact_id) == ("ivan@acme.example", world.contact_id)
    send_at = row.send_at if row.send_at.tzinfo else row.send_at.replace(tzinfo=dt.UTC)
    assert dt.timedelta(minutes=59) < send_at - before < dt.timedelta(minutes=61)
    assert outbox.run_worker(crm, once=True) == []  # not due yet
    [done] = outbox.run_once(crm, now=send_at + dt.timedelta(seconds=1))
    assert done.status == "sent"
    assert [m["To"] for m in mail_server.messages] == ["ivan@acme.example"]


def test_a_failing_send_fails_its_rule_only(crm: CRM, rules_crm: Callable[[str], CRM]) -> None:
    world = make_world(crm)
    crm = rules_crm(RECIPIENT.replace("TO", "999"))
    with crm.session(as_user="anna") as s:
        logged = s.interactions.log(
            world.client_id, "call", topic="service", outcome="resolved", direction="outbound"
        )
    [run] = runs(crm)
    assert run.status == "failed" and "no contact with id 999" in run.error
    assert outbox_rows(crm) == []
    with crm.session() as s:
        assert s.interactions.get(logged.interaction.id).id == logged.interaction.id


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("{ do = 'send_email' }", "template"),
        ("{ do = 'send_email', template = 'x y' }", "template"),
        ("{ do = 'send_email', template = 'proposal', to = 'boss' }", "to"),
        ("{ do = 'send_email', template = 'proposal', cc = 'x' }", "cc"),
    ],
)
def test_bad_parameters_are_refused_when_the_deployment_opens(
    crm: CRM, action: str, reason: str
) -> None:
    from crmkit import ConfigError

    path = crm.config.root / "crmkit.toml"
    text = f'\n[automation.rules.bad]\nevent = "deal.won"\nactions = [{action}]\n'
    path.write_text(path.read_text("utf-8") + text, "utf-8")
    with pytest.raises(ConfigError) as info:
        CRM.open(crm.config.root, plugins=crm.plugins)
    assert info.value.field.startswith("automation.rules.bad.actions.0")
    assert reason in str(info.value) or reason in info.value.field
