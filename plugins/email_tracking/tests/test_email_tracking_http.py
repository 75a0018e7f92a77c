"""The tracking routes on a real uvicorn server: the pixel, links, documents and heartbeats.

Messages are written to the outbox directly here (as the worker leaves them
once sent), so that these tests check tracking alone; the whole flow through
SMTP and a browser is in ``test_email_tracking_browser.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crmkit_email_tracking import signing
from crmkit_email_tracking.instrument import document_url, instrument
from crmkit_email_tracking.routes import PIXEL
from sqlalchemy import insert, select, update

import crmkit
from crmkit import CRM
from crmkit.core.schema import utcnow
from crmkit.server import create_app
from crmkit.testing_server import request, serve_app

PAGES = "".join(
    f'<section class="page" data-page="{n}"><h2>Page {n}</h2><p>{"text " * 50}</p></section>'
    for n in (1, 2, 3)
)
DOCUMENT = f"<!DOCTYPE html><html><head><title>Proposal</title></head><body>{PAGES}</body></html>"
BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)


def configure(crm: CRM, text: str) -> CRM:
    """The deployment reopened with ``text`` appended to its crmkit.toml."""
    path = Path(crm.config.root) / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n" + text, "utf-8")
    return CRM.open(crm.config.root, plugins=crm.plugins)


@pytest.fixture
def deployment(crm: CRM) -> CRM:
    """Anna's client and deal; quick re-opens, so that the tests can see them."""
    with crm.session() as s:
        s.users.add("anna", role="manager", name="Anna Petrova")
    with crm.session(as_user="anna") as s:
        client = s.clients.create("Acme", email="buyer@acme.example", owner="anna")
        s.deals.open(client.id, pipeline="b2b", title="Acme order", owner="anna")
    opened = configure(crm, "[plugin.email_tracking]\nheartbeat_seconds = 1\n")
    yield opened
    opened.close()


def sent_message(crm: CRM, *, sent_ago: float = 3600.0, document: bool = True) -> dict[str, Any]:
    """A message as the worker leaves it once sent: instrumented, with its document."""
    outbox = crm.metadata.tables["email_outbox"]
    with crm.session(as_user="anna") as s:
        client = s.clients.list()[0]
        deal = s.deals.list()[0]
        conn = s.connection
        message_id = conn.execute(
            insert(outbox)
            .values(
                client_id=client.id,
                deal_id=deal.id,
                user_id=s.user.id,
                template="proposal",
                subject="Our proposal",
                to_address="buyer@acme.example",
                body_html="",
                body_text="",
                token=f"t{utcnow().timestamp()}",
                status="sent",
                sent_at=utcnow() - dt.timedelta(seconds=sent_ago),
                document="proposal" if document else None,
            )
            .returning(outbox.c.id)
        ).scalar_one()
        html = (
            '<html><body><p>Hello</p><a href="https://acme.example/catalog?a=1&amp;b=2">'
            f'catalog</a> <a href="{document_url(crm, message_id)}">proposal</a></body></html>'
        )
        done = instrument(crm, message_id, html, "See https://acme.example/catalog?a=1&b=2")
        conn.execute(
            update(outbox)
            .where(outbox.c.id == message_id)
            .values(body_html=done.html, body_text=done.text, links=done.links)
        )
        if document:
            conn.execute(
                insert(crm.metadata.tables["email_documents"]).values(
                    message_id=message_id, name="proposal", title="Proposal", html=DOCUMENT, pages=3
                )
            )
    return {"id": message_id, "html": done.html, "text": done.text, "links": done.links}


@pytest.fixture
def server(deployment: CRM) -> Iterator[str]:
    with serve_app(create_app(deployment, access_log=False)) as base:
        yield base


def path_of(url: str, kind: str) -> str:
    """The path of the first tracking URL of ``kind`` (``o``, ``c`` or ``p``) in ``url``."""
    prefix = "/p/" if kind == "p" else f"/t/{kind}/"
    found = re.search(rf"https?://[^/]+({prefix}[A-Za-z0-9_\-.]+)", url)
    assert found, url
    return found.group(1)


