"""Sending proposals: the outbox, its templates, and the worker that delivers it.

:func:`send` puts a message in ``email_outbox``: it checks that the acting
user may see the client (and the deal, and the contact), picks the
recipient, renders the template with Jinja2, hosts the document (the
commercial proposal) that a plugin renders through ``crmkit_render_document``
and makes the links trackable, all in the session's transaction. Nothing
leaves the building then: the worker delivers due messages.

The worker (:func:`run_worker`, ``crmkit email worker``) claims due messages
(:func:`claim`: a conditional ``UPDATE``, and ``SELECT ... FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so that two workers never take the same one), hands
each to the SMTP server (:mod:`.smtp`) and records what happened: a message
sent gets its ``email`` interaction, logged as its sender, in the same
transaction as its new status; a temporary failure is retried later with an
exponential backoff; a permanent one (or the last allowed attempt) leaves the
message ``failed`` with the server's reply.

Templates: a template ``NAME`` is the files ``NAME.subject.j2``,
``NAME.html.j2`` and, optionally, ``NAME.txt.j2`` (without it the text part
is made from the HTML), taken from the deployment's templates folder
(``[plugin.email_tracking] templates``) when it has ``NAME.html.j2``, else
from the templates that come with the plugin (``proposal``, ``thank_you``,
``presentation``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import signal
import socket
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import field, fields, frozen
from sqlalchemy import and_, insert, or_, select, update

from crmkit.core.errors import CrmError, NotFound, ValidationError
from crmkit.core.schema import utcnow

from . import settings
from .tables import DOCUMENTS, OUTBOX

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import CRM, Session

#: The templates that come with the plugin.
BUILTIN_TEMPLATES = Path(__file__).resolve().parent / "templates"
#: The document a template hosts when ``document`` is not given.
DEFAULT_DOCUMENTS = {"proposal": "proposal"}
#: How far in the past ``at`` may be and still mean "now" (older is a mistake).
PAST_GRACE = dt.timedelta(days=1)
#: How far ahead a message may be scheduled.
MAX_AHEAD = dt.timedelta(days=366)
#: The longest delay between two attempts.
MAX_BACKOFF = 3600.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_PAGE = re.compile(r"""\bdata-page\s*=\s*["']?\s*(\d+)""", re.IGNORECASE)


# -- what is stored ----------------------------------------------------------------------
@frozen
class Message:
    """A message of the outbox, as stored."""

    id: int
    client_id: int
    template: str
    subject: str
    to_address: str
    status: str
    send_at: dt.datetime
    attempts: int = 0
    token: str = field(default="", repr=False)
    contact_id: int | None = None
    user_id: int | None = None
    deal_id: int | None = None
    from_address: str | None = None
    document: str | None = None
    last_error: str | None = None
    created_at: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    rfc_message_id: str | None = None
    interaction_id: int | None = None
    claimed_by: str | None = None
    claimed_at: dt.datetime | None = None
    opened_at: dt.datetime | None = None
    links: list[str] = field(factory=list, repr=False)
    body_html: str = field(default="", repr=False)
    body_text: str = field(default="", repr=False)

    @classmethod
    def from_row(cls, row: Any) -> Message:
        """A message from an ``email_outbox`` row (columns it does not know are left out)."""
        data = row._mapping
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["links"] = list(values.get("links") or [])
        return cls(**values)


@frozen
class Outcome:
    """What the worker did with one message."""

    message_id: int
    #: ``sent``, ``retry`` (a temporary failure, tried again at ``retry_at``),
    #: ``failed``, or ``lost`` (another worker took the message over meanwhile)
    status: str
    to_address: str
    attempts: int
    reply: str | None = None
    retry_at: dt.datetime | None = None
    interaction_id: int | None = None


# -- templates ---------------------------------------------------------------------------
def template_folders(crm: CRM) -> list[Path]:
    """Where templates are looked up, in order: the deployment's folder, then the plugin's."""
    conf = settings.load(crm)
    folders = []
    if conf.templates:
        folders.append((crm.config.root / conf.templates).resolve())
    folders.append(BUILTIN_TEMPLATES)
    return folders


def _environment(folder: Path) -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=lambda name: (name or "").endswith(".html.j2"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        auto_reload=True,
    )


_ENVIRONMENTS: dict[Path, Any] = {}
_ENV_LOCK = threading.Lock()


