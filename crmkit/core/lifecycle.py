"""The lifecycle repositories: interactions, deals and their stage history, invoices, tasks.

Every move of a deal or of a client's lifecycle goes through
:func:`move_entity`, which enforces the pipeline's rules (forward only,
skipping, lost reasons), checks the entry gate (the stage's JSON Schema and
the ``crmkit_check_stage_entry`` hook), stores a :class:`StageChange` and
calls ``crmkit_stage_changed``. The stage history is therefore complete:
the stage of any deal at any past moment can be read from ``stage_changes``.

Every read and write goes through the access policies
(:mod:`crmkit.core.access`), as for client cards:

* a record the acting user may not read is :class:`NotFound`, with exactly
  the message a missing id gets, whatever is asked of it (no oracle);
* a readable record the user may not change is :class:`PermissionDenied`,
  naming the action and the record;
* lists, counts and ``iter`` are filtered by the database (the policies'
  SQL condition), never in Python; lists and single reads are audited;
* what a repository returns right after writing is read without a check
  (the user just wrote it), and so are the effects of an interaction
  (a move, a follow-up task), which are made on behalf of the user's
  allowed ``create`` of that interaction.
"""

from __future__ import annotations

import builtins
import datetime as dt
import decimal
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
from attrs import field, frozen
from sqlalchemy import and_, case, false, func, insert, or_, select, update

from .errors import Conflict, NotFound, Problem, ValidationError
from .model import (
    Client,
    Deal,
    DealStatus,
    Direction,
    FollowUp,
    Interaction,
    Invoice,
    InvoiceStatus,
    MoveTo,
    StageChange,
    Task,
    TaskStep,
    to_json,
)
from .pipeline import LOST, TERMINAL, WON, Pipeline
from .schema import seconds_between, utcnow
from .store import _client, _enum, _Repo
from .validation import choose, parse_date, parse_money, parse_when, require_text, schema_problems

if TYPE_CHECKING:  # pragma: no cover
    from .store import Session


@frozen
class Logged:
    """What logging an interaction did: the record, and the effects it had."""

    interaction: Interaction
    changes: list[StageChange] = field(factory=list)
    tasks: list[Task] = field(factory=list)
    #: proposed moves that were not made: refused by a gate or the pipeline's
    #: order, or with no deal to move (rules' and plugins' alike)
    refused: list[str] = field(factory=list)


# -- moving down a pipeline ------------------------------------------------------------
def gate_view(deal: Deal | None, client: Client) -> dict[str, Any]:
    """What an entry gate's JSON Schema sees: ``{"deal": ..., "client": ...}`` as JSON."""
    view: dict[str, Any] = {"client": to_json(client), "deal": None}
    if deal is not None:
        view["deal"] = to_json(deal)
        view["deal"]["amount"] = float(deal.amount)  # a number, so that numeric keywords apply
    return view


def move_entity(
    s: Session,
    *,
    pipeline: Pipeline,
    entity: str,
    entity_id: int,
    current: str | None,
    entered_at: dt.datetime | None,
    target: str,
    deal: Deal | None,
    client: Client,
    at: dt.datetime,
    cause: str,
    interaction_id: int | None = None,
    reason: str | None = None,
    note: str | None = None,
    reactivate: bool = False,
) -> StageChange:
    """Check and store one move; raises :class:`ValidationError` listing every unmet rule."""
    what = f"{entity} #{entity_id}"
    problems: list[Problem] = []
    if current is not None:
        problems += pipeline.move_problems(
            current, target, lost_reason=reason, reactivate=reactivate
        )
    else:
        pipeline.stage(target)  # a first stage must at least exist
    if entered_at is not None and at < entered_at:
        problems.append(Problem("at", f"{at.isoformat()} is before {what} entered {current!r}"))
    if not problems and target != LOST:
        stage = pipeline.stage(target)
        if stage.gate:
            problems += schema_problems(stage.gate, gate_view(deal, client))
        problems += s.crm.plugins.check_stage_entry(
            session=s, pipeline=pipeline, stage=stage, deal=deal, client=client
        )
    if problems:
        listed = "; ".join(p.reason if p.field in (None, "stage") else str(p) for p in problems)
        raise ValidationError(
            f"cannot move {what} to {target!r}: {listed}", field="stage", problems=problems
        )
    t = s.table("stage_changes")
    note = note or (reason if target == LOST else None)
    values = {
        "entity": entity,
        "entity_id": entity_id,
        "pipeline": pipeline.name,
        "from_stage": current,
        "to_stage": target,
        "at": at,
        "user_id": s.user.id,
        "cause": cause,
        "interaction_id": interaction_id,
        "note": note,
    }
    if deal is not None:  # what the funnel adds up (see close_stays)
        values.update(deal_amount=deal.amount, deal_opened_at=deal.opened_at)
    change_id = s.connection.execute(insert(t).values(values).returning(t.c.id)).scalar_one()
    close_stays(s, entity, [entity_id], lost_reason=reason if target == LOST else None)
    s.audit(
        "moved",
        entity,
        ids=[entity_id],
        detail={"pipeline": pipeline.name, "from": current, "to": target, "cause": cause},
        kind="change",
    )
    return StageChange(
        id=change_id,
        entity=entity,
        entity_id=entity_id,
        pipeline=pipeline.name,
        from_stage=current,
        to_stage=target,
        at=at,
        cause=cause,
        user_id=s.user.id,
        user=s.user.login,
        interaction_id=interaction_id,
        note=note,
    )


def close_stays(
    s: Session, entity: str, entity_ids: Sequence[int], *, lost_reason: str | None = None
) -> int:
    """Close the stays of these records that a later change ended; returns how many.

    A row of ``stage_changes`` is a stay in ``to_stage`` from ``at``; the
    record's next change (by ``at``, then id) sets its ``left_at``,
    ``next_stage`` and ``stay_seconds``. Whoever appends changes calls this
    with the records it moved (:func:`move_entity` does); one ``UPDATE``
    touches only the stays still open, with an index lookup each. A stay
    left for ``lost`` also gets ``lost_reason``.
    """
    if not entity_ids:
        return 0
    t = s.table("stage_changes")
    n = t.alias("n")
    later = (
        select(n.c.at)
        .where(
            n.c.entity == t.c.entity,
            n.c.entity_id == t.c.entity_id,
            or_(n.c.at > t.c.at, and_(n.c.at == t.c.at, n.c.id > t.c.id)),
        )
        .order_by(n.c.at, n.c.id)
        .limit(1)
    )
    left_at = later.scalar_subquery()
    next_stage = later.with_only_columns(n.c.to_stage).scalar_subquery()
    seconds = seconds_between(s.connection.dialect.name, t.c.at, left_at)
    result = s.connection.execute(
        update(t)
        .where(
            t.c.entity == entity,
            t.c.entity_id.in_(list(entity_ids)),
            t.c.left_at.is_(None),
            left_at.is_not(None),
        )
        .values(
            left_at=left_at,
            next_stage=next_stage,
            stay_seconds=seconds,
            lost_reason=case((next_stage == LOST, lost_reason), else_=None),
        )
    )
    return int(result.rowcount or 0)