def events(crm: CRM, message_id: int) -> list[dict[str, Any]]:
    table = crm.metadata.tables["email_events"]
    with crm.connect() as conn:
        rows = conn.execute(
            select(table).where(table.c.message_id == message_id).order_by(table.c.id)
        )
        return [dict(r._mapping) for r in rows]


def tasks_of(crm: CRM) -> list[Any]:
    with crm.session(as_user="anna") as s:
        return s.tasks.list()


# -- the pixel ----------------------------------------------------------------------------
def test_pixel_records_a_human_open_and_notifies_the_owner(deployment: CRM, server: str) -> None:
    message = sent_message(deployment)
    pixel = path_of(message["html"], "o")
    reply = request(server + pixel + "?utm=x", headers={"User-Agent": BROWSER})
    assert reply.status == 200
    assert reply.body == PIXEL and len(PIXEL) == 43
    assert reply.headers["content-type"] == "image/gif"
    assert reply.headers["cache-control"].startswith("no-store")
    assert reply.headers["referrer-policy"] == "no-referrer"
    [event] = events(deployment, message["id"])
    assert (event["kind"], event["classification"], event["counted"]) == ("open", "human", True)
    assert event["data"]["ip"] == "127.0.0.0"  # truncated by default
    assert event["data"]["user_agent"] == BROWSER
    [task] = tasks_of(deployment)
    assert task.title.startswith("The client opened the proposal email: call now")
    assert task.deal_id is not None
    with deployment.session(as_user="anna") as s:
        logged = s.interactions.list()
    assert [(i.kind, i.outcome, i.direction) for i in logged] == [("email", "opened", "inbound")]


def test_machine_opens_are_stored_apart_and_notify_nobody(deployment: CRM, server: str) -> None:
    message = sent_message(deployment)
    pixel = server + path_of(message["html"], "o")
    request(pixel, headers={"User-Agent": "Mozilla/5.0"})  # Apple Mail Privacy Protection
    request(pixel, method="HEAD", headers={"User-Agent": BROWSER})
    request(pixel, headers={"User-Agent": BROWSER, "Sec-Purpose": "prefetch"})
    request(pixel, headers={"User-Agent": "curl/8.5.0"})
    request(pixel, headers={})
    got = [(e["classification"], e["counted"]) for e in events(deployment, message["id"])]
    assert got == [
        ("apple_mpp", False),
        ("scanner", False),
        ("scanner", False),
        ("bot", False),
        ("bot", False),
    ]
    assert all(e["data"]["reasons"] for e in events(deployment, message["id"]))
    assert tasks_of(deployment) == []
    request(
        pixel,
        headers={
            "User-Agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
            "(via ggpht.com GoogleImageProxy)"
        },
    )
    assert events(deployment, message["id"])[-1]["classification"] == "gmail_proxy"
    assert len(tasks_of(deployment)) == 1  # Gmail's proxy fetches when the reader opens


def test_forged_expired_and_malformed_tokens_record_nothing(deployment: CRM, server: str) -> None:
    message = sent_message(deployment)
    good = path_of(message["html"], "o")[len("/t/o/") : -len(".gif")]
    keys = signing.keys(deployment)
    raw = bytearray(base64.urlsafe_b64decode(good + "=="))
    raw[5] ^= 1  # another message id, same signature
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    expired = keys.sign(signing.OPEN, message["id"], ttl=-10)
    click_token = keys.sign(signing.CLICK, message["id"], ttl=60)  # another purpose
    for token in (forged, expired, click_token, good[:-3], good + "AAAA", "x" * 5000, "%00", ""):
        reply = request(f"{server}/t/o/{token}.gif", headers={"User-Agent": BROWSER})
        if token in ("", "x" * 5000):
            assert reply.status in (200, 404, 414, 431)
            continue
        assert reply.status == 200 and reply.body == PIXEL  # no oracle
    assert events(deployment, message["id"]) == []
    # another deployment's key cannot sign for this one
    assert keys.verify(forged, signing.OPEN) is None