def _env_for(folder: Path) -> Any:
    with _ENV_LOCK:
        env = _ENVIRONMENTS.get(folder)
        if env is None:
            env = _ENVIRONMENTS[folder] = _environment(folder)
        return env


def _template_error(name: str, exc: Exception) -> ValidationError:
    """A template failure as a message naming the file, the line and what went wrong."""
    import jinja2

    where = ""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = f"{Path(exc.filename or exc.name or name).name}, line {exc.lineno}: "
        reason = exc.message or str(exc)
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
        if frames:
            where = f"{Path(frames[-1].filename).name}, line {frames[-1].lineno}: "
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return ValidationError(f"email template {name!r}: {where}{reason}", field="template")


def check_template_name(name: Any) -> str:
    """``name`` if it names a template (letters, digits, ``_``, ``-``); else ValidationError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"{name!r} is not a template name (letters, digits, '_' and '-')", field="template"
        )
    return name


def render(crm: CRM, name: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """Render template ``name``: its subject (one line), HTML and text bodies.

    :class:`~crmkit.ValidationError` (field ``template``) naming the file,
    the line and the reason when the template is missing or fails, e.g.
    ``'deal' is undefined``.
    """
    import jinja2

    name = check_template_name(name)
    folders = template_folders(crm)
    folder = next((f for f in folders if (f / f"{name}.html.j2").is_file()), None)
    if folder is None:
        looked = ", ".join(str(f) for f in folders)
        raise ValidationError(
            f"no email template {name!r}: {name}.html.j2 is in none of {looked}",
            field="template",
        )
    env = _env_for(folder)
    try:
        subject = env.get_template(f"{name}.subject.j2").render(context)
        html = env.get_template(f"{name}.html.j2").render(context)
        try:
            text_template = env.get_template(f"{name}.txt.j2")
        except jinja2.TemplateNotFound:
            text = html_to_text(html)
        else:
            text = text_template.render(context)
    except jinja2.TemplateNotFound as exc:
        raise ValidationError(
            f"email template {name!r} lacks {exc.name} (in {folder})", field="template"
        ) from None
    except Exception as exc:  # undefined variables, syntax and runtime errors in a template
        raise _template_error(name, exc) from None
    subject = " ".join(subject.split())  # one line: no header injection
    if not subject:
        raise ValidationError(
            f"email template {name!r}: the subject ({name}.subject.j2) is empty", field="template"
        )
    if len(subject) > 998:
        raise ValidationError(
            f"email template {name!r}: the subject is longer than 998 characters",
            field="template",
        )
    return subject, html, text.strip() + "\n"


class _TextMaker(HTMLParser):
    """The text of an HTML body: paragraphs kept, links as ``label (URL)``."""

    BLOCKS = frozenset(
        {"p", "div", "section", "article", "header", "footer", "ul", "ol", "li", "table"}
        | {"tr", "blockquote", "pre", "hr", "address", "h1", "h2", "h3", "h4", "h5", "h6"}
    )
    SKIP = frozenset(("head", "style", "script", "title"))

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.links: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
            if tag == "li":
                self.parts.append("- ")
        elif tag == "a":
            self.links.append((dict(attrs).get("href"), len(self.parts)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = " ".join("".join(self.parts[start:]).split())
            if href and href.startswith(("http://", "https://", "mailto:")) and href != label:
                self.parts.append(f" ({href})" if label else href)

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [line.strip() for line in raw.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    """A plain-text rendering of an HTML body (for the ``text/plain`` part)."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    return maker.text()


def count_pages(html: str) -> int:
    """How many pages a document has: its distinct ``data-page="N"`` marks (1 without any)."""
    return len(set(_PAGE.findall(html))) or 1


# -- queueing ----------------------------------------------------------------------------
def _when(session: Session, at: Any, now: dt.datetime) -> dt.datetime:
    """``at`` checked: aware, not long past (a past time means now), not absurdly far ahead."""
    if at is None:
        return now
    from crmkit.core.validation import parse_when

    when = parse_when(at, session.crm.tz, field="at", now=now)
    if when < now - PAST_GRACE:
        raise ValidationError(
            f"{when.isoformat()} is more than a day in the past: give a time to come "
            "(or leave it out to send now)",
            field="at",
        )
    if when > now + MAX_AHEAD:
        raise ValidationError(f"{when.isoformat()} is more than a year ahead", field="at")
    return max(when, now)


