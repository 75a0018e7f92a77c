"""The whole flow with real parts: send, deliver by SMTP, open in Chromium, read the proposal.

``crmkit email send`` queues a proposal, ``crmkit email worker --once``
delivers it to a real SMTP server (:mod:`aiosmtpd`), headless Chromium
(Debian's, driven by Playwright) opens the HTML part that arrived, which
loads the open pixel from crmkit's server (uvicorn on a loopback port), then
follows the link to the hosted proposal and scrolls through its pages while
the page's script reports the reading time. The test checks what a manager
would see: the open classified ``human``, the task to call now, the
interaction logged, and the seconds read on each page.

Chromium is ``$CRMKIT_CHROMIUM`` or ``chromium`` on the PATH; without it
these tests are skipped, except under CI (``CI`` set), where that fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crmkit_email_tracking
import pytest
import smtp_server
from smtp_server import MailServer, configure
from sqlalchemy import select

import crmkit
from crmkit.server import create_app
from crmkit.testing_server import serve_app

CHROMIUM = os.environ.get("CRMKIT_CHROMIUM") or shutil.which("chromium")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI needs Chromium for these tests: apt-get install chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")

mail_server = smtp_server.mail_server
#: Scroll the reader's window to the top of page N.
SCROLL_TO = "n => document.querySelector(`[data-page='${n}']`).scrollIntoView()"
#: Chromium's flags on a machine without a screen or a network beyond loopback.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


class LongProposal:
    """A proposal of three pages, each taller than the window, as the segment plugin renders."""

    @crmkit.hookimpl
    def crmkit_render_document(
        self, session: Any, name: str, client_id: int, deal_id: int | None
    ) -> crmkit.Document | None:
        if name != "proposal":
            return None
        client = session.clients.get(client_id)
        pages = "".join(
            f'<section class="page" data-page="{n}" style="min-height: 1200px">'
            f"<h2>{title}</h2><p>{'Words worth reading. ' * 40}</p></section>"
            for n, title in ((1, "Your needs"), (2, "Our offer"), (3, "Prices and terms"))
        )
        return crmkit.Document(
            name="proposal",
            title=f"Proposal for {client.name}",
            html="<!DOCTYPE html><html><head><title>Proposal</title></head>"
            f"<body>{pages}</body></html>",
            client_id=client_id,
            deal_id=deal_id,
        )


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    return [crmkit_email_tracking, LongProposal()]


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def wait_for(check: Any, what: str, timeout: float = 10.0) -> Any:
    """Poll ``check()`` until it returns something true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rows(crm: Any, table: str, **where: Any) -> list[Any]:
    t = crm.metadata.tables[table]
    query = select(t).where(*(t.c[k] == v for k, v in where.items()))
    with crm.connect(readonly=True) as conn:
        return list(conn.execute(query).all())


def test_send_deliver_open_read_notify(
    crm: Any, invoke: Any, mail_server: MailServer, browser: Any
) -> None:
    with crm.session() as s:
        s.users.add("anna", role="manager", name="Anna Petrova")
    with crm.session(as_user="anna") as s:
        client = s.clients.create("Acme", email="buyer@acme.example")
        deal = s.deals.open(client.id, amount=120_000, title="Pumps for Acme")
    # the server answers the pixel, the links and the proposal; the command line sends
    with serve_app(create_app(crm)) as base:
        sender = configure(
            crm,
            mail_server.port,
            extra=f'heartbeat_seconds = 0.5\n[server]\npublic_url = "{base}"\n',
        )
        root = sender.config.root
        sent = invoke(
            "email", "send", client.id, "--template", "proposal", "--deal", deal.id, as_user="anna"
        )
        assert sent.exit_code == 0, sent
        delivered = invoke("email", "worker", "--once")
        assert delivered.exit_code == 0, delivered
        [received] = mail_server.messages
        assert received["To"] == "buyer@acme.example"
        html = received.get_body(("html",)).get_content()
        assert f"{base}/t/o/" in html and f"{base}/p/" in html
        [message] = rows(sender, "email_outbox")
        assert message.status == "sent" and message.document == "proposal"

        # the client opens the mail: Chromium shows the HTML part, which loads the pixel
        mail = Path(root) / "received.html"
        mail.write_text(html, "utf-8")
        page = browser.new_page()
        page.goto(mail.as_uri())
        opens = wait_for(lambda: rows(sender, "email_events", kind="open"), "the open")
        assert [(e.classification, e.counted) for e in opens] == [("human", True)]
        assert "HeadlessChrome" in opens[0].data["user_agent"]

        # ... and follows the link to the proposal, reading page 1, then 2, then 3
        page.click(f"a[href^='{base}/p/']")
        page.wait_for_selector("[data-page='3']")
        for number in (1, 2, 3):
            page.evaluate(SCROLL_TO, number)
            page.wait_for_timeout(1300)
        page.evaluate("window.crmkitReading.send()")
        page.close()  # pagehide sends what is left

        def read() -> dict[int, float]:
            times = rows(sender, "email_page_time", message_id=message.id)
            seconds = {t.page: t.seconds for t in times}
            return seconds if len(seconds) == 3 else {}

        seconds = wait_for(read, "reading time on three pages")
        print("seconds read per page:", seconds)
        for number in (1, 2, 3):
            assert 0.5 <= seconds[number] <= 4.0, seconds
        [view] = rows(sender, "email_views", message_id=message.id)
        assert view.classification == "human"

        # the owner was told: a task to call now, the open logged as an interaction
        with sender.session(as_user="anna") as s:
            tasks = s.tasks.list()
            logged = s.interactions.list()
        assert len(tasks) == 1  # opening the mail, then reading: one occasion to call
        assert tasks[0].title.startswith("The client opened the proposal email: call now")
        assert tasks[0].deal_id == deal.id
        outcomes = sorted(i.outcome for i in logged if i.kind == "email")
        assert outcomes == ["opened", "proposal_read", "sent"]
        sender.close()