def test_do_not_track_is_honoured_for_opens(deployment: CRM, server: str) -> None:
    message = sent_message(deployment)
    pixel = server + path_of(message["html"], "o")
    assert request(pixel, headers={"User-Agent": BROWSER, "DNT": "1"}).body == PIXEL
    assert request(pixel, headers={"User-Agent": BROWSER, "Sec-GPC": "1"}).body == PIXEL
    assert events(deployment, message["id"]) == []


def test_tracking_off_records_nothing_but_links_still_work(deployment: CRM) -> None:
    message = sent_message(deployment)
    quiet = configure(deployment, "tracking = false\n")  # under [plugin.email_tracking]
    try:
        with serve_app(create_app(quiet, access_log=False)) as base:
            assert request(base + path_of(message["html"], "o")).body == PIXEL
            click = request(base + path_of(message["html"], "c"), headers={"User-Agent": BROWSER})
            assert click.status == 302
            assert request(base + path_of(message["html"], "p")).status == 200
    finally:
        quiet.close()
    assert events(deployment, message["id"]) == []


def test_the_ip_is_kept_whole_when_configured(deployment: CRM) -> None:
    message = sent_message(deployment)
    whole = configure(deployment, "truncate_ip = false\n")
    try:
        with serve_app(create_app(whole, access_log=False)) as base:
            request(base + path_of(message["html"], "o"), headers={"User-Agent": BROWSER})
    finally:
        whole.close()
    assert events(deployment, message["id"])[0]["data"]["ip"] == "127.0.0.1"


# -- tracked links ------------------------------------------------------------------------
def test_click_redirects_to_the_stored_link_only(deployment: CRM, server: str) -> None:
    message = sent_message(deployment)
    assert message["links"] == ["https://acme.example/catalog?a=1&b=2"]
    assert "acme.example" not in message["html"].split("<a href=")[1].split(">")[0]
    click = path_of(message["html"], "c")
    assert path_of(message["text"], "c") == click  # the same link in both bodies
    reply = request(server + click + "?next=https://evil.example", headers={"User-Agent": BROWSER})
    assert reply.status == 302
    assert reply.headers["location"] == "https://acme.example/catalog?a=1&b=2"
    assert reply.headers["referrer-policy"] == "no-referrer"
    [event] = events(deployment, message["id"])
    assert (event["kind"], event["link"], event["classification"]) == ("click", 0, "human")
    assert event["data"]["url"] == "https://acme.example/catalog?a=1&b=2"
    keys = signing.keys(deployment)
    beyond = keys.sign(signing.CLICK, message["id"], link=7, ttl=60)
    for token in (beyond, "forged" + "A" * 40, keys.sign(signing.OPEN, message["id"], ttl=60)):
        bad = request(f"{server}/t/c/{token}")
        assert bad.status == 404
        assert bad.json()["error"] == "HTTPError"
    assert len(events(deployment, message["id"])) == 1


def test_a_click_right_after_delivery_is_a_scanners(deployment: CRM, server: str) -> None:
    message = sent_message(deployment, sent_ago=2)
    reply = request(server + path_of(message["html"], "c"), headers={"User-Agent": BROWSER})
    assert reply.status == 302
    [event] = events(deployment, message["id"])
    assert event["classification"] == "scanner"
    assert "after delivery" in event["data"]["reasons"][0]


# -- documents and reading ----------------------------------------------------------------
def view_token(html: str) -> str:
    found = re.search(r'"view": "([^"]+)"', html)
    assert found, html[-500:]
    return found.group(1)


def page_seconds(crm: CRM, message_id: int) -> dict[int, float]:
    table = crm.metadata.tables["email_page_time"]
    with crm.connect() as conn:
        rows = conn.execute(
            select(table.c.page, table.c.seconds).where(table.c.message_id == message_id)
        )
        return {page: seconds for page, seconds in rows}