def _recipient(session: Session, client: Any, contact_id: int | None) -> tuple[Any, str]:
    """The contact (or None) and the address to send to."""
    if contact_id is not None:
        try:
            contact = session.contacts.get(contact_id)
        except NotFound:
            raise NotFound(f"no contact with id {contact_id}", field="to") from None
        if contact.client_id != client.id:
            raise ValidationError(
                f"contact #{contact.id} is not a contact of client #{client.id}", field="to"
            )
        if not contact.email:
            raise ValidationError(
                f"contact #{contact.id} {contact.name!r} has no email address", field="to"
            )
        return contact, contact.email
    if client.email:
        return None, client.email
    for contact in session.contacts.list(client.id):
        if contact.email:
            return contact, contact.email
    raise ValidationError(
        f"client #{client.id} {client.name!r} has no email address, nor has any of its "
        "contacts: add one, or choose a contact with one",
        field="to",
    )


def _topic(template: str, document: str | None, session: Session) -> str:
    """The topic of the ``email`` interaction a message is logged as."""
    kind = session.crm.interaction_kinds.get("email")
    topics = kind.topics if kind is not None else {}
    if document is not None and "proposal" in topics:
        return "proposal"
    if template in topics:
        return template
    return "followup" if "followup" in topics else next(iter(topics), "followup")


def send(
    session: Session,
    client_id: int,
    *,
    template: str,
    deal_id: int | None = None,
    contact_id: int | None = None,
    at: Any = None,
    document: str | bool | None = None,
) -> Message:
    """Queue a message from template ``template`` to client ``client_id``; returns it as stored.

    ``contact_id`` chooses the recipient (default: the client's address, else
    its first contact with one). ``at`` schedules it (an aware datetime,
    ISO text or ``+2h``; naive times are in the deployment's time zone; a
    time already past means now). ``document`` names a document to host with
    the message (rendered by a plugin through ``crmkit_render_document``):
    None means the template's own (``proposal`` for the template
    ``proposal``), False none. Everything happens in ``session``'s
    transaction; a failure stores nothing.
    """
    crm = session.crm
    conf = settings.load(crm)
    now = utcnow()
    template = check_template_name(template)
    client = session.clients.get(client_id)
    deal = None
    if deal_id is not None:
        deal = session.deals.get(deal_id)
        if deal.client_id != client.id:
            raise ValidationError(
                f"deal #{deal.id} belongs to client #{deal.client_id}, not to client #{client.id}",
                field="deal",
            )
    contact, to_address = _recipient(session, client, contact_id)
    send_at = _when(session, at, now)
    if document is None or document is True:
        doc_name = DEFAULT_DOCUMENTS.get(template)
    elif document is False:
        doc_name = None
    else:
        doc_name = str(document)
        if not _NAME.match(doc_name):
            raise ValidationError(f"{doc_name!r} is not a document name", field="document")
    topic = _topic(template, doc_name, session)
    # the worker logs the message as an interaction of this user: may they?
    session.access.require(
        "create",
        "interaction",
        session.access.view_of(
            "interaction",
            {
                "client_id": client.id,
                "user_id": session.user.id,
                "deal_id": deal.id if deal else None,
                "kind": "email",
                "topic": topic,
                "outcome": "sent",
            },
        ),
    )
    rendered = None
    if doc_name is not None:
        try:
            rendered = crm.plugins.render_document(
                session, doc_name, client.id, deal.id if deal else None
            )
        except NotFound as exc:
            raise NotFound(
                f"{exc.message}; send it without a document with --no-document (document=False)",
                field="document",
            ) from None
    outbox = session.table(OUTBOX)
    with session.connection.begin_nested():  # a template error leaves nothing behind
        message_id = int(
            session.connection.execute(
                insert(outbox)
                .values(
                    client_id=client.id,
                    contact_id=contact.id if contact else None,
                    user_id=session.user.id,
                    deal_id=deal.id if deal else None,
                    template=template,
                    subject="",
                    to_address=to_address,
                    from_address=conf.sender,
                    body_html="",
                    body_text="",
                    send_at=send_at,
                    status="queued",
                    attempts=0,
                    token=secrets.token_urlsafe(24),
                    created_at=now,
                    document=doc_name,
                    links=[],
                )
                .returning(outbox.c.id)
            ).scalar_one()
        )
        from .instrument import document_url, instrument

        url = None
        if rendered is not None:
            session.connection.execute(
                insert(session.table(DOCUMENTS)).values(
                    message_id=message_id,
                    name=doc_name,
                    title=(rendered.title or doc_name or "")[:300],
                    html=rendered.html,
                    pages=count_pages(rendered.html),
                )
            )
            url = document_url(crm, message_id)
        context = {
            "client": client,
            "contact": contact,
            "deal": deal,
            "sender": session.user,
            "document": rendered,
            "document_url": url,
            "now": now.astimezone(crm.tz),
            "send_at": send_at.astimezone(crm.tz),
        }
        subject, html, text = render(crm, template, context)
        made = instrument(crm, message_id, html, text)
        session.connection.execute(
            update(outbox)
            .where(outbox.c.id == message_id)
            .values(subject=subject, body_html=made.html, body_text=made.text, links=made.links)
        )
    session.audit(
        "queued",
        "email",
        ids=[message_id],
        detail={"client_id": client.id, "template": template, "send_at": send_at.isoformat()},
        kind="change",
    )
    return get(session, message_id)