def deals_open_at(s: Session, when: dt.datetime) -> Any:
    """SELECT of the deals open at ``when``, each with the stage it was in then (not filtered
    by the access policies: callers add their own filters).

    Columns ``id``, ``owner_id``, ``pipeline``, ``stage``, ``entered`` (when
    it entered that stage), ``amount`` and ``expected_close``. The stage is
    the stay that holds ``when`` (``at <= when < left_at``): one row per
    deal, read through the stays rather than by pairing changes.
    """
    deals, changes = s.table("deals"), s.table("stage_changes")
    stay = and_(
        changes.c.entity == "deal",
        changes.c.entity_id == deals.c.id,
        changes.c.at <= when,
        or_(changes.c.left_at.is_(None), changes.c.left_at > when),
    )
    return (
        select(
            deals.c.id,
            deals.c.owner_id,
            deals.c.pipeline,
            changes.c.to_stage.label("stage"),
            changes.c.at.label("entered"),
            deals.c.amount,
            deals.c.expected_close,
        )
        .select_from(deals.join(changes, stay))
        .where(
            deals.c.opened_at <= when,
            or_(deals.c.closed_at.is_(None), deals.c.closed_at > when),
            changes.c.to_stage.not_in(list(TERMINAL)),
        )
    )


def carry_amount(s: Session, deal_id: int, amount: decimal.Decimal) -> None:
    """A deal's new amount, on the stay it is in (``deal_amount``; closed stays keep theirs)."""
    t = s.table("stage_changes")
    s.connection.execute(
        update(t)
        .where(t.c.entity == "deal", t.c.entity_id == deal_id, t.c.left_at.is_(None))
        .values(deal_amount=amount)
    )


def _stored_client(s: Session, client_id: int) -> Client:
    """The stored client card, whatever the user may see: what a gate or an effect works on."""
    clients = s.clients
    query = clients._select().where(clients.t.c.id == client_id)
    return _client(clients._one(query, client_id, "client"))


def move_client(
    s: Session,
    client: Client,
    stage: str,
    *,
    at: Any,
    cause: str,
    interaction_id: int | None = None,
    reason: str | None = None,
    reactivate: bool = False,
) -> StageChange:
    """Move a client in the lifecycle *without* an access check.

    What :meth:`~crmkit.core.store.Clients.move` does once its check has
    passed: for the effects of an interaction, which are made on behalf of
    the user's allowed logging of it (a policy may let a user log
    interactions with a client without letting them move its card by hand).
    """
    flow = s.crm.lifecycle
    if flow is None:
        raise ValidationError("this deployment has no client lifecycle pipeline", field="stage")
    when = s.clients._when(at)
    entered = None
    if client.stage is not None:  # since the last move, or since the client was created
        changes = s.table("stage_changes")
        entered = (
            s.connection.execute(
                select(func.max(changes.c.at)).where(
                    changes.c.entity == "client", changes.c.entity_id == client.id
                )
            ).scalar()
            or client.created_at
        )
    change = move_entity(
        s,
        pipeline=flow,
        entity="client",
        entity_id=client.id,
        current=client.stage,
        entered_at=entered,
        target=stage,
        deal=None,
        client=client,
        at=when,
        cause=cause,
        interaction_id=interaction_id,
        reason=reason,
        reactivate=reactivate,
    )
    clients = s.table("clients")
    s.connection.execute(update(clients).where(clients.c.id == client.id).values(stage=stage))
    s.crm.plugins.stage_changed(session=s, change=change)
    return change


# -- access ------------------------------------------------------------------------------
R = TypeVar("R", Deal, Interaction, Invoice, Task)


class _Guarded(_Repo, Generic[R]):
    """A repository of records the access policies protect (the resource ``resource``)."""

    resource: str

    def _select(self) -> Any:
        return select(self.t)

    def _load(self, query: Any) -> builtins.list[R]:
        """The domain objects of ``query``'s rows."""
        raise NotImplementedError  # pragma: no cover

    def _mask(self, record: R, action: str = "read") -> R:
        """``record`` without the fields a policy hides from the user (none by default)."""
        return record

    def _missing(self, record_id: int) -> NotFound:
        """What a missing id is told, and a record the user may not read alike."""
        return NotFound(f"no {self.resource} with id {record_id}", field=self.resource)

    def _fetch(self, record_id: int) -> R:
        """The stored record, whatever the user may see: for the repository's own use."""
        found = self._load(self._select().where(self.t.c.id == record_id))
        if not found:
            raise self._missing(record_id)
        return found[0]

    def _check(self, action: str, record_id: int) -> R:
        """The stored record, when the user may read it and ``action`` it.

        A record the user may not read is :class:`NotFound`, exactly like a
        missing id; a readable one the user may not ``action`` is
        :class:`PermissionDenied` naming the action and the record (audited).
        """
        access = self.s.access
        if action != "read":  # no rule could allow it: say so (audited), whatever the id
            access.require_any(action, self.resource)
        query = self._select().where(self.t.c.id == record_id)
        found = self._load(self.s.access.filter(query, "read", self.resource))
        if not found:
            raise self._missing(record_id)
        if action != "read":
            view = access.view(self.resource, record_id)
            if view is None:  # pragma: no cover - removed since, in this transaction
                raise self._missing(record_id)
            access.require(action, self.resource, view)
        return found[0]

    def _get(self, record_id: int) -> R:
        """A record the user may read (audited), with what policies hide left out."""
        record = self._check("read", record_id)
        self.s.audit("read", self.resource, ids=[record.id])
        return self._mask(record)

    def _listed(self, query: Any) -> builtins.list[R]:
        """The records of an already filtered ``query``, masked; their ids are audited."""
        found = [self._mask(r) for r in self._load(query)]
        self.s.audit("read", self.resource, ids=[r.id for r in found], detail={"listed": True})
        return found

    def _count(self, query: Any) -> int:
        """How many rows an already filtered ``query`` has (its conditions, not its joins)."""
        counted = select(func.count()).select_from(self.t)
        if query.whereclause is not None:
            counted = counted.where(query.whereclause)
        return int(self.conn.execute(counted).scalar_one())

    def _iter(self, query: Any, action: str, batch_size: int) -> Iterator[R]:
        """The records of an already filtered ``query``, in id order, in batches (keyset)."""
        return self._keyset(
            query, lambda q: [self._mask(r, action) for r in self._load(q)], batch_size
        )


