"""Recording what recipients do: events in group commits, reading time, the owner's notice.

**Events** (opens, clicks, document views) arrive many at a time and each
must be stored before its request is answered. :class:`EventWriter` queues
them and one task writes what has queued up in a single transaction (a
*group commit*): a request waits for the commit that holds its event, so
nothing answered is lost, and a burst of opens costs a few transactions
instead of one each.

**The owner's notice.** When a message is first opened by a person (an event
that counts: see :mod:`~crmkit_email_tracking.classify`), or opened again
after ``reopen_gap_hours``, the plugin calls the hook
:func:`~crmkit.core.hookspecs.crmkit_email_opened` in a session of the
deal's owner (or the sender). The built-in handler gives the owner a task to
call the client now and logs an ``email`` interaction with the outcome
``opened`` (``proposal_read`` when the hosted document was opened), which a
pipeline's outcome rules may use to move the deal. A conditional update of
``email_outbox.notified_at`` makes each notice happen once, however many
servers record the same open.

**Reading time.** :func:`record_beat` takes a page's heartbeat: the view
session's token, a sequence number (a replayed beat is not counted twice),
the page and the active seconds since the last beat, capped at twice the
heartbeat interval and at the time that really passed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attrs import frozen
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from crmkit.core.schema import utcnow

from . import settings
from .tables import EVENTS, OUTBOX, PAGE_TIME, VIEWS

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import CRM

log = logging.getLogger("crmkit.email_tracking")

#: The most events one group commit writes.
BATCH = 1000
#: Kinds of event that count as the recipient opening the message.
OPENING_KINDS = ("open", "page_view")


@frozen
class State:
    """What the writer needs to know of a message: when it was opened, told, read."""

    opened_at: dt.datetime | None
    notified_at: dt.datetime | None
    read_at: dt.datetime | None


def write_events(
    crm: CRM, events: Sequence[dict[str, Any]], known: dict[int, State] | None = None
) -> list[tuple[int, bool]]:
    """Store ``events`` in one transaction; return the notices to give: ``(message id, document)``.

    Events of messages that no longer exist are dropped (their tokens
    outlive them). The first counted open of a message sets ``opened_at``.
    ``known`` caches the state of messages seen before (the writer keeps it
    between batches), so that repeated opens of a message read nothing; a
    cached message deleted since makes the batch fail its foreign key, and it
    is written again with the cache emptied.
    """
    if known is None:
        known = {}
    try:
        return _write(crm, events, known)
    except IntegrityError:
        known.clear()
        return _write(crm, events, known)


def _write(
    crm: CRM, events: Sequence[dict[str, Any]], known: dict[int, State]
) -> list[tuple[int, bool]]:
    outbox = crm.metadata.tables[OUTBOX]
    table = crm.metadata.tables[EVENTS]
    unknown = {e["message_id"] for e in events} - known.keys()
    notices: dict[int, bool] = {}
    with crm.connect() as conn:
        if unknown:
            for row in conn.execute(
                select(
                    outbox.c.id, outbox.c.opened_at, outbox.c.notified_at, outbox.c.read_at
                ).where(outbox.c.id.in_(unknown))
            ):
                known[row.id] = State(row.opened_at, row.notified_at, row.read_at)
        rows = [e for e in events if e["message_id"] in known]
        if not rows:
            return []
        conn.execute(insert(table), rows)
        gap = dt.timedelta(hours=settings.load(crm).reopen_gap_hours)
        firsts: dict[int, dt.datetime] = {}
        for event in rows:
            if not (event["counted"] and event["kind"] in OPENING_KINDS):
                continue
            message_id, at = event["message_id"], event["at"]
            firsts[message_id] = min(at, firsts.get(message_id, at))
            message = known[message_id]
            if event["kind"] == "page_view" and message.read_at is None:
                notices[message_id] = True  # the first reading of the document: always told
            elif message.notified_at is None or at - message.notified_at >= gap:
                notices.setdefault(message_id, False)
        for message_id, at in firsts.items():
            state = known[message_id]
            if state.opened_at is None:
                conn.execute(
                    update(outbox)
                    .where(outbox.c.id == message_id, outbox.c.opened_at.is_(None))
                    .values(opened_at=at)
                )
                known[message_id] = State(at, state.notified_at, state.read_at)
    for message_id in notices:  # told (or not, by another server): read it again next time
        known.pop(message_id, None)
    return list(notices.items())


def notify(crm: CRM, message_id: int, *, document: bool = False) -> bool:
    """Tell the message's owner that the client opened it, or read its document.

    Runs the hook ``crmkit_email_opened`` in a session of the deal's owner
    (or, without a deal, the message's sender; else the deployment's
    admin), in the transaction that marks the message notified (and, for
    ``document``, read): an open is told once, and again after the re-open
    gap; the first reading of the document is told once. Returns whether
    this call notified (another process may have just done it).
    """
    outbox = crm.metadata.tables[OUTBOX]
    deals = crm.metadata.tables["deals"]
    gap = dt.timedelta(hours=settings.load(crm).reopen_gap_hours)
    with crm.connect(readonly=True) as conn:
        row = conn.execute(
            select(outbox, deals.c.owner_id.label("deal_owner_id"))
            .select_from(outbox.outerjoin(deals, deals.c.id == outbox.c.deal_id))
            .where(outbox.c.id == message_id)
        ).first()
    if row is None:
        return False
    owner = row.deal_owner_id or row.user_id
    now = utcnow()
    if document:
        claim = update(outbox).where(outbox.c.id == message_id, outbox.c.read_at.is_(None))
        claim = claim.values(read_at=now, notified_at=now)
    else:
        claim = update(outbox).where(
            outbox.c.id == message_id,
            or_(outbox.c.notified_at.is_(None), outbox.c.notified_at <= now - gap),
        )
        claim = claim.values(notified_at=now)
    with crm.session(as_user=owner) as s:
        if s.connection.execute(claim).rowcount != 1:
            return False
        message = dict(row._mapping)
        message.pop("deal_owner_id", None)
        first = (row.read_at if document else row.notified_at) is None
        crm.plugins.pm.hook.crmkit_email_opened(
            session=s, message=message, first=first, document=document
        )
    return True


class EventWriter:
    """Group commits of tracking events, for the asynchronous routes.

    :meth:`record` queues an event and returns when the transaction that
    stores it has committed. One task per event loop drains the queue, at
    most :data:`BATCH` events per transaction, in a worker thread so that the
    loop keeps answering meanwhile. A notice to the owner (a first open) is
    given in a task of its own, so that the batches after it do not wait; the
    requests whose event caused it are answered once it is given.
    """

    def __init__(self, crm: CRM) -> None:
        self.crm = crm
        self._queue: asyncio.Queue[tuple[dict[str, Any] | None, asyncio.Future[None]]] | None
        self._queue = None
        self._task: asyncio.Task[None] | None = None
        self._notices: set[asyncio.Task[None]] = set()
        self._known: dict[int, State] = {}

    async def record(self, event: dict[str, Any]) -> None:
        """Store ``event`` (columns of ``email_events``); return once it is committed."""
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._queue is not None
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, done))
        await done

    async def _run(self) -> None:
        from starlette.concurrency import run_in_threadpool

        assert self._queue is not None
        queue = self._queue
        stop: asyncio.Future[None] | None = None
        while stop is None:
            batch: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
            first = await queue.get()
            for event, done in [first, *_drain(queue, BATCH - 1)]:
                if event is None:  # close(): write what came before, then stop
                    stop = done
                else:
                    batch.append((event, done))
            if not batch:
                continue
            events = [event for event, _ in batch]
            try:
                to_notify = await run_in_threadpool(write_events, self.crm, events, self._known)
            except Exception as exc:  # every waiter learns it; the writer goes on
                log.exception("could not store %d tracking events", len(events))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            told = dict(to_notify)
            for event, done in batch:
                if event["message_id"] not in told and not done.done():
                    done.set_result(None)
            for message_id, document in told.items():
                waiting = [d for e, d in batch if e["message_id"] == message_id]
                task = asyncio.get_running_loop().create_task(
                    self._notify(message_id, document, waiting)
                )
                self._notices.add(task)
                task.add_done_callback(self._notices.discard)
        assert stop is not None
        if self._notices:
            await asyncio.gather(*self._notices, return_exceptions=True)
        stop.set_result(None)

    async def _notify(
        self, message_id: int, document: bool, waiting: list[asyncio.Future[None]]
    ) -> None:
        from starlette.concurrency import run_in_threadpool

        try:
            await run_in_threadpool(notify, self.crm, message_id, document=document)
        except Exception:  # the event is stored; the notice is what failed
            log.exception("could not notify the owner of message %d", message_id)
        finally:
            for done in waiting:
                if not done.done():
                    done.set_result(None)

    async def close(self) -> None:
        """Write what is queued and give the notices in progress, then stop the task."""
        if self._task is None or self._task.done() or self._queue is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((None, done))
        await done
        await self._task
        self._task = None


def _drain(queue: asyncio.Queue[Any], most: int) -> list[Any]:
    """Up to ``most`` items that are already in ``queue``, without waiting."""
    items = []
    while len(items) < most and not queue.empty():
        items.append(queue.get_nowait())
    return items


# -- reading sessions --------------------------------------------------------------------
def start_view(
    crm: CRM, message_id: int, *, classification: str, data: dict[str, Any]
) -> int | None:
    """Open a reading session of the document of ``message_id``; its id (None: no message)."""
    views = crm.metadata.tables[VIEWS]
    now = utcnow()
    minutes = settings.load(crm).view_minutes
    with crm.connect() as conn:
        outbox = crm.metadata.tables[OUTBOX]
        if conn.execute(select(outbox.c.id).where(outbox.c.id == message_id)).first() is None:
            return None
        return int(
            conn.execute(
                insert(views)
                .values(
                    message_id=message_id,
                    started_at=now,
                    expires_at=now + dt.timedelta(minutes=minutes),
                    last_seq=0,
                    classification=classification,
                    data=data,
                )
                .returning(views.c.id)
            ).scalar_one()
        )


def record_beat(crm: CRM, view_id: int, *, seq: int, page: int, seconds: float) -> bool:
    """Add a heartbeat's reading time to ``page`` of a view; whether it was counted.

    Not counted: a replay (``seq`` not above the last one taken), a view
    that expired or does not exist, a page the document does not have. The
    seconds are capped at twice the heartbeat interval and at the time since
    the previous beat (or the view's start) plus a second.
    """
    views = crm.metadata.tables[VIEWS]
    page_time = crm.metadata.tables[PAGE_TIME]
    documents = crm.metadata.tables["email_documents"]
    interval = settings.load(crm).heartbeat_seconds
    now = utcnow()
    with crm.connect() as conn:
        view = conn.execute(
            select(views, documents.c.pages)
            .select_from(views.outerjoin(documents, documents.c.message_id == views.c.message_id))
            .where(views.c.id == view_id)
        ).first()
        if view is None or view.expires_at <= now or seq <= view.last_seq:
            return False
        if page > (view.pages or 1):
            return False
        since = (now - (view.last_beat_at or view.started_at)).total_seconds()
        counted = max(0.0, min(float(seconds), 2 * interval, since + 1.0))
        taken = conn.execute(
            update(views)
            .where(views.c.id == view_id, views.c.last_seq < seq)
            .values(last_seq=seq, last_beat_at=now)
        )
        if taken.rowcount != 1:  # a concurrent beat with this number won
            return False
        added = conn.execute(
            update(page_time)
            .where(and_(page_time.c.view_id == view_id, page_time.c.page == page))
            .values(seconds=page_time.c.seconds + counted, beats=page_time.c.beats + 1)
        )
        if added.rowcount == 0:
            conn.execute(
                insert(page_time).values(
                    view_id=view_id,
                    page=page,
                    message_id=view.message_id,
                    seconds=counted,
                    beats=1,
                )
            )
    return True