def _visible(session: Session) -> Any:
    """The ids of the clients the acting user may read (a subquery)."""
    clients = session.table("clients")
    return session.access.filter(select(clients.c.id), "read", "client")


def get(session: Session, message_id: int) -> Message:
    """A message of a client the acting user may see; :class:`~crmkit.NotFound` otherwise."""
    outbox = session.table(OUTBOX)
    row = session.connection.execute(
        select(outbox).where(outbox.c.id == message_id, outbox.c.client_id.in_(_visible(session)))
    ).first()
    if row is None:
        raise NotFound(f"no email message with id {message_id}", field="message")
    return Message.from_row(row)


def list_messages(
    session: Session,
    *,
    status: str | None = None,
    client_id: int | None = None,
    limit: int = 50,
) -> list[Message]:
    """The newest messages of the clients the acting user may see (by status, by client)."""
    from .tables import STATUSES

    outbox = session.table(OUTBOX)
    query = select(outbox).where(outbox.c.client_id.in_(_visible(session)))
    if status is not None:
        if status not in STATUSES:
            raise ValidationError(
                f"{status!r} is not a status ({', '.join(STATUSES)})", field="status"
            )
        query = query.where(outbox.c.status == status)
    if client_id is not None:
        session.clients.get(client_id)
        query = query.where(outbox.c.client_id == client_id)
    query = query.order_by(outbox.c.id.desc()).limit(limit)
    return [Message.from_row(r) for r in session.connection.execute(query)]