# -- stage history ---------------------------------------------------------------------
class History(_Repo):
    """The stored stage changes of deals and client lifecycles.

    The history of a record is readable only when the record is: of one the
    user may not read, it is :class:`NotFound`, as for a missing id.
    """

    table_name = "stage_changes"

    def of(self, entity: str, entity_id: int) -> builtins.list[StageChange]:
        """Every move of one deal or client, oldest first."""
        self._readable(entity, entity_id)
        self.s.audit("read", entity, ids=[entity_id], detail={"history": True})
        return self._of(entity, entity_id)

    def _of(self, entity: str, entity_id: int) -> builtins.list[StageChange]:
        """:meth:`of` without the access check (for the repositories' own use)."""
        users = self.s.table("users")
        rows = self.conn.execute(
            select(self.t, users.c.login.label("user"))
            .select_from(self.t.outerjoin(users, users.c.id == self.t.c.user_id))
            .where(self.t.c.entity == entity, self.t.c.entity_id == entity_id)
            .order_by(self.t.c.at, self.t.c.id)
        )
        return [StageChange(**r._mapping) for r in rows]

    def stage_at(self, entity: str, entity_id: int, when: dt.datetime) -> str | None:
        """The stage at ``when``, read from the history (None: not yet in the pipeline).

        A client's first lifecycle stage has no row: it holds from the client's
        creation until the first recorded move.
        """
        self._readable(entity, entity_id)
        row = self.conn.execute(
            select(self.t.c.to_stage)
            .where(self.t.c.entity == entity, self.t.c.entity_id == entity_id, self.t.c.at <= when)
            .order_by(self.t.c.at.desc(), self.t.c.id.desc())
            .limit(1)
        ).first()
        if row is not None:
            return str(row[0])
        lifecycle = self.s.crm.lifecycle
        if entity == "client" and lifecycle is not None:
            created = _stored_client(self.s, entity_id).created_at
            if created is not None and created <= when:
                return lifecycle.first.name
        return None

    def _readable(self, entity: str, entity_id: int) -> None:
        """:class:`NotFound` unless the user may read the record (a missing one alike)."""
        resource = self.s.access.policies.resource(entity)
        if resource.table is None:
            raise ValidationError(f"{entity} has no stage history", field="entity")
        table = self.s.table(resource.table)
        query = self.s.access.filter(
            select(table.c.id).where(table.c.id == entity_id), "read", entity
        )
        if self.conn.execute(query).first() is None:
            raise NotFound(f"no {entity} with id {entity_id}", field=entity)