def test_document_page_view_and_heartbeats(deployment: CRM, server: str) -> None:
    message = sent_message(deployment)
    page = request(server + path_of(message["html"], "p"), headers={"User-Agent": BROWSER})
    assert page.status == 200
    assert "data-page" in page.text and "crmkit-reading" in page.text
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    view = view_token(page.text)
    beat = f"{server}/p/beat"
    assert request(beat, method="POST", json={"v": view, "s": 1, "p": 1, "t": 0.5}).status == 204
    assert (
        request(beat, method="POST", json={"v": view, "s": 1, "p": 1, "t": 0.5}).status == 204
    )  # replay
    assert (
        request(beat, method="POST", json={"v": view, "s": 2, "p": 9, "t": 0.5}).status == 204
    )  # no page 9
    assert (
        request(beat, method="POST", json={"v": view, "s": 3, "p": 2, "t": 10_000}).status == 204
    )  # capped
    seconds = page_seconds(deployment, message["id"])
    assert seconds[1] == pytest.approx(0.5)
    assert 0 < seconds[2] <= 2  # capped at twice the heartbeat interval
    [event] = events(deployment, message["id"])
    assert (event["kind"], event["classification"], event["view_id"]) == (
        "page_view",
        "human",
        event["view_id"],
    )
    [task] = tasks_of(deployment)  # opening the document is an open
    with deployment.session(as_user="anna") as s:
        assert [i.outcome for i in s.interactions.list()] == ["proposal_read"]
    assert "proposal" in task.title


def test_heartbeats_after_the_view_expired_are_ignored(deployment: CRM, server: str) -> None:
    message = sent_message(deployment)
    view = view_token(request(server + path_of(message["html"], "p")).text)
    views = deployment.metadata.tables["email_views"]
    with deployment.connect() as conn:
        conn.execute(update(views).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    assert (
        request(f"{server}/p/beat", method="POST", json={"v": view, "s": 1, "p": 1, "t": 1}).status
        == 204
    )
    assert page_seconds(deployment, message["id"]) == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"s": 1, "p": 1, "t": 1}', "v"),
        (b'{"v": "x", "s": 0, "p": 1, "t": 1}', "s"),
        (b'{"v": "x", "s": 1, "p": true, "t": 1}', "p"),
        (b'{"v": "x", "s": 1, "p": 1, "t": -1}', "t"),
        (b'{"v": "x", "s": 1, "p": 1, "t": 1e999}', "t"),
        (b'{"v": "' + b"x" * 2000 + b'", "s": 1, "p": 1, "t": 1}', "body"),
    ],
)
def test_bad_heartbeats_are_refused_with_the_field(server: str, body: bytes, field: str) -> None:
    reply = request(f"{server}/p/beat", method="POST", body=body)
    assert reply.status == 422
    assert reply.json()["field"] == field


def test_huge_headers_are_refused_and_the_server_goes_on(deployment: CRM, server: str) -> None:
    message = sent_message(deployment)
    pixel = server + path_of(message["html"], "o")
    try:
        reply = request(pixel, headers={"User-Agent": BROWSER, "X-Junk": "j" * 200_000})
        assert reply.status >= 400
    except OSError:  # the server may close the connection instead
        pass
    assert request(pixel, headers={"User-Agent": BROWSER}).status == 200
    assert len(events(deployment, message["id"])) == 1


# -- load -----------------------------------------------------------------------------------
def test_concurrent_opens_are_each_recorded_once(deployment: CRM, server: str) -> None:
    """A bounded burst on loopback: every answered open is stored, none twice, none lost."""
    messages = [sent_message(deployment) for _ in range(5)]
    pixels = [server + path_of(m["html"], "o") for m in messages]
    failures: list[BaseException] = []
    per_thread, threads = 40, 16

    def hammer(n: int) -> None:
        try:
            for i in range(per_thread):
                reply = request(pixels[(n + i) % len(pixels)], headers={"User-Agent": BROWSER})
                assert reply.status == 200 and reply.body == PIXEL
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not failures, failures[:3]
    total = sum(len(events(deployment, m["id"])) for m in messages)
    assert total == per_thread * threads
    assert request(f"{server}/health").status == 200
    # each message notified its owner once (the first open), however many opens came at once
    assert len(tasks_of(deployment)) == len(messages)