# -- the worker --------------------------------------------------------------------------
def new_worker_id() -> str:
    """A name for a worker: host, process and a random part."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim(
    crm: CRM, worker_id: str, limit: int = 20, *, now: dt.datetime | None = None
) -> list[int]:
    """Claim up to ``limit`` due messages for ``worker_id``; their ids, oldest due first.

    Due: ``queued`` with ``send_at`` reached, or ``sending`` but claimed
    longer than ``claim_minutes`` ago by a worker that died. Each is taken by
    a conditional ``UPDATE`` that re-checks those conditions, so when two
    workers race for a message exactly one gets it (on PostgreSQL the rows
    are also locked with ``FOR UPDATE SKIP LOCKED``, so workers skip each
    other's instead of waiting).
    """
    from .smtp import message_id as new_message_id

    conf = settings.load(crm)
    now = now or utcnow()
    stale = now - dt.timedelta(minutes=conf.claim_minutes)
    outbox = crm.metadata.tables[OUTBOX]
    due_queued = and_(outbox.c.status == "queued", outbox.c.send_at <= now)
    due_stale = and_(outbox.c.status == "sending", outbox.c.claimed_at < stale)
    claimed: list[int] = []
    with crm.connect() as conn:
        query = (
            select(outbox.c.id, outbox.c.status, outbox.c.from_address, outbox.c.rfc_message_id)
            .where(or_(due_queued, due_stale))
            .order_by(outbox.c.send_at, outbox.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for row in conn.execute(query).all():
            still_due = due_queued if row.status == "queued" else due_stale
            taken = conn.execute(
                update(outbox)
                .where(outbox.c.id == row.id, still_due)
                .values(
                    status="sending",
                    claimed_by=worker_id,
                    claimed_at=now,
                    rfc_message_id=row.rfc_message_id
                    or new_message_id(row.from_address or conf.sender),
                )
            ).rowcount
            if taken == 1:
                claimed.append(row.id)
    return claimed


def release(crm: CRM, ids: Sequence[int], worker_id: str) -> None:
    """Give back claimed messages not attempted (a worker asked to stop): queued again."""
    if not ids:
        return
    outbox = crm.metadata.tables[OUTBOX]
    with crm.connect() as conn:
        conn.execute(
            update(outbox)
            .where(
                outbox.c.id.in_(list(ids)),
                outbox.c.status == "sending",
                outbox.c.claimed_by == worker_id,
            )
            .values(status="queued", claimed_by=None, claimed_at=None)
        )


def _mine(outbox: Any, message_id: int, worker_id: str) -> Any:
    return and_(
        outbox.c.id == message_id,
        outbox.c.status == "sending",
        outbox.c.claimed_by == worker_id,
    )


class _Lost(Exception):
    """The claim was taken over by another worker meanwhile."""


def _record_sent(crm: CRM, msg: Message, worker_id: str, sent_at: dt.datetime) -> Outcome:
    """Mark ``msg`` sent and log its ``email`` interaction, in one transaction.

    Logged as the message's sender; if that fails (the user was deactivated,
    a policy no longer allows it), as the deployment's admin; if that fails
    too, the message is still marked sent, with the reason in ``last_error``.
    """
    outbox = crm.metadata.tables[OUTBOX]
    problem: CrmError | None = None
    for as_user in dict.fromkeys([msg.user_id, None]):
        try:
            with crm.session(as_user=as_user) as s:
                logged = s.interactions.log(
                    msg.client_id,
                    "email",
                    topic=_topic(msg.template, msg.document, s),
                    outcome="sent",
                    direction="outbound",
                    at=sent_at,
                    deal_id=msg.deal_id,
                    respondents=[msg.contact_id] if msg.contact_id else (),
                    note=f"Email #{msg.id} to {msg.to_address}: {msg.subject}"[:1000],
                )
                done = s.connection.execute(
                    update(outbox)
                    .where(_mine(outbox, msg.id, worker_id))
                    .values(
                        status="sent",
                        sent_at=sent_at,
                        interaction_id=logged.interaction.id,
                        last_error=None,
                    )
                ).rowcount
                if done != 1:
                    raise _Lost
            return Outcome(
                message_id=msg.id,
                status="sent",
                to_address=msg.to_address,
                attempts=msg.attempts,
                interaction_id=logged.interaction.id,
            )
        except _Lost:
            return Outcome(msg.id, "lost", msg.to_address, msg.attempts)
        except CrmError as exc:
            problem = exc
    with crm.connect() as conn:
        done = conn.execute(
            update(outbox)
            .where(_mine(outbox, msg.id, worker_id))
            .values(
                status="sent",
                sent_at=sent_at,
                last_error=f"sent; the email interaction could not be logged: {problem}",
            )
        ).rowcount
    status = "sent" if done == 1 else "lost"
    return Outcome(msg.id, status, msg.to_address, msg.attempts, reply=str(problem))


def _record_failure(
    crm: CRM, msg: Message, worker_id: str, reply: str, temporary: bool, now: dt.datetime
) -> Outcome:
    """Count a failed attempt: retried later (with backoff) or failed for good."""
    conf = settings.load(crm)
    outbox = crm.metadata.tables[OUTBOX]
    attempts = msg.attempts + 1
    if temporary and attempts < conf.max_attempts:
        delay = min(conf.backoff_seconds * 2 ** (attempts - 1), MAX_BACKOFF)
        retry_at = now + dt.timedelta(seconds=delay)
        values: dict[str, Any] = {
            "status": "queued",
            "send_at": retry_at,
            "claimed_by": None,
            "claimed_at": None,
        }
        status = "retry"
    else:
        retry_at = None
        values = {"status": "failed"}
        status = "failed"
        if temporary:
            reply = f"{reply} (gave up after {attempts} attempts)"
    with crm.connect() as conn:
        done = conn.execute(
            update(outbox)
            .where(_mine(outbox, msg.id, worker_id))
            .values(attempts=attempts, last_error=reply, **values)
        ).rowcount
    if done != 1:
        return Outcome(msg.id, "lost", msg.to_address, msg.attempts, reply=reply)
    return Outcome(msg.id, status, msg.to_address, attempts, reply=reply, retry_at=retry_at)


def deliver(
    crm: CRM,
    message_id: int,
    worker_id: str,
    *,
    password: str | None = None,
    now: dt.datetime | None = None,
) -> Outcome:
    """Send one message claimed by ``worker_id`` and record the outcome."""
    from . import smtp

    conf = settings.load(crm)
    outbox = crm.metadata.tables[OUTBOX]
    with crm.connect(readonly=True) as conn:
        row = conn.execute(select(outbox).where(outbox.c.id == message_id)).first()
    if row is None or row.status != "sending" or row.claimed_by != worker_id:
        return Outcome(
            message_id, "lost", row.to_address if row else "", row.attempts if row else 0
        )
    msg = Message.from_row(row)
    sender = msg.from_address or conf.sender
    try:
        email = smtp.build(
            sender=sender,
            to=msg.to_address,
            subject=msg.subject,
            text=msg.body_text,
            html=msg.body_html,
            msgid=msg.rfc_message_id or smtp.message_id(sender),
        )
        if password is None and conf.smtp.password_env:
            password = conf.smtp.password()
        smtp.deliver(conf.smtp, email, password=password)
    except smtp.DeliveryError as exc:
        return _record_failure(crm, msg, worker_id, exc.reply, exc.temporary, now or utcnow())
    except CrmError as exc:  # the password's variable is not set: the deployment's to fix
        return _record_failure(crm, msg, worker_id, str(exc), True, now or utcnow())
    except (ValueError, TypeError, UnicodeError) as exc:  # a malformed address or header
        return _record_failure(
            crm, msg, worker_id, f"cannot build the message: {exc}", False, now or utcnow()
        )
    return _record_sent(crm, msg, worker_id, now or utcnow())


def run_once(
    crm: CRM,
    *,
    worker_id: str | None = None,
    limit: int = 20,
    now: dt.datetime | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    stop: threading.Event | None = None,
) -> list[Outcome]:
    """Claim the messages due (up to ``limit``) and deliver them; what happened to each."""
    conf = settings.load(crm)
    password = conf.smtp.password()  # a missing variable stops the worker before it claims
    worker_id = worker_id or new_worker_id()
    ids = claim(crm, worker_id, limit, now=now)
    outcomes: list[Outcome] = []
    for index, message_id in enumerate(ids):
        if stop is not None and stop.is_set():
            release(crm, ids[index:], worker_id)
            break
        outcome = deliver(crm, message_id, worker_id, password=password)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (the message in hand is finished first)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_worker(
    crm: CRM,
    *,
    once: bool = False,
    poll: float = 5.0,
    limit: int = 20,
    worker_id: str | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_error: Callable[[CrmError], None] | None = None,
    stop: threading.Event | None = None,
) -> list[Outcome]:
    """Deliver due messages until stopped (SIGTERM, Ctrl-C, ``stop``); what it did.

    ``once``: deliver what is due now (every batch of it), then return; a
    message retried meanwhile waits for a later run. Otherwise it looks for
    due messages every ``poll`` seconds, and a database that cannot be
    reached (:class:`~crmkit.DatabaseError`) is reported to ``on_error`` and
    tried again at the next poll instead of ending the worker.
    """
    from crmkit.core.errors import DatabaseError

    stop = stop or threading.Event()
    worker_id = worker_id or new_worker_id()
    done: list[Outcome] = []
    start = utcnow() if once else None  # --once: what is due now, not what a retry made due
    with _stop_on_signals(stop):
        try:
            while not stop.is_set():
                try:
                    batch = run_once(
                        crm,
                        worker_id=worker_id,
                        limit=limit,
                        now=start,
                        on_outcome=on_outcome,
                        stop=stop,
                    )
                except DatabaseError as exc:
                    if once:
                        raise
                    if on_error is not None:
                        on_error(exc)
                    stop.wait(poll)
                    continue
                done += batch
                if len(batch) >= limit:
                    continue  # more may be due
                if once:
                    break
                stop.wait(poll)
        except KeyboardInterrupt:  # outside the main thread's handler: stop quietly
            pass
    return done