# -- deals -----------------------------------------------------------------------------
class Deals(_Guarded[Deal]):
    """Deals: opened on a client, moved forward through a pipeline, won or lost.

    Policies: opening is ``create`` (on the deal as it would be stored),
    moving, winning, losing and changing it ``update``, giving it to another
    owner ``reassign`` (of the deal as it is and as it would be); reads,
    lists, counts and :meth:`iter` only see the deals the user may ``read``.
    """

    table_name = "deals"
    resource = "deal"

    def open(
        self,
        client_id: int,
        *,
        pipeline: str | None = None,
        amount: Any = 0,
        title: str | None = None,
        currency: str | None = None,
        owner: str | int | None = None,
        expected_close: Any = None,
        at: Any = None,
    ) -> Deal:
        """Open a deal at the first stage of ``pipeline`` (default: the first deal pipeline).

        The client must be one the user may read (:class:`NotFound` otherwise)
        and the policies must let the user create the deal, with its owner
        (default: the user), on that client.
        """
        crm = self.s.crm
        client = self.s.clients.get(client_id)
        name = pipeline or next((p.name for p in crm.pipelines.values() if p.entity == "deal"), "")
        problems: list[Problem] = []
        values: dict[str, Any] = {}
        for key, fn in (
            ("pipeline", lambda: crm.pipeline(name).name),
            ("amount", lambda: parse_money(amount)),
            ("title", lambda: require_text(title or f"{client.name}", field="title")),
            ("currency", lambda: _currency(currency or crm.config.currency)),
            ("owner_id", lambda: self.s.clients._owner(self.s.user.id if owner is None else owner)),
            ("expected_close", lambda: parse_date(expected_close, field="close_by")),
            ("opened_at", lambda: self._when(at)),
        ):
            try:
                values[key] = fn()
            except (ValidationError, NotFound) as exc:
                problems.append(Problem(exc.field, exc.message))
        if problems:
            raise ValidationError.from_problems(problems)
        flow = crm.pipeline(values["pipeline"])
        first = flow.first.name
        values.update(
            client_id=client.id,
            stage=first,
            status=DealStatus.OPEN.value,
            stage_entered_at=values["opened_at"],
            created_by=self.s.user.id,
        )
        self.s.access.require("create", "deal", self.s.access.view_of("deal", values))
        deal_id = self._insert(values)
        change = move_entity(
            self.s,
            pipeline=flow,
            entity="deal",
            entity_id=deal_id,
            current=None,
            entered_at=None,
            target=first,
            deal=self._fetch(deal_id),
            client=_stored_client(self.s, client.id),  # a gate sees the whole card
            at=values["opened_at"],
            cause="opened",
        )
        self.s.crm.plugins.stage_changed(session=self.s, change=change)
        return self._fetch(deal_id)

    def move(
        self,
        deal_id: int,
        stage: str,
        *,
        at: Any = None,
        cause: str = "manual",
        interaction_id: int | None = None,
        reason: str | None = None,
        note: str | None = None,
    ) -> StageChange:
        """Move a deal forward to ``stage`` (``won``/``lost`` close it): an ``update``."""
        deal = self._check("update", deal_id)
        return self._move(
            deal,
            stage,
            at=at,
            cause=cause,
            interaction_id=interaction_id,
            reason=reason,
            note=note,
        )

    def _move(
        self,
        deal: Deal,
        stage: str,
        *,
        at: Any = None,
        cause: str = "manual",
        interaction_id: int | None = None,
        reason: str | None = None,
        note: str | None = None,
    ) -> StageChange:
        """:meth:`move` without the access check (checked by the caller, or an effect)."""
        flow = self.s.crm.pipelines[deal.pipeline]
        when = self._when(at)
        change = move_entity(
            self.s,
            pipeline=flow,
            entity="deal",
            entity_id=deal.id,
            current=deal.stage,
            entered_at=deal.stage_entered_at,
            target=stage,
            deal=deal,
            client=_stored_client(self.s, deal.client_id),  # a gate sees the whole card
            at=when,
            cause=cause,
            interaction_id=interaction_id,
            reason=reason,
            note=note,
        )
        values: dict[str, Any] = {"stage": stage, "stage_entered_at": when}
        if stage in TERMINAL:
            values.update(
                status=stage, closed_at=when, lost_reason=reason if stage == LOST else None
            )
        self.conn.execute(update(self.t).where(self.t.c.id == deal.id).values(values))
        self.s.crm.plugins.stage_changed(session=self.s, change=change)
        return change

    def win(self, deal_id: int, *, at: Any = None, note: str | None = None) -> StageChange:
        """Close a deal as won: from the last stage, or any if the pipeline allows skipping."""
        return self.move(deal_id, WON, at=at, note=note)

    def lose(
        self, deal_id: int, reason: str, *, at: Any = None, note: str | None = None
    ) -> StageChange:
        """Close a deal as lost, with a reason from the pipeline's formal list."""
        return self.move(deal_id, LOST, at=at, reason=reason, note=note)

    def update(self, deal_id: int, **changes: Any) -> Deal:
        """Change ``title``, ``amount``, ``currency``, ``owner`` or ``expected_close``.

        An ``update``; a new owner is also a ``reassign``, of the deal as it is
        and as it would be (both the deal and its new owner are the user's to give).
        """
        deal = self._check("update", deal_id)
        allowed = {"title", "amount", "currency", "owner", "expected_close"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValidationError("cannot be changed this way", field=sorted(unknown)[0])
        values: dict[str, Any] = {}
        if "title" in changes:
            values["title"] = require_text(changes["title"], field="title")
        if "amount" in changes:
            values["amount"] = parse_money(changes["amount"])
        if "currency" in changes:
            values["currency"] = _currency(changes["currency"])
        if "owner" in changes:
            values["owner_id"] = self.s.clients._owner(changes["owner"])
        if "expected_close" in changes:
            values["expected_close"] = parse_date(changes["expected_close"], field="close_by")
        if values.get("owner_id", deal.owner_id) != deal.owner_id:
            access = self.s.access
            before = access.view("deal", deal.id)
            if before is None:  # pragma: no cover - removed since, in this transaction
                raise self._missing(deal.id)
            access.require("reassign", "deal", before)
            access.require("reassign", "deal", access.view_of("deal", {**before, **values}))
        if values:
            self.conn.execute(update(self.t).where(self.t.c.id == deal.id).values(values))
            if "amount" in values:
                carry_amount(self.s, deal.id, values["amount"])
            self.s.record("deal", deal.id, "updated", _jsonable(values))
        return self._fetch(deal.id)

    def get(self, deal_id: int) -> Deal:
        """The deal with this id, if the user may read it; raises :class:`NotFound`."""
        return self._get(deal_id)

    def list(
        self,
        *,
        pipeline: str | None = None,
        stage: str | None = None,
        status: str | None = None,
        owner: str | int | None = None,
        client_id: int | None = None,
        stalled: bool | None = None,
        now: dt.datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> builtins.list[Deal]:
        """The deals the user may read, newest first.

        ``stalled`` keeps those beyond their stage's allotted days. The
        database filters what the policies allow; the ids listed are audited.
        """
        q = self._filtered(
            pipeline=pipeline,
            stage=stage,
            status=status,
            owner=owner,
            client_id=client_id,
            stalled=stalled,
            now=now,
        )
        return self._listed(q.order_by(self.t.c.id.desc()).limit(limit).offset(offset))

    def count(self, **filters: Any) -> int:
        """How many deals :meth:`list` would find without a limit (the same filters)."""
        return self._count(self._filtered(**filters))

    def iter(self, batch_size: int = 1000, *, action: str = "read") -> Iterator[Deal]:
        """Every deal the user may ``action`` (read, export), in id order, in batches.

        One query per batch (keyset paging), bounded memory; the caller (an
        export, say) records what it did with them.
        """
        return self._iter(self._filtered(action=action), action, batch_size)

    def _filtered(
        self,
        *,
        action: str = "read",
        pipeline: str | None = None,
        stage: str | None = None,
        status: str | None = None,
        owner: str | int | None = None,
        client_id: int | None = None,
        stalled: bool | None = None,
        now: dt.datetime | None = None,
    ) -> Any:
        q = self._select()
        if pipeline is not None:
            q = q.where(self.t.c.pipeline == self.s.crm.pipeline(pipeline).name)
        if stage is not None:
            q = q.where(self.t.c.stage == stage)
        if status is not None:
            q = q.where(self.t.c.status == _enum(DealStatus, status, "status").value)
        if owner is not None:
            q = q.where(self.t.c.owner_id == self.s.users.get(owner, field="owner").id)
        if client_id is not None:
            q = q.where(self.t.c.client_id == client_id)
        if stalled is not None:
            cond = self.stalled_condition(now or utcnow())
            q = q.where(cond if stalled else ~cond)
        return self.s.access.filter(q, action, self.resource)

    def stalled_condition(self, now: dt.datetime) -> Any:
        """SQL: the deal is open and longer in its stage than the stage's allotted days."""
        terms = [
            and_(
                self.t.c.pipeline == flow.name,
                self.t.c.stage == stage.name,
                self.t.c.stage_entered_at < now - dt.timedelta(days=stage.days),
            )
            for flow in self.s.crm.pipelines.values()
            if flow.entity == "deal"
            for stage in flow.stages
            if stage.days
        ]
        if not terms:
            return false()
        return and_(self.t.c.status == DealStatus.OPEN.value, or_(*terms))

    def is_stalled(self, deal: Deal, now: dt.datetime | None = None) -> bool:
        """Is ``deal`` open and beyond its stage's allotted days?"""
        if deal.status != DealStatus.OPEN or deal.stage_entered_at is None:
            return False
        stage = self.s.crm.pipelines[deal.pipeline].stage(deal.stage)
        if not stage.days:
            return False
        return (now or utcnow()) - deal.stage_entered_at > dt.timedelta(days=stage.days)

    def history(self, deal_id: int) -> builtins.list[StageChange]:
        """Every stage change of the deal, oldest first (a deal the user may read)."""
        return self.s.history.of("deal", deal_id)

    def stage_at(self, deal_id: int, when: Any) -> str | None:
        """The deal's stage at ``when``, from its history alone (a deal the user may read)."""
        return self.s.history.stage_at("deal", deal_id, self._when(when))

    def _select(self) -> Any:
        users = self.s.table("users")
        clients = self.s.table("clients")
        return select(
            self.t, users.c.login.label("owner"), clients.c.name.label("client")
        ).select_from(
            self.t.outerjoin(users, users.c.id == self.t.c.owner_id).join(
                clients, clients.c.id == self.t.c.client_id
            )
        )

    def _load(self, query: Any) -> builtins.list[Deal]:
        return [_deal(r) for r in self.conn.execute(query)]


# -- interactions ----------------------------------------------------------------------
class Interactions(_Guarded[Interaction]):
    """Every communication with a client, with a formal topic and outcome.

    Policies: logging is ``create`` (on the interaction as it would be
    stored; the client, and the deal if given, must be readable); reads,
    lists, counts and :meth:`iter` only see the interactions the user may
    ``read``, without the fields a rule hides (``note``: None, and named in
    ``hidden``). The effects of logging (moves, follow-up tasks) are made on
    behalf of the user's allowed ``create``, with no further check.
    """

    table_name = "interactions"
    resource = "interaction"

    def log(
        self,
        client_id: int,
        kind: str,
        *,
        topic: str,
        outcome: str,
        direction: str | None = None,
        at: Any = None,
        duration: int | None = None,
        deal_id: int | None = None,
        respondents: Sequence[int] = (),
        note: str | None = None,
    ) -> Logged:
        """Record an interaction and apply its effects (outcome rules, plugins) at once."""
        crm = self.s.crm
        client = self.s.clients.get(client_id)
        problems: list[Problem] = []
        values: dict[str, Any] = {"client_id": client.id, "user_id": self.s.user.id}

        def check(key: str, fn: Any) -> None:
            try:
                values[key] = fn()
            except (ValidationError, NotFound) as exc:
                problems.append(Problem(exc.field, exc.message))

        check("kind", lambda: crm.interaction_kind(kind).name)
        spec = crm.interaction_kinds.get(kind)
        if spec is not None:
            check("topic", lambda: choose(topic, spec.topics, field="topic", what=f"{kind} topic"))
            check(
                "outcome",
                lambda: choose(outcome, spec.outcomes, field="outcome", what=f"{kind} outcome"),
            )
            check("direction", lambda: _direction(direction, required=spec.direction_required))
        check("occurred_at", lambda: self._when(at))
        check("duration_min", lambda: _duration(duration))
        check("note", lambda: (note or "").strip() or None)
        if deal_id is not None:
            try:
                deal = self.s.deals._check("read", deal_id)
                if deal.client_id != client.id:
                    problems.append(
                        Problem(
                            "deal",
                            f"deal #{deal.id} belongs to client #{deal.client_id}, "
                            f"not to client #{client.id}",
                        )
                    )
                values["deal_id"] = deal.id
            except NotFound as exc:
                problems.append(Problem(exc.field, exc.message))
        contact_ids = list(dict.fromkeys(int(r) for r in respondents))
        if contact_ids:
            contacts = self.s.table("contacts")
            found = set(
                self.conn.execute(
                    select(contacts.c.id).where(
                        contacts.c.id.in_(contact_ids), contacts.c.client_id == client.id
                    )
                ).scalars()
            )
            for missing in [c for c in contact_ids if c not in found]:
                problems.append(
                    Problem(
                        "respondent", f"contact #{missing} is not a contact of client #{client.id}"
                    )
                )
        if problems:
            raise ValidationError.from_problems(problems)
        self.s.access.require("create", "interaction", self.s.access.view_of("interaction", values))
        values["created_at"] = utcnow()
        interaction_id = self._insert(values)
        self.s.audit(
            "logged",
            "interaction",
            ids=[interaction_id],
            detail={k: values.get(k) for k in ("client_id", "deal_id", "kind", "topic", "outcome")},
            kind="change",
        )
        if contact_ids:
            self.conn.execute(
                insert(self.s.table("interaction_respondents")),
                [{"interaction_id": interaction_id, "contact_id": c} for c in contact_ids],
            )
        interaction = self._fetch(interaction_id)
        return self._apply_effects(interaction)

    def _apply_effects(self, interaction: Interaction) -> Logged:
        """Apply the outcome rules and the plugins' answers, in this transaction.

        A rule's task goes with its move: when the move is made, the task is
        created; when a gate refuses it, a task to complete what the stage
        needs (one step per unmet requirement) is created instead, so the
        manager gets the proposal template only once the card is complete.

        The effects are made without access checks: they follow from the
        pipeline's rules (or a plugin) on an interaction the user was allowed
        to log, so they are done on behalf of that allowed action, even when
        the user could not move the deal or set the task by hand (a follow-up
        for a colleague, say). The pipeline's own rules (order, gates) still apply.
        """
        crm = self.s.crm
        effects: list[tuple[str, Any, FollowUp | None]] = []
        deal = self.s.deals._fetch(interaction.deal_id) if interaction.deal_id else None
        flows = [(crm.pipelines[deal.pipeline], False)] if deal is not None else []
        if crm.lifecycle is not None:
            flows.append((crm.lifecycle, True))
        for flow, client in flows:
            for rule in flow.matching_rules(
                interaction.kind, interaction.topic, interaction.outcome
            ):
                task = _follow_up(rule.task) if rule.task else None
                if rule.move_to:
                    move = MoveTo(
                        rule.move_to, deal_id=None if client else interaction.deal_id, client=client
                    )
                    effects.append(("rule", move, task))
                elif task is not None:
                    effects.append(("rule", task, None))
        effects += [
            ("plugin", e, None)
            for e in crm.plugins.interaction_logged(session=self.s, interaction=interaction)
        ]
        logged = Logged(interaction=interaction)
        for source, effect, paired in effects:
            if isinstance(effect, MoveTo):
                change, problems = self._move(interaction, effect, source, logged.refused)
                if change is not None:
                    logged.changes.append(change)
                    if paired is not None:
                        logged.tasks.append(self._task(interaction, paired))
                elif problems and paired is not None:
                    todo = FollowUp(
                        title=f"Complete what {effect.stage!r} needs, then: {paired.title}",
                        due_in_hours=paired.due_in_hours,
                        steps=tuple(problems),
                    )
                    logged.tasks.append(self._task(interaction, todo))
            elif isinstance(effect, FollowUp):
                logged.tasks.append(self._task(interaction, effect))
            else:
                raise TypeError(
                    f"crmkit_interaction_logged returned {effect!r}: expected MoveTo or FollowUp"
                )
        return logged

    def _task(self, interaction: Interaction, follow_up: FollowUp) -> Task:
        """A follow-up task: unchecked, an effect of the allowed interaction (see above)."""
        return self.s.tasks._add(
            follow_up.title,
            due=interaction.occurred_at + dt.timedelta(hours=follow_up.due_in_hours),
            assignee=follow_up.assignee if follow_up.assignee is not None else self.s.user.id,
            client_id=interaction.client_id,
            deal_id=interaction.deal_id,
            steps=follow_up.steps,
            at=interaction.occurred_at,
            checked=False,
        )

    def _move(
        self, interaction: Interaction, effect: MoveTo, source: str, refused: list[str]
    ) -> tuple[StageChange | None, list[str]]:
        """Make one proposed move: the change, or the problems that refused it.

        Unchecked, an effect of the allowed interaction (see :meth:`_apply_effects`);
        a plugin's move of a deal of another client is refused like a missing deal.
        """
        s = self.s
        if effect.client:
            flow = s.crm.lifecycle
            if flow is None:
                return None, []
            card = _stored_client(s, interaction.client_id)
            current = card.stage
            label = f"client #{interaction.client_id}"
        else:
            deal_id = effect.deal_id or interaction.deal_id
            if deal_id is None:
                refused.append(
                    f"no deal to move to {effect.stage!r}: log the interaction with a deal"
                )
                return None, []
            try:
                deal = s.deals._fetch(deal_id)
                if deal.client_id != interaction.client_id:  # not a deal this logging is about
                    raise s.deals._missing(deal_id)
            except NotFound as exc:
                refused.append(f"deal #{deal_id} stays: {exc.message}")
                return None, []
            flow = s.crm.pipelines[deal.pipeline]
            current = deal.stage
            label = f"deal #{deal.id}"
        # a rule whose stage was already reached or passed (or closed) does not apply
        if (
            source == "rule"
            and current is not None
            and (current in TERMINAL or flow.stage(effect.stage).order <= flow.stage(current).order)
        ):
            return None, []
        try:
            with s.connection.begin_nested():
                if effect.client:
                    return move_client(
                        s,
                        card,
                        effect.stage,
                        at=interaction.occurred_at,
                        cause="interaction",
                        interaction_id=interaction.id,
                        reason=effect.reason,
                    ), []
                return s.deals._move(
                    deal,
                    effect.stage,
                    at=interaction.occurred_at,
                    cause="interaction",
                    interaction_id=interaction.id,
                    reason=effect.reason,
                ), []
        except ValidationError as exc:
            refused.append(f"{label} stays: {exc}")
            return None, [str(p) for p in exc.problems]

    def get(self, interaction_id: int) -> Interaction:
        """The interaction with this id, if the user may read it; raises :class:`NotFound`."""
        return self._get(interaction_id)

    def list(
        self,
        *,
        client_id: int | None = None,
        deal_id: int | None = None,
        user: str | int | None = None,
        kind: str | None = None,
        since: Any = None,
        until: Any = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> builtins.list[Interaction]:
        """The interactions the user may read, newest first (the ids listed are audited)."""
        q = self._filtered(
            client_id=client_id, deal_id=deal_id, user=user, kind=kind, since=since, until=until
        )
        q = q.order_by(self.t.c.occurred_at.desc(), self.t.c.id.desc()).limit(limit).offset(offset)
        return self._listed(q)

    def count(self, **filters: Any) -> int:
        """How many interactions :meth:`list` would find without a limit (the same filters)."""
        return self._count(self._filtered(**filters))

    def iter(self, batch_size: int = 1000, *, action: str = "read") -> Iterator[Interaction]:
        """Every interaction the user may ``action``, in id order, with its respondents.

        Fetched in batches (keyset paging): two queries per batch, never one per row.
        """
        return self._iter(self._filtered(action=action), action, batch_size)

    def _filtered(
        self,
        *,
        action: str = "read",
        client_id: int | None = None,
        deal_id: int | None = None,
        user: str | int | None = None,
        kind: str | None = None,
        since: Any = None,
        until: Any = None,
    ) -> Any:
        q = self._select()
        if client_id is not None:
            q = q.where(self.t.c.client_id == client_id)
        if deal_id is not None:
            q = q.where(self.t.c.deal_id == deal_id)
        if user is not None:
            q = q.where(self.t.c.user_id == self.s.users.get(user, field="user").id)
        if kind is not None:
            q = q.where(self.t.c.kind == kind)
        tz = self.s.crm.tz
        if since is not None:
            q = q.where(self.t.c.occurred_at >= parse_when(since, tz, field="since"))
        if until is not None:
            q = q.where(
                self.t.c.occurred_at <= parse_when(until, tz, field="until", end_of_day=True)
            )
        return self.s.access.filter(q, action, self.resource)

    def _mask(self, record: Interaction, action: str = "read") -> Interaction:
        hidden = self.s.access.hidden(action, self.resource)
        if not hidden:
            return record
        known = attrs.fields_dict(Interaction)
        blank: dict[str, Any] = {f: None for f in hidden if f in known and f != "hidden"}
        return attrs.evolve(record, **blank, hidden=tuple(sorted(hidden)))

    def _select(self) -> Any:
        users = self.s.table("users")
        return select(self.t, users.c.login.label("user")).select_from(
            self.t.outerjoin(users, users.c.id == self.t.c.user_id)
        )

    def _load(self, query: Any) -> builtins.list[Interaction]:
        rows = self.conn.execute(query).all()
        if not rows:
            return []
        links = self.s.table("interaction_respondents")
        respondents: dict[int, builtins.list[int]] = {}
        for iid, cid in self.conn.execute(
            select(links.c.interaction_id, links.c.contact_id)
            .where(links.c.interaction_id.in_([r.id for r in rows]))
            .order_by(links.c.contact_id)
        ):
            respondents.setdefault(iid, []).append(cid)
        out = []
        for row in rows:
            data = dict(row._mapping)
            data["direction"] = Direction(data["direction"]) if data["direction"] else None
            out.append(Interaction(respondents=respondents.get(row.id, []), **data))
        return out


# -- invoices --------------------------------------------------------------------------
class Invoices(_Guarded[Invoice]):
    """Invoices of deals: issued, then paid or cancelled; every change is an event.

    Policies: issuing is ``create`` (on the invoice as it would be stored;
    the deal must be readable), paying and cancelling ``update``; reads,
    :meth:`find`, lists and counts only see the invoices the user may ``read``.
    """

    table_name = "invoices"
    resource = "invoice"

    def issue(
        self,
        deal_id: int,
        amount: Any,
        *,
        number: str | None = None,
        currency: str | None = None,
        at: Any = None,
    ) -> Invoice:
        """Issue an invoice for a deal that is not lost."""
        deal = self.s.deals._check("read", deal_id)
        if deal.status == DealStatus.LOST:
            raise Conflict(f"deal #{deal.id} is lost; no invoice can be issued", field="deal")
        when = self._when(at)
        values = {
            "deal_id": deal.id,
            "amount": parse_money(amount),
            "currency": _currency(currency or deal.currency),
            "status": InvoiceStatus.ISSUED.value,
            "issued_at": when,
            "created_by": self.s.user.id,
        }
        self.s.access.require("create", "invoice", self.s.access.view_of("invoice", values))
        if number is not None:
            number = require_text(number, field="number", max_length=50)
            existing = self._find(number)
            if existing is not None:
                if self._find(number, action="read") is None:  # reveal nothing of it
                    raise Conflict(
                        f"another invoice, which you may not see, already has the number "
                        f"{number!r}",
                        field="number",
                    )
                raise Conflict(f"invoice {number!r} already exists", field="number")
        values["number"] = number if number is not None else self._next_number(when)
        invoice_id = self._insert(values)
        invoice = self._fetch(invoice_id)
        self.s.record("invoice", invoice.id, "issued", _jsonable(values), at=when)
        self.s.crm.plugins.invoice_status_changed(session=self.s, invoice=invoice, old_status=None)
        return invoice

    def pay(self, invoice_id: int, *, at: Any = None) -> Invoice:
        """Mark an issued invoice paid (an ``update``)."""
        return self._set_status(invoice_id, InvoiceStatus.PAID, at, "paid_at")

    def cancel(self, invoice_id: int, *, at: Any = None) -> Invoice:
        """Cancel an issued invoice (an ``update``)."""
        return self._set_status(invoice_id, InvoiceStatus.CANCELLED, at, "cancelled_at")

    def _set_status(self, invoice_id: int, status: InvoiceStatus, at: Any, column: str) -> Invoice:
        invoice = self._check("update", invoice_id)
        if invoice.status != InvoiceStatus.ISSUED:
            raise Conflict(
                f"invoice {invoice.number} is {invoice.status.value}; only an issued invoice "
                f"can become {status.value}",
                field="status",
            )
        when = self._when(at)
        if when < invoice.issued_at:
            raise ValidationError(
                f"is before the invoice was issued ({invoice.issued_at})", field="at"
            )
        self.conn.execute(
            update(self.t)
            .where(self.t.c.id == invoice.id)
            .values(status=status.value, **{column: when})
        )
        self.s.record(
            "invoice",
            invoice.id,
            status.value,
            {"from": invoice.status.value, "at": when.isoformat()},
        )
        updated = self._fetch(invoice.id)
        self.s.crm.plugins.invoice_status_changed(
            session=self.s, invoice=updated, old_status=invoice.status.value
        )
        return updated

    def find(self, number: str) -> Invoice | None:
        """The invoice with this number, if the user may read it; else None."""
        found = self._find(number, action="read")
        if found is not None:
            self.s.audit("read", self.resource, ids=[found.id])
        return found

    def _find(self, number: str, *, action: str | None = None) -> Invoice | None:
        """The invoice with this number; only among those ``action`` allows (None: any)."""
        query = self._select().where(self.t.c.number == number)
        if action is not None:
            query = self.s.access.filter(query, action, self.resource)
        found = self._load(query.limit(1))
        return found[0] if found else None

    def get(self, invoice_id: int) -> Invoice:
        """The invoice with this id, if the user may read it; raises :class:`NotFound`."""
        return self._get(invoice_id)

    def list(
        self,
        *,
        status: str | None = None,
        deal_id: int | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> builtins.list[Invoice]:
        """The invoices the user may read, newest first (the ids listed are audited)."""
        q = self._filtered(status=status, deal_id=deal_id)
        q = q.order_by(self.t.c.issued_at.desc(), self.t.c.id.desc()).limit(limit).offset(offset)
        return self._listed(q)

    def count(self, **filters: Any) -> int:
        """How many invoices :meth:`list` would find without a limit (the same filters)."""
        return self._count(self._filtered(**filters))

    def _filtered(
        self, *, action: str = "read", status: str | None = None, deal_id: int | None = None
    ) -> Any:
        q = self._select()
        if status is not None:
            q = q.where(self.t.c.status == _enum(InvoiceStatus, status, "status").value)
        if deal_id is not None:
            q = q.where(self.t.c.deal_id == deal_id)
        return self.s.access.filter(q, action, self.resource)

    def _load(self, query: Any) -> builtins.list[Invoice]:
        return [_invoice(r) for r in self.conn.execute(query)]

    def _next_number(self, when: dt.datetime) -> str:
        """The next free number of the year: over every invoice, whoever may see it."""
        prefix = f"{when.astimezone(self.s.crm.tz).year}-"
        count = self.conn.execute(
            select(func.count()).where(self.t.c.number.like(f"{prefix}%"))
        ).scalar_one()
        number = int(count) + 1
        while self._find(f"{prefix}{number:05d}") is not None:
            number += 1
        return f"{prefix}{number:05d}"


# -- tasks -----------------------------------------------------------------------------
class Tasks(_Guarded[Task]):
    """Tasks with ordered steps, an assignee and a deadline.

    Policies: adding is ``create`` (on the task as it would be stored: its
    owner is the assignee; its client and deal must be readable), marking
    steps and closing ``update``; reads, lists and counts only see the
    tasks the user may ``read``.
    """

    table_name = "tasks"
    resource = "task"

    def add(
        self,
        title: str,
        *,
        due: Any,
        assignee: str | int | None = None,
        client_id: int | None = None,
        deal_id: int | None = None,
        steps: Sequence[str] = (),
        at: Any = None,
    ) -> Task:
        """Create a task (assigned to the acting user unless ``assignee`` is given).

        ``at`` is when it was set (default: now), for tasks recorded after the fact.
        """
        return self._add(
            title,
            due=due,
            assignee=assignee,
            client_id=client_id,
            deal_id=deal_id,
            steps=steps,
            at=at,
            checked=True,
        )

    def _add(
        self,
        title: str,
        *,
        due: Any,
        assignee: str | int | None,
        client_id: int | None,
        deal_id: int | None,
        steps: Sequence[str],
        at: Any,
        checked: bool,
    ) -> Task:
        """:meth:`add`; unless ``checked``, without access checks (an interaction's effect)."""
        clients, deals = self.s.clients, self.s.deals
        client_of: Callable[[int], Client] = (
            clients.get if checked else (lambda i: _stored_client(self.s, i))
        )
        deal_of: Callable[[int], Deal] = (
            (lambda i: deals._check("read", i)) if checked else deals._fetch
        )
        problems: list[Problem] = []
        values: dict[str, Any] = {"created_by": self.s.user.id}
        deal: Deal | None = None

        def the_deal() -> int | None:
            nonlocal deal
            if deal_id is None:
                return None
            deal = deal_of(deal_id)
            return deal.id

        for key, fn in (
            ("title", lambda: require_text(title, field="title")),
            ("created_at", lambda: self._when(at)),
            ("due_at", lambda: parse_when(due, self.s.crm.tz, field="due", end_of_day=True)),
            (
                "assignee_id",
                lambda: self.s.clients._owner(
                    self.s.user.id if assignee is None else assignee, field="assignee"
                ),
            ),
            ("client_id", lambda: None if client_id is None else client_of(client_id).id),
            ("deal_id", the_deal),
            (
                "steps",
                lambda: [
                    {"text": require_text(t, field=f"steps.{i + 1}"), "done_at": None}
                    for i, t in enumerate(steps)
                ],
            ),
        ):
            try:
                values[key] = fn()
            except (ValidationError, NotFound) as exc:
                problems.append(Problem(exc.field, exc.message))
        if problems:
            raise ValidationError.from_problems(problems)
        if deal is not None and values["client_id"] is None:
            values["client_id"] = deal.client_id
        if checked:
            self.s.access.require("create", "task", self.s.access.view_of("task", values))
        task_id = self._insert(values)
        self.s.record("task", task_id, "created", _jsonable(values), at=values["created_at"])
        return self._fetch(task_id)

    def step(self, task_id: int, number: int, *, done: bool = True, at: Any = None) -> Task:
        """Mark step ``number`` (from 1) done, or not done again (an ``update``)."""
        task = self._check("update", task_id)
        if not 1 <= number <= len(task.steps):
            raise ValidationError(
                f"task #{task.id} has {len(task.steps)} steps; there is no step {number}",
                field="step",
            )
        when = self._when(at)
        steps = [to_json(s) for s in task.steps]
        steps[number - 1]["done_at"] = when.isoformat() if done else None
        self.conn.execute(update(self.t).where(self.t.c.id == task.id).values(steps=steps))
        self.s.record(
            "task", task.id, "step_done" if done else "step_undone", {"step": number}, at=when
        )
        return self._fetch(task.id)

    def done(self, task_id: int, *, at: Any = None, force: bool = False) -> Task:
        """Close a task (an ``update``); it is recorded as late when done after its deadline.

        All steps must be done first, unless ``force``.
        """
        task = self._check("update", task_id)
        if task.done_at is not None:
            raise Conflict(f"task #{task.id} is already done", field="task")
        open_steps = [str(i + 1) for i, s in enumerate(task.steps) if s.done_at is None]
        if open_steps and not force:
            raise ValidationError(
                f"task #{task.id}: "
                + (
                    f"steps {', '.join(open_steps)} are"
                    if len(open_steps) > 1
                    else f"step {open_steps[0]} is"
                )
                + " not done yet (mark them done, or force)",
                field="steps",
            )
        when = self._when(at)
        late = when > task.due_at
        self.conn.execute(
            update(self.t).where(self.t.c.id == task.id).values(done_at=when, done_late=late)
        )
        self.s.record("task", task.id, "done", {"late": late}, at=when)
        return self._fetch(task.id)

    def get(self, task_id: int) -> Task:
        """The task with this id, if the user may read it; raises :class:`NotFound`."""
        return self._get(task_id)

    def list(
        self,
        *,
        assignee: str | int | None = None,
        overdue: bool | None = None,
        done: bool | None = None,
        client_id: int | None = None,
        deal_id: int | None = None,
        now: dt.datetime | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> builtins.list[Task]:
        """The tasks the user may read, by deadline (the ids listed are audited).

        ``overdue``: open past the deadline, or done late.
        """
        q = self._filtered(
            assignee=assignee,
            overdue=overdue,
            done=done,
            client_id=client_id,
            deal_id=deal_id,
            now=now,
        )
        return self._listed(q.order_by(self.t.c.due_at, self.t.c.id).limit(limit).offset(offset))

    def count(self, **filters: Any) -> int:
        """How many tasks :meth:`list` would find without a limit (the same filters)."""
        return self._count(self._filtered(**filters))

    def _filtered(
        self,
        *,
        action: str = "read",
        assignee: str | int | None = None,
        overdue: bool | None = None,
        done: bool | None = None,
        client_id: int | None = None,
        deal_id: int | None = None,
        now: dt.datetime | None = None,
    ) -> Any:
        q = self._select()
        if assignee is not None:
            q = q.where(self.t.c.assignee_id == self.s.users.get(assignee, field="assignee").id)
        if done is not None:
            q = q.where(self.t.c.done_at.is_not(None) if done else self.t.c.done_at.is_(None))
        if client_id is not None:
            q = q.where(self.t.c.client_id == client_id)
        if deal_id is not None:
            q = q.where(self.t.c.deal_id == deal_id)
        if overdue is not None:
            cond = or_(
                and_(self.t.c.done_at.is_(None), self.t.c.due_at < (now or utcnow())),
                self.t.c.done_late.is_(True),
            )
            q = q.where(cond if overdue else ~cond)
        return self.s.access.filter(q, action, self.resource)

    def _select(self) -> Any:
        users = self.s.table("users")
        return select(self.t, users.c.login.label("assignee")).select_from(
            self.t.outerjoin(users, users.c.id == self.t.c.assignee_id)
        )

    def _load(self, query: Any) -> builtins.list[Task]:
        return [_task(r) for r in self.conn.execute(query)]


# -- helpers ---------------------------------------------------------------------------
def _currency(value: str) -> str:
    code = str(value).strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise ValidationError(f"{value!r} is not a 3-letter currency code", field="currency")
    return code


def _direction(value: str | None, *, required: bool) -> str | None:
    if value in (None, ""):
        if required:
            raise ValidationError(
                "is required for this kind (inbound or outbound)", field="direction"
            )
        return None
    return str(_enum(Direction, value, "direction").value)


def _duration(value: Any) -> int | None:
    if value is None:
        return None
    try:
        minutes = int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{value!r} is not a number of minutes", field="duration") from None
    if not 0 <= minutes <= 24 * 60:
        raise ValidationError("must be between 0 and 1440 minutes", field="duration")
    return minutes


def _follow_up(task: dict[str, Any]) -> FollowUp:
    return FollowUp(
        title=task["title"],
        due_in_hours=task.get("due_in_hours", 24),
        steps=tuple(task.get("steps", ())),
    )


def _with_money(row: Any) -> dict[str, Any]:
    """A deal's or invoice's row as fields: exact cents (SQLite stores a float)."""
    data = dict(row._mapping)
    data.pop("created_by", None)
    data["amount"] = decimal.Decimal(str(data["amount"])).quantize(decimal.Decimal("0.01"))
    return data


def _deal(row: Any) -> Deal:
    data = _with_money(row)
    return Deal(**{**data, "status": DealStatus(data["status"])})


def _invoice(row: Any) -> Invoice:
    data = _with_money(row)
    return Invoice(**{**data, "status": InvoiceStatus(data["status"])})


def _task(row: Any) -> Task:
    data = dict(row._mapping)
    data["steps"] = [
        TaskStep(
            text=s["text"],
            done_at=dt.datetime.fromisoformat(s["done_at"]) if s.get("done_at") else None,
        )
        for s in data["steps"] or []
    ]
    return Task(**data)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, decimal.Decimal):
            value = str(value)
        out[key] = value
    return out


__all__ = [
    "Deals",
    "History",
    "Interactions",
    "Invoices",
    "Logged",
    "Tasks",
    "gate_view",
    "move_entity",
]
