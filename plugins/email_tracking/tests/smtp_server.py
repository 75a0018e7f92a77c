"""Real SMTP servers for the tests: an aiosmtpd server that records or refuses, and a rude one.

:class:`MailServer` is an :mod:`aiosmtpd` server on ``127.0.0.1`` (a free
port) whose handler keeps every message it accepts (:attr:`MailServer.messages`,
parsed) and answers with the replies queued in :attr:`MailServer.refusals`
first (``"451 4.3.0 try later"``, ``"550 5.1.1 no such user"``), one per
message, at ``RCPT`` or ``DATA``. :class:`Dropper` accepts connections and
closes them at once. :func:`closed_port` is a port nobody listens on.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import attrs
import crmkit_email_tracking
import pytest
from aiosmtpd.controller import Controller

import crmkit


def self_signed(folder: Any) -> tuple[Any, Any]:
    """A certificate for 127.0.0.1 and its key, by the ``openssl`` command (None without it)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        return None, None
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=localhost"]
    command += ["-keyout", str(key), "-out", str(cert)]
    command += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    return cert, key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A port on 127.0.0.1 that refuses connections (it was free a moment ago)."""
    return free_port()


class _Handler:
    def __init__(self, server: MailServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        with self.server.lock:
            refusal = self.server.refusals[0] if self.server.refusals else None
            if refusal is not None and self.server.refuse_at == "RCPT":
                self.server.refusals.popleft()
                self.server.refused.append(refusal)
                return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.server.lock:
            if self.server.refusals and self.server.refuse_at == "DATA":
                refusal = self.server.refusals.popleft()
                self.server.refused.append(refusal)
                return refusal
            parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.server.messages.append(parsed)  # type: ignore[arg-type]
            self.server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


class MailServer:
    """An SMTP server in a thread: ``with MailServer() as server: ... server.port``."""

    def __init__(self, *, refuse_at: str = "RCPT", **server_kwargs: Any) -> None:
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refusals: deque[str] = deque()
        self.refused: list[str] = []
        self.refuse_at = refuse_at
        self.host = "127.0.0.1"
        self.port = free_port()
        self.logins: list[tuple[str, str]] = []
        self.controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, **server_kwargs
        )

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> Any:
        """Accept the login ``sales`` with the password ``s3cret`` (and keep what was tried)."""
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == ("sales", "s3cret"))

    def __enter__(self) -> MailServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


class Dropper:
    """A server that accepts every connection and closes it at once (before any greeting)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def __enter__(self) -> Dropper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


# -- fixtures and helpers shared by the sending and worker tests -----------------------------
class Proposals:
    """A plugin rendering the document ``proposal``: two pages, one of them with a link."""

    @crmkit.hookimpl
    def crmkit_render_document(
        self, session: Any, name: str, client_id: int, deal_id: int | None
    ) -> crmkit.Document | None:
        if name != "proposal":
            return None
        client = session.clients.get(client_id)
        html = (
            f"<html><body><h1>Proposal for {client.name}</h1>"
            '<section class="page" data-page="1"><p>Pumps, 10 pcs.</p></section>'
            '<section class="page" data-page="2"><p>Terms: '
            '<a href="https://acme.example/terms">our terms</a></p></section>'
            "</body></html>"
        )
        return crmkit.Document(
            name="proposal",
            title=f"Proposal for {client.name}",
            html=html,
            client_id=client_id,
            deal_id=deal_id,
        )


SENDER = "Acme sales <sales@acme.example>"

#: A deployment template with a link to track and no text part.
INTRO_HTML = """<html><body>
<p>Hello {{ contact.name if contact else client.name }},</p>
<p>See <a href="https://acme.example/catalog?x=1&amp;y=2">our catalogue</a>.</p>
<p>{{ sender.name }}</p>
</body></html>
"""


def configure(
    crm: Any,
    port: int,
    *,
    security: str = "none",
    max_attempts: int = 3,
    backoff: float = 0.05,
    claim_minutes: float = 1,
    extra: str = "",
    smtp_extra: str = "",
) -> Any:
    """Point the deployment at an SMTP server (short retries) and open it anew.

    The deployment's own templates are in ``templates/email`` (``intro``).
    The caller closes the returned CRM.
    """
    from crmkit import CRM

    root = crm.config.root
    path = root / "crmkit.toml"
    original = root / "crmkit.toml.orig"
    if not original.exists():
        original.write_text(path.read_text("utf-8"), "utf-8")
    folder = root / "templates" / "email"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "intro.subject.j2").write_text("A word from {{ sender.name }}\n", "utf-8")
    (folder / "intro.html.j2").write_text(INTRO_HTML, "utf-8")
    section = f"""
[plugin.email_tracking]
from = "{SENDER}"
templates = "templates/email"
{extra}
[plugin.email_tracking.smtp]
host = "127.0.0.1"
port = {port}
security = "{security}"
timeout = 5
{smtp_extra}
[plugin.email_tracking.worker]
max_attempts = {max_attempts}
backoff_seconds = {backoff}
claim_minutes = {claim_minutes}
"""
    path.write_text(original.read_text("utf-8") + section, "utf-8")
    opened = CRM.open(root, plugins=crm.plugins)
    return opened


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    return [crmkit_email_tracking, Proposals()]


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


@pytest.fixture
def reopen(crm: Any) -> Iterator[Callable[..., Any]]:
    """``reopen(port, **settings)``: the deployment configured for that SMTP port."""
    opened: list[Any] = []

    def make(port: int, **kwargs: Any) -> Any:
        fresh = configure(crm, port, **kwargs)
        opened.append(fresh)
        return fresh

    yield make
    for fresh in opened:
        fresh.close()


@pytest.fixture
def mail_crm(reopen: Callable[..., Any], mail_server: MailServer) -> Any:
    """The deployment, sending through :func:`mail_server`."""
    return reopen(mail_server.port)


@attrs.define
class World:
    client_id: int
    contact_id: int
    deal_id: int
    bare_client_id: int  # no address, no contacts
    anna_id: int


def make_world(crm: Any) -> World:
    """Anna (a manager), her client Acme with a contact and a deal, and a client with no address."""
    with crm.session() as s:
        anna = s.users.add("anna", role="manager", name="Anna Petrova")
    with crm.session(as_user="anna") as s:
        client = s.clients.create("Acme", email="buy@acme.example")
        contact = s.contacts.add(client.id, "Ivan Ivanov", email="ivan@acme.example")
        deal = s.deals.open(client.id, amount=1000, title="Pumps")
        bare = s.clients.create("Nowhere Ltd")
    return World(client.id, contact.id, deal.id, bare.id, anna.id)


@pytest.fixture
def world(mail_crm: Any) -> World:
    return make_world(mail_crm)


def outbox_rows(crm: Any) -> list[Any]:
    from crmkit_email_tracking.tables import OUTBOX

    table = crm.metadata.tables[OUTBOX]
    with crm.connect(readonly=True) as conn:
        return list(conn.execute(table.select().order_by(table.c.id)).all())


def queue(crm: Any, world: World, n: int = 1, **kwargs: Any) -> list[Any]:
    """Queue ``n`` intro messages to Acme as Anna."""
    from crmkit_email_tracking import outbox

    with crm.session(as_user="anna") as s:
        return [outbox.send(s, world.client_id, template="intro", **kwargs) for _ in range(n)]
