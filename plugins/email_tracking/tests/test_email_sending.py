"""Sending (issue 9): queueing a message from a template, and delivering it to a real SMTP server.

The SMTP server is :mod:`aiosmtpd` on 127.0.0.1 (``smtp_server.py``); the
document ``proposal`` comes from a small test plugin (``Proposals``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import smtp_server
from crmkit_email_tracking import outbox
from crmkit_email_tracking.tables import DOCUMENTS
from smtp_server import SENDER, MailServer, World, outbox_rows, queue

from crmkit import NotFound, ValidationError

# the shared fixtures (smtp_server.py)
crmkit_plugins = smtp_server.crmkit_plugins
mail_server = smtp_server.mail_server
reopen = smtp_server.reopen
mail_crm = smtp_server.mail_crm
world = smtp_server.world


def _parts(message: Any) -> dict[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    return {part.get_content_type(): part.get_content() for part in message.iter_parts()}


def test_proposal_is_queued_then_delivered_with_tracking(
    mail_crm: Any, mail_server: MailServer, world: World
) -> None:
    crm = mail_crm
    with crm.session(as_user="anna") as s:
        message = outbox.send(
            s, world.client_id, template="proposal", deal_id=world.deal_id, contact_id=None
        )
    assert message.status == "queued" and message.attempts == 0
    assert message.to_address == "buy@acme.example"
    assert message.user_id == world.anna_id and message.deal_id == world.deal_id
    assert message.document == "proposal" and message.from_address == SENDER
    assert message.subject == "Commercial proposal for Acme: Pumps"
    assert len(message.token) >= 24
    assert "/p/" in message.body_html and "/t/o/" in message.body_html
    with crm.connect(readonly=True) as conn:
        doc = conn.execute(crm.metadata.tables[DOCUMENTS].select()).one()
    assert doc.message_id == message.id and doc.pages == 2
    assert doc.title == "Proposal for Acme" and "data-page" in doc.html

    done = outbox.run_worker(crm, once=True)
    assert [(o.message_id, o.status) for o in done] == [(message.id, "sent")]
    (got,) = mail_server.messages
    assert mail_server.envelopes == [("sales@acme.example", ["buy@acme.example"])]
    assert got["From"] == SENDER and got["To"] == "buy@acme.example"
    assert got["Subject"] == "Commercial proposal for Acme: Pumps"
    parts = _parts(got)
    assert "/t/o/" in parts["text/html"] and "/p/" in parts["text/html"]
    assert "Read the proposal: http" in parts["text/plain"]
    assert "Anna Petrova" in parts["text/plain"]

    (row,) = outbox_rows(crm)
    assert row.status == "sent" and row.sent_at is not None and row.attempts == 0
    assert row.rfc_message_id == got["Message-ID"] and row.rfc_message_id.endswith("@acme.example>")
    with crm.session(as_user="anna") as s:
        interaction = s.interactions.get(row.interaction_id)
    assert (interaction.kind, interaction.topic, interaction.outcome) == (
        "email",
        "proposal",
        "sent",
    )
    assert interaction.client_id == world.client_id and interaction.deal_id == world.deal_id
    assert interaction.user_id == world.anna_id


def test_links_are_tracked_and_text_made_from_html(
    mail_crm: Any, mail_server: MailServer, world: World
) -> None:
    (message,) = queue(mail_crm, world, contact_id=world.contact_id)
    assert message.to_address == "ivan@acme.example" and message.contact_id == world.contact_id
    assert message.subject == "A word from Anna Petrova" and message.document is None
    assert message.links == ["https://acme.example/catalog?x=1&y=2"]
    assert "acme.example/catalog" not in message.body_html
    assert "/t/c/" in message.body_html and "/t/c/" in message.body_text
    assert "Hello Ivan Ivanov," in message.body_text  # derived from the HTML
    assert "our catalogue (" in message.body_text

    outbox.run_worker(mail_crm, once=True)
    parts = _parts(mail_server.messages[0])
    assert "/t/c/" in parts["text/html"] and "/t/o/" in parts["text/html"]
    assert "/t/c/" in parts["text/plain"] and "acme.example/catalog" not in parts["text/plain"]
    with mail_crm.session(as_user="anna") as s:
        interaction = s.interactions.list(client_id=world.client_id)[0]
    assert (interaction.topic, interaction.outcome) == ("followup", "sent")


def test_builtin_thank_you_without_document(mail_crm: Any, world: World) -> None:
    with mail_crm.session(as_user="anna") as s:
        message = outbox.send(s, world.client_id, template="thank_you", deal_id=world.deal_id)
    assert message.document is None and message.subject == "Thank you, Acme"
    assert "Thank you for choosing us for" in message.body_text
    assert "/p/" not in message.body_html


def test_scheduled_message_waits_until_due(
    mail_crm: Any, mail_server: MailServer, world: World
) -> None:
    (message,) = queue(mail_crm, world, at="+1h")
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < message.send_at - now <= dt.timedelta(hours=1)
    assert outbox.run_worker(mail_crm, once=True) == []
    assert mail_server.messages == [] and outbox_rows(mail_crm)[0].status == "queued"
    later = now + dt.timedelta(hours=1, minutes=1)
    done = outbox.run_once(mail_crm, now=later)
    assert [o.status for o in done] == ["sent"] and len(mail_server.messages) == 1


def test_at_is_checked(mail_crm: Any, world: World) -> None:
    now = dt.datetime.now(dt.UTC)
    (soon,) = queue(mail_crm, world, at=now - dt.timedelta(minutes=5))  # past: now
    assert abs(soon.send_at - now) < dt.timedelta(minutes=1)
    for bad, words in (
        (now - dt.timedelta(days=3), "in the past"),
        ("2020-01-01T10:00", "in the past"),
        (now + dt.timedelta(days=800), "more than a year ahead"),
        ("next tuesday", "is not a date or time"),
    ):
        with pytest.raises(ValidationError) as err:
            queue(mail_crm, world, at=bad)
        assert err.value.field == "at" and words in err.value.message
    assert len(outbox_rows(mail_crm)) == 1
    tomorrow = dt.datetime.now(mail_crm.tz).replace(tzinfo=None) + dt.timedelta(days=1)
    (naive,) = queue(mail_crm, world, at=tomorrow)  # naive: the deployment's time zone
    assert naive.send_at == tomorrow.replace(tzinfo=mail_crm.tz)


def test_recipient_and_access(mail_crm: Any, world: World) -> None:
    with mail_crm.session() as s:
        s.users.add("boris", role="manager")
        other = s.clients.create("Other", email="x@other.example")
        c2 = s.contacts.add(other.id, "Olga", email="olga@other.example")
        mute = s.contacts.add(world.bare_client_id, "Mute")
    with mail_crm.session(as_user="anna") as s:
        with pytest.raises(ValidationError) as err:
            outbox.send(s, world.bare_client_id, template="intro")
        assert err.value.field == "to" and "has no email address" in err.value.message
        with pytest.raises(NotFound) as err:  # another's contact: as if there were none
            outbox.send(s, world.client_id, template="intro", contact_id=c2.id)
        assert err.value.field == "to"
    with mail_crm.session() as s:
        with pytest.raises(ValidationError) as err:
            outbox.send(s, world.client_id, template="intro", contact_id=c2.id)
        assert err.value.field == "to" and "not a contact of client" in err.value.message
        with pytest.raises(ValidationError) as err:
            outbox.send(s, world.bare_client_id, template="intro", contact_id=mute.id)
        assert err.value.field == "to" and "'Mute' has no email address" in err.value.message
    with mail_crm.session(as_user="boris") as s, pytest.raises(NotFound):
        outbox.send(s, world.client_id, template="intro")  # not boris's client
    with mail_crm.session(as_user="anna") as s, pytest.raises(NotFound):
        outbox.send(s, other.id, template="intro")
    assert outbox_rows(mail_crm) == []


def test_template_error_in_python_leaves_nothing(mail_crm: Any, world: World) -> None:
    folder = mail_crm.config.root / "templates" / "email"
    (folder / "broken.subject.j2").write_text("Hi", "utf-8")
    (folder / "broken.html.j2").write_text("<p>Hi</p>\n<p>{{ nope }}</p>\n", "utf-8")
    with mail_crm.session(as_user="anna") as s:
        with pytest.raises(ValidationError) as err:
            outbox.send(s, world.client_id, template="broken")
        assert err.value.field == "template"
        assert "broken.html.j2, line 2" in err.value.message
        assert "'nope' is undefined" in err.value.message
        outbox.send(s, world.client_id, template="intro")  # the session goes on
    assert [r.template for r in outbox_rows(mail_crm)] == ["intro"]


# -- the command line ----------------------------------------------------------------------
def test_cli_send_list_and_worker(
    mail_crm: Any, mail_server: MailServer, world: World, invoke: Any
) -> None:
    sent = invoke(
        "email", "send", world.client_id, "--template", "proposal", "--deal", world.deal_id,
        "--to", world.contact_id, as_user="anna", json=True,
    )  # fmt: skip
    assert sent.exit_code == 0, sent
    assert sent.json["status"] == "queued" and sent.json["to_address"] == "ivan@acme.example"
    assert "body_html" not in sent.json and "token" not in sent.json
    later = invoke("email", "send", world.client_id, "-t", "intro", "--at", "+2h", as_user="anna")
    assert later.exit_code == 0 and "Queued message #2 to buy@acme.example" in later.output
    listed = invoke("email", "list", "--status", "queued", as_user="anna", json=True)
    assert [m["id"] for m in listed.json] == [2, 1]
    assert invoke("email", "list", "--client", world.client_id).exit_code == 0

    worked = invoke("email", "worker", "--once")
    assert worked.exit_code == 0, worked
    assert f"sent #{sent.json['id']} to ivan@acme.example" in worked.output
    assert "1 sent, 0 to retry, 0 failed" in worked.output
    assert len(mail_server.messages) == 1
    again = invoke("email", "worker", "--once", json=True)
    assert again.json == []
    shown = invoke("email", "list", "--status", "sent", json=True)
    assert [m["id"] for m in shown.json] == [1] and shown.json[0]["interaction_id"]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["-t", "broken"], 2, "broken.html.j2, line 2: 'nope' is undefined"),
        (["-t", "nosuch"], 2, "no email template 'nosuch'"),
        (["-t", "../etc"], 2, "is not a template name"),
        (["-t", "intro", "--to", "999"], 3, "no contact with id 999"),
        (["-t", "intro", "--at", "yesterday-ish"], 2, "is not a date or time"),
        (["-t", "intro", "--document", "price_list"], 3, "renders a document called"),
        (["-t", "intro", "--document", "proposal", "--no-document"], 2, "not both"),
    ],
)
def test_cli_errors_store_nothing(
    mail_crm: Any, world: World, invoke: Any, args: list[str], code: int, words: str
) -> None:
    folder = mail_crm.config.root / "templates" / "email"
    (folder / "broken.subject.j2").write_text("Hi", "utf-8")
    (folder / "broken.html.j2").write_text("<p>Hi</p>\n<p>{{ nope }}</p>\n", "utf-8")
    result = invoke("email", "send", world.client_id, *args, as_user="anna")
    assert result.exit_code == code, result
    assert words in result.stderr and "Traceback" not in result.stderr
    assert outbox_rows(mail_crm) == []


def test_cli_missing_recipient(mail_crm: Any, world: World, invoke: Any) -> None:
    result = invoke("email", "send", world.bare_client_id, "-t", "intro", as_user="anna")
    assert result.exit_code == 2
    assert "to: client #" in result.stderr and "has no email address" in result.stderr
    assert outbox_rows(mail_crm) == []


def test_cli_no_document(mail_crm: Any, world: World, invoke: Any) -> None:
    result = invoke("email", "send", world.client_id, "-t", "proposal", "--no-document", json=True)
    assert result.exit_code == 0, result
    assert result.json["document"] is None
    assert "Read the proposal" not in outbox_rows(mail_crm)[0].body_html