# -- the open as an outcome, and the proposal_read gate -------------------------------------
class Offers:
    """A pipeline whose negotiation waits for the proposal to be read, and moves when it is."""

    @crmkit.hookimpl
    def crmkit_pipelines(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "offers",
                "stages": [
                    {"name": "talk"},
                    {"name": "negotiation", "marks": ["proposal_read"]},
                ],
                "rules": [{"kind": "email", "outcome": "proposal_read", "move_to": "negotiation"}],
            }
        ]


def test_reading_the_proposal_moves_the_deal_through_its_gate(
    crm: CRM, register_plugin: Any
) -> None:
    register_plugin(Offers())
    with crm.session() as s:
        s.users.add("anna", role="manager", name="Anna Petrova")
    with crm.session(as_user="anna") as s:
        client = s.clients.create("Acme", email="buyer@acme.example", owner="anna")
        deal = s.deals.open(client.id, pipeline="offers", title="Offer")
        with pytest.raises(crmkit.ValidationError, match="has not read the proposal"):
            s.deals.move(deal.id, "negotiation")
    opened = configure(crm, "[plugin.email_tracking]\n")
    try:
        message = sent_message(opened)
        with serve_app(create_app(opened, access_log=False)) as base:
            # opening the mail is not reading the proposal: the deal stays
            request(base + path_of(message["html"], "o"), headers={"User-Agent": BROWSER})
            with opened.session(as_user="anna") as s:
                assert s.deals.get(deal.id).stage == "talk"
            # a link scanner fetching the proposal is not the client reading it
            request(
                base + path_of(message["html"], "p"),
                method="GET",
                headers={"User-Agent": "Mimecast"},
            )
            with opened.session(as_user="anna") as s:
                assert s.deals.get(deal.id).stage == "talk"
            page = request(base + path_of(message["html"], "p"), headers={"User-Agent": BROWSER})
            assert page.status == 200
        with opened.session(as_user="anna") as s:
            assert s.deals.get(deal.id).stage == "negotiation"
            outcomes = [i.outcome for i in s.interactions.list()]
        assert sorted(outcomes) == ["opened", "proposal_read"]
    finally:
        opened.close()


def test_opens_of_a_deleted_message_record_nothing(deployment: CRM, server: str) -> None:
    """The writer remembers messages it has seen; one deleted since is dropped, not an error."""
    message, other = sent_message(deployment), sent_message(deployment)
    pixel = server + path_of(message["html"], "o")
    assert request(pixel, headers={"User-Agent": BROWSER}).status == 200
    outbox = deployment.metadata.tables["email_outbox"]
    with deployment.connect() as conn:
        conn.execute(outbox.delete().where(outbox.c.id == message["id"]))
    assert request(pixel, headers={"User-Agent": BROWSER}).body == PIXEL
    assert events(deployment, message["id"]) == []  # deleted with the message, none added
    request(server + path_of(other["html"], "o"), headers={"User-Agent": BROWSER})
    assert len(events(deployment, other["id"])) == 1


def test_an_open_raises_the_automation_event(deployment: CRM) -> None:
    """``email.opened`` reaches automation rules, with the message in the payload."""
    rules = configure(
        deployment,
        '[automation.rules.opened]\nevent = "email.opened"\n'
        "when = { properties = { document = { const = false } } }\n"
        'actions = [{ do = "set_field", record = "deal", field = "title", '
        'value = "{deal.title} (opened: {message.subject})" }]\n',
    )
    try:
        message = sent_message(rules)
        with serve_app(create_app(rules, access_log=False)) as base:
            request(base + path_of(message["html"], "o"), headers={"User-Agent": BROWSER})
            request(base + path_of(message["html"], "o"), headers={"User-Agent": BROWSER})
        with rules.session(as_user="anna") as s:
            [deal] = s.deals.list()
        assert deal.title == "Acme order (opened: Our proposal)"  # once: one notice
    finally:
        rules.close()
