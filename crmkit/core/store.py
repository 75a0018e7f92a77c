"""The unit of work: a :class:`Session` bound to one acting user.

A session wraps one database transaction: everything done through it commits
together when the ``with`` block ends, or rolls back when it raises. Its
repositories (``s.clients``, ``s.contacts``, ``s.users``, ``s.teams``) are
thin layers of validation over SQLAlchemy Core statements; they return the
frozen attrs objects of :mod:`crmkit.core.model`.
"""

from __future__ import annotations

import builtins
import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import Connection, Row, Table, and_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .errors import (
    Conflict,
    DuplicateError,
    NotFound,
    PermissionDenied,
    Problem,
    ValidationError,
)
from .model import Client, ClientKind, Contact, Role, StageChange, Team, User
from .schema import utcnow
from .tokens import Tokens
from .validation import normalize_email, normalize_phone, require_text

if TYPE_CHECKING:
    from .access import Access
    from .app import CRM
    from .reports import ReportResult  # pragma: no cover


@attrs.frozen
class AuditEntry:
    """One entry of the audit log, before it is chained and written."""

    at: dt.datetime
    kind: str
    action: str
    resource: str
    allowed: bool
    record_ids: builtins.list[int] | None
    detail: dict[str, Any]


_LOGIN = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,99}$")
_MISSING: Any = object()


class Session:
    """One transaction, acting as ``user``. Made by :meth:`crmkit.CRM.session`."""

    def __init__(self, crm: CRM, connection: Connection, user: User) -> None:
        self.crm = crm
        self.connection = connection
        self.user = user
        self.tables = crm.metadata.tables
        self.users = Users(self)
        self.teams = Teams(self)
        self.clients = Clients(self)
        self.contacts = Contacts(self)
        from .lifecycle import Deals, History, Interactions, Invoices, Tasks

        self.deals = Deals(self)
        self.interactions = Interactions(self)
        self.invoices = Invoices(self)
        self.tasks = Tasks(self)
        self.history = History(self)
        from .costs import ChannelCosts

        self.channel_costs = ChannelCosts(self)
        from .plans import Plans

        self.plans = Plans(self)
        self.tokens = Tokens(self)
        #: audit entries of this session, written when it ends (see :meth:`audit`)
        self.audit_buffer: builtins.list[AuditEntry] = []
        #: client cards opened in this session, counted toward today's read quota when it ends
        self.pending_reads: set[int] = set()
        #: work to do once the session's transaction has ended (committed or rolled back),
        #: each called with the CRM: telling heads that a read quota was reached, say
        self.after_end: builtins.list[Callable[[CRM], None]] = []

    @cached_property
    def access(self) -> Access:
        """The access policies as they apply to the acting user (an :class:`~.access.Access`)."""
        return self.crm.access.for_user(self)

    def audit(
        self,
        action: str,
        resource: str,
        *,
        ids: Iterable[int] | None = None,
        allowed: bool = True,
        detail: dict[str, Any] | None = None,
        kind: str = "access",
    ) -> None:
        """Add an entry to the tamper-evident audit log (written when the session ends).

        ``kind="access"`` entries are decisions (who read, exported or was
        refused which records) and are kept even when the session rolls back;
        ``kind="change"`` entries describe changes and are dropped with them.
        """
        access = self.__dict__.get("access")
        if access is not None and access.behalf is not None:  # an effect, not the user's own act
            detail = {**(detail or {}), "on_behalf": access.behalf}
        self.audit_buffer.append(
            AuditEntry(
                at=utcnow(),
                kind=kind,
                action=action,
                resource=resource,
                allowed=allowed,
                record_ids=None if ids is None else builtins.list(ids),
                detail=detail or {},
            )
        )

    def table(self, name: str) -> Table:
        """A table by name, the core's or a plugin's."""
        return self.tables[name]

    def report(self, name: str, **given: Any) -> ReportResult:
        """Run the report ``name`` with filters (``period="2026-Q3"``) and its own options.

        Raises :class:`NotFound` for an unknown report, user or team, and
        :class:`ValidationError` for a filter it does not take, a bad period,
        an unknown segment or pipeline, or a bad option. The access policies
        decide who may run it (``read`` on the resource ``report``), and a
        report counts only the records its reader may read.
        """
        report = self.crm.report(name)
        self.access.require("read", "report", {"name": report.name}, what=f"report {name!r}")
        result = report.run(self, report.query(self, **given))
        self.audit("read", "report", detail={"report": report.name})
        return attrs.evolve(result, report=report.name)

    def record(
        self,
        entity: str,
        entity_id: int,
        action: str,
        data: dict[str, Any],
        *,
        at: dt.datetime | None = None,
        ids: Iterable[int] | None = None,
    ) -> None:
        """Store an event: who did what to which object, when (default: now), the details.

        The change also goes to the audit log (a ``kind="change"`` entry);
        ``ids`` are the records it names there (default: ``[entity_id]``), so
        that one event of a batch (an import) names every record of it.
        """
        self.connection.execute(
            insert(self.tables["events"]).values(
                at=at or utcnow(),
                user_id=self.user.id,
                entity=entity,
                entity_id=entity_id,
                action=action,
                data=data,
            )
        )
        self.audit(
            action, entity, ids=[entity_id] if ids is None else ids, detail=data, kind="change"
        )

    def events(self, entity: str, entity_id: int) -> list[dict[str, Any]]:
        """The stored events of one object the user may read, oldest first.

        Events of a record the access policies hide are :class:`NotFound`;
        fields hidden from the user are left out of each event's data. Events
        of users and teams are for admins and for the user themselves.
        """
        resource = self.crm.access.resources.get(entity)
        hidden: frozenset[str] = frozenset()
        if resource is not None and resource.table is not None:
            table = self.tables[resource.table]
            query = self.access.filter(
                select(table.c.id).where(table.c.id == entity_id), "read", entity
            )
            if self.connection.execute(query).first() is None:
                raise NotFound(f"no {entity} with id {entity_id}", field=entity)
            hidden = self.access.hidden("read", entity)
        elif not (self.user.role is Role.ADMIN or (entity == "user" and entity_id == self.user.id)):
            raise PermissionDenied(
                f"user {self.user.login!r} ({self.user.role.value}) may not read the events of "
                f"{entity} #{entity_id}",
                field="access",
            )
        t = self.tables["events"]
        users = self.tables["users"]
        rows = self.connection.execute(
            select(t.c.at, t.c.action, t.c.data, users.c.login.label("user"))
            .select_from(t.outerjoin(users, users.c.id == t.c.user_id))
            .where(t.c.entity == entity, t.c.entity_id == entity_id)
            .order_by(t.c.id)
        )
        found = [dict(r._mapping) for r in rows]
        for event in found:
            if hidden and isinstance(event["data"], dict):
                event["data"] = {k: v for k, v in event["data"].items() if k not in hidden}
        return found

    def require_role(self, *roles: Role) -> None:
        """Raise :class:`PermissionDenied` unless the acting user has one of ``roles``."""
        if self.user.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise PermissionDenied(
                f"user {self.user.login!r} ({self.user.role.value}) may not do this; "
                f"it needs the role {allowed}"
            )


class _Repo:
    table_name: str

    def __init__(self, session: Session) -> None:
        self.s = session
        self.t = session.tables[self.table_name]

    @property
    def conn(self) -> Connection:
        return self.s.connection

    def _one(self, query: Any, ident: object, what: str) -> Row[Any]:
        """The single row of ``query``; raises :class:`NotFound` naming ``what``."""
        row = self.conn.execute(query).first()
        if row is None:
            raise NotFound(f"no {what} with id {ident}", field=what)
        return row

    def _when(self, value: Any, *, field: str = "at") -> Any:
        """A timestamp given by a caller (None: now), in the deployment's time zone."""
        from .validation import parse_when

        return utcnow() if value is None else parse_when(value, self.s.crm.tz, field=field)

    def _keyset(
        self, query: Any, fetch: Callable[[Any], builtins.list[Any]], batch_size: int
    ) -> Iterator[Any]:
        """The objects of ``query`` in id order, one query per ``batch_size`` (keyset paging)."""
        last = 0
        while True:
            batch = fetch(query.where(self.t.c.id > last).order_by(self.t.c.id).limit(batch_size))
            if not batch:
                return
            yield from batch
            last = batch[-1].id

    def _insert(self, values: dict[str, Any]) -> int:
        return int(
            self.conn.execute(insert(self.t).values(values).returning(self.t.c.id)).scalar_one()
        )


class Teams(_Repo):
    """Teams of users; a team may have a parent (a department holds groups)."""

    table_name = "teams"

    def add(self, name: str, *, parent: str | int | None = None) -> Team:
        """Create a team. Only an admin may."""
        self.s.require_role(Role.ADMIN)
        name = require_text(name, field="name", max_length=200)
        parent_id = self.get(parent, field="parent").id if parent is not None else None
        if self.find(name) is not None:
            raise DuplicateError(f"a team named {name!r} already exists", field="name")
        team_id = self._insert({"name": name, "parent_id": parent_id, "created_at": utcnow()})
        self.s.record("team", team_id, "created", {"name": name, "parent_id": parent_id})
        return self.get(team_id)

    def find(self, ref: str | int) -> Team | None:
        """The team with this id or name, or None."""
        col = self.t.c.id if isinstance(ref, int) else self.t.c.name
        row = self.conn.execute(select(self.t).where(col == ref)).first()
        return Team(**row._mapping) if row else None

    def get(self, ref: str | int, *, field: str = "team") -> Team:
        """The team with this id or name; raises :class:`NotFound`."""
        team = self.find(ref)
        if team is None:
            raise NotFound(f"no team {ref!r}", field=field)
        return team

    def list(self) -> list[Team]:
        """All teams by name."""
        return [
            Team(**r._mapping) for r in self.conn.execute(select(self.t).order_by(self.t.c.name))
        ]

    def subtree_ids(self, ref: str | int) -> builtins.list[int]:
        """The ids of a team and of every team nested in it."""
        root = self.get(ref).id
        rows = self.conn.execute(select(self.t.c.id, self.t.c.parent_id)).all()
        children: dict[int | None, list[int]] = {}
        for team_id, parent_id in rows:
            children.setdefault(parent_id, []).append(team_id)
        found, todo = [], [root]
        while todo:
            current = todo.pop()
            found.append(current)
            todo.extend(children.get(current, []))
        return sorted(found)


class Users(_Repo):
    """The employees who work in the CRM."""

    table_name = "users"

    def add(
        self,
        login: str,
        *,
        role: Role | str,
        name: str | None = None,
        team: str | int | None = None,
        active: bool = True,
    ) -> User:
        """Create a user. Only an admin may."""
        self.s.require_role(Role.ADMIN)
        values = self._validate(
            {"login": login, "role": role, "name": name or login, "team": team, "active": active}
        )
        if self.find(values["login"]) is not None:
            raise DuplicateError(
                f"a user with login {values['login']!r} already exists", field="login"
            )
        values["created_at"] = utcnow()
        user_id = self._insert(values)
        self.s.record("user", user_id, "created", _jsonable(values))
        return self.get(user_id)

    def update(self, ref: str | int, **changes: Any) -> User:
        """Change a user's ``name``, ``role``, ``team`` or ``active`` flag. Only an admin may.

        ``active=False`` is :meth:`deactivate` without reassignment (refused
        while the user owns clients, open deals or open tasks); ``active=True``
        is :meth:`activate`.
        """
        self.s.require_role(Role.ADMIN)
        user = self.get(ref)
        unknown = set(changes) - {"name", "role", "team", "active"}
        if unknown:
            raise ValidationError("cannot be changed", field=sorted(unknown)[0])
        values = self._validate(changes)
        active = values.pop("active", user.active)
        if values:
            self.conn.execute(update(self.t).where(self.t.c.id == user.id).values(values))
            self.s.record("user", user.id, "updated", _jsonable(values))
        if active != user.active:
            if active:
                self.activate(user.id)
            else:
                self.deactivate(user.id)
        return self.get(user.id)

    def _validate(self, values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        problems: list[Problem] = []
        for key, value in values.items():
            try:
                if key == "login":
                    login = str(value).strip()
                    if not _LOGIN.match(login):
                        raise ValidationError(
                            "must be 1-100 lowercase letters, digits or . _ @ -, "
                            "starting with a letter or digit",
                            field="login",
                        )
                    out["login"] = login
                elif key == "role":
                    out["role"] = _enum(Role, value, "role").value
                elif key == "name":
                    out["name"] = require_text(value, field="name", max_length=200)
                elif key == "team":
                    out["team_id"] = None if value is None else self.s.teams.get(value).id
                elif key == "active":
                    out["active"] = bool(value)
            except (ValidationError, NotFound) as exc:
                problems.append(Problem(exc.field, exc.message))
        if problems:
            raise ValidationError.from_problems(problems)
        return out

    def find(self, ref: str | int) -> User | None:
        """The user with this id or login, or None."""
        col = self.t.c.id if isinstance(ref, int) else self.t.c.login
        row = self.conn.execute(select(self.t).where(col == ref)).first()
        return _user(row) if row else None

    def get(self, ref: str | int, *, field: str = "user") -> User:
        """The user with this id or login; raises :class:`NotFound`."""
        user = self.find(ref)
        if user is None:
            raise NotFound(f"no user {ref!r}", field=field)
        return user

    def list(
        self,
        *,
        team: str | int | None = None,
        role: Role | str | None = None,
        active: bool | None = None,
    ) -> list[User]:
        """Users by login; ``team`` includes the teams nested in it."""
        q = select(self.t).order_by(self.t.c.login)
        if team is not None:
            q = q.where(self.t.c.team_id.in_(self.s.teams.subtree_ids(team)))
        if role is not None:
            q = q.where(self.t.c.role == _enum(Role, role, "role").value)
        if active is not None:
            q = q.where(self.t.c.active == active)
        return [_user(r) for r in self.conn.execute(q)]

    def deactivate(
        self,
        ref: str | int,
        *,
        reassign_to: str | int | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """End a user's access and pass their work on, in one step. Only an admin may.

        The user is marked inactive, so no new session opens as them, and
        every token of theirs is revoked, so whatever holds one (a script,
        the HTTP server) is refused at its next use. Their clients, their
        *open* deals and their open tasks pass to ``reassign_to``; closed
        (won or lost) deals and done tasks keep their owner, so past sales
        stay attributed to whoever made them. Each reassigned record gets a
        ``reassigned`` event (``{"from", "to", "cause": "deactivation"}``)
        and the user a ``deactivated`` one.

        It all happens at once or not at all: inside a savepoint, so a
        failure midway leaves nothing half-done even when the caller catches
        it and goes on with the session. The records move with one statement
        per table, whatever their number.

        Refused with :class:`ValidationError`: the deployment's admin
        (``[crmkit] admin``) and the last active admin; a ``reassign_to`` that
        is unknown, inactive or the user themselves; and no ``reassign_to``
        while the user owns clients, open deals or open tasks. Deactivating
        a deactivated user is a :class:`~crmkit.core.errors.Conflict`.

        Returns what it did: ``{"user": LOGIN, "reassigned_to": LOGIN or None,
        "tokens_revoked": n, "clients": n, "deals": n, "tasks": n}``.
        """
        self.s.require_role(Role.ADMIN)
        user = self.get(ref, field="login")
        note = _optional_text(note, field="note")
        # lock the admins' rows: two admins deactivating each other at once cannot both win
        admins = self.conn.execute(
            select(self.t.c.id)
            .where(self.t.c.role == Role.ADMIN.value, self.t.c.active.is_(True))
            .with_for_update()
        ).scalars()
        admin_ids = set(admins)
        if not user.active:
            raise Conflict(f"user {user.login!r} is already deactivated", field="login")
        if user.login == self.s.crm.config.admin:
            raise ValidationError(
                f"{user.login!r} is the deployment's admin ([crmkit] admin in crmkit.toml); "
                "name another admin there first",
                field="login",
            )
        if user.role == Role.ADMIN and not admin_ids - {user.id}:
            raise ValidationError(
                f"{user.login!r} is the last active admin; make another user an admin first",
                field="login",
            )
        target = None
        if reassign_to is not None:
            target = self.find(reassign_to)
            if target is None:
                raise ValidationError(f"no user {reassign_to!r}", field="reassign_to")
            if target.id == user.id:
                raise ValidationError(
                    f"cannot pass {user.login!r}'s work to {user.login!r}", field="reassign_to"
                )
            if not target.active:
                raise ValidationError(f"user {target.login!r} is deactivated", field="reassign_to")
        tables = self.s.tables
        clients, deals, tasks = tables["clients"], tables["deals"], tables["tasks"]
        owned = {
            "clients": clients.c.owner_id == user.id,
            "deals": and_(deals.c.owner_id == user.id, deals.c.status == "open"),
            "tasks": and_(tasks.c.assignee_id == user.id, tasks.c.done_at.is_(None)),
        }
        if target is None:
            held = {
                name: int(
                    self.conn.execute(
                        select(func.count()).select_from(tables[name]).where(where)
                    ).scalar_one()
                )
                for name, where in owned.items()
            }
            if any(held.values()):
                raise ValidationError(
                    f"{user.login!r} has {_count(held['clients'], 'client')}, "
                    f"{_count(held['deals'], 'open deal')} and "
                    f"{_count(held['tasks'], 'open task')}: name the active user who takes "
                    "them over (reassign_to, --reassign-to LOGIN)",
                    field="reassign_to",
                )
        counts: dict[str, Any] = {
            "user": user.login,
            "reassigned_to": None if target is None else target.login,
        }
        now = utcnow()
        with self.conn.begin_nested():
            self.conn.execute(update(self.t).where(self.t.c.id == user.id).values(active=False))
            counts["tokens_revoked"] = self.s.tokens.revoke_all(user.id)
            moves: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
                ("client", "clients", "owner_id", {"updated_at": now}),
                ("deal", "deals", "owner_id", {}),
                ("task", "tasks", "assignee_id", {}),
            )
            for entity, name, column, extra in moves:
                ids: builtins.list[int] = []
                if target is not None:
                    t = tables[name]
                    ids = builtins.list(
                        self.conn.execute(
                            update(t)
                            .where(owned[name])
                            .values({column: target.id, **extra})
                            .returning(t.c.id)
                        ).scalars()
                    )
                    self._reassigned(entity, ids, user, target, note, now)
                counts[name] = len(ids)
            self.s.record(
                "user",
                user.id,
                "deactivated",
                {**counts, **({"note": note} if note else {})},
                at=now,
            )
        return counts

    def activate(self, ref: str | int, *, note: str | None = None) -> User:
        """Let a deactivated user work again. Only an admin may.

        Their tokens stay revoked (make new ones) and the work passed on at
        deactivation stays with its new owners. Activating an active user is
        a :class:`~crmkit.core.errors.Conflict`.
        """
        self.s.require_role(Role.ADMIN)
        user = self.get(ref, field="login")
        note = _optional_text(note, field="note")
        if user.active:
            raise Conflict(f"user {user.login!r} is already active", field="login")
        self.conn.execute(update(self.t).where(self.t.c.id == user.id).values(active=True))
        self.s.record("user", user.id, "activated", {"note": note} if note else {})
        return self.get(user.id)

    def _reassigned(
        self,
        entity: str,
        ids: builtins.list[int],
        user: User,
        target: User,
        note: str | None,
        now: dt.datetime,
    ) -> None:
        """The ``reassigned`` events of ``ids``: one executemany per batch of 10,000.

        The audit log gets one ``change`` entry naming them all.
        """
        data: dict[str, Any] = {"from": user.login, "to": target.login, "cause": "deactivation"}
        if note:
            data["note"] = note
        if ids:
            self.s.audit("reassigned", entity, ids=ids, detail=data, kind="change")
        events = self.s.tables["events"]
        for start in range(0, len(ids), 10_000):
            self.conn.execute(
                insert(events),
                [
                    {
                        "at": now,
                        "user_id": self.s.user.id,
                        "entity": entity,
                        "entity_id": entity_id,
                        "action": "reassigned",
                        "data": data,
                    }
                    for entity_id in ids[start : start + 10_000]
                ],
            )


class Clients(_Repo):
    """Client cards."""

    table_name = "clients"
    fields = (
        "name",
        "kind",
        "email",
        "phone",
        "requisites",
        "segment",
        "params",
        "owner",
        "source",
        "external_id",
        "created_at",
    )

    def create(
        self,
        name: str,
        *,
        kind: ClientKind | str = ClientKind.COMPANY,
        email: str | None = None,
        phone: str | None = None,
        requisites: dict[str, Any] | None = None,
        segment: str | None = None,
        params: dict[str, Any] | None = None,
        owner: str | int | None = None,
        source: str | None = None,
        external_id: str | None = None,
        created_at: Any = None,
    ) -> Client:
        """Create a client card; the owner defaults to the acting user.

        Raises :class:`ValidationError` listing every bad field, or
        :class:`DuplicateError` naming the client that already has this
        email (case-insensitive) or external id.
        """
        given = {
            "name": name,
            "kind": kind,
            "email": email,
            "phone": phone,
            "requisites": requisites or {},
            "segment": segment,
            "params": params or {},
            "owner": self.s.user.id if owner is None else owner,
            "source": source,
            "external_id": external_id,
        }
        values = self._validate(given)
        now = utcnow()
        values["created_at"] = created_at if created_at is not None else now
        values["updated_at"] = now
        lifecycle = self.s.crm.lifecycle
        # a new client is at the lifecycle's first stage from its creation: that entry is
        # implied by created_at (no stage-change row), so bulk imports write one row per client
        values["stage"] = lifecycle.first.name if lifecycle is not None else None
        self.s.access.require("create", "client", self.s.access.view_of("client", values))
        self._check_duplicates(values, exclude_id=None)
        self._check_plugins(values, changes=_fields(values))
        try:
            with self.conn.begin_nested():  # a savepoint: PostgreSQL aborts the whole
                client_id = self._insert(values)  # transaction on a failed statement
        except IntegrityError:  # a concurrent session inserted the same email or id
            self._check_duplicates(values, exclude_id=None)
            raise
        self.s.record("client", client_id, "created", _jsonable(values), at=values["created_at"])
        client = self._fetch(client_id)
        self.s.crm.plugins.client_saved(session=self.s, client=client, created=True)
        return client

    def move(
        self,
        client_id: int,
        stage: str,
        *,
        at: Any = None,
        cause: str = "manual",
        interaction_id: int | None = None,
        reason: str | None = None,
        reactivate: bool = False,
    ) -> StageChange:
        """Move a client forward in the lifecycle (``lost`` needs a reason): an ``update``.

        ``reactivate`` brings a lost client back (used when a lost client buys again).
        """
        from .lifecycle import move_client

        if self.s.crm.lifecycle is None:
            raise ValidationError("this deployment has no client lifecycle pipeline", field="stage")
        client = self.get(client_id)
        self.require("update", client.id)
        return move_client(
            self.s,
            self._fetch(client.id),  # the whole card: a gate may look at hidden fields
            stage,
            at=at,
            cause=cause,
            interaction_id=interaction_id,
            reason=reason,
            reactivate=reactivate,
        )

    def update(self, client_id: int, **changes: Any) -> Client:
        """Change fields of a card; ``None`` clears an optional field.

        Setting ``segment`` re-validates ``params`` against the new segment.
        """
        current = self.get(client_id)
        stored = self._fetch(client_id)  # with the fields a policy hides from the reader
        unknown = set(changes) - (set(self.fields) - {"created_at"})
        if unknown:
            raise ValidationError("is not a field that can be updated", field=sorted(unknown)[0])
        classify = "segment" not in changes  # a segment given, even None, is the caller's
        if "segment" in changes and "params" not in changes:
            changes["params"] = stored.params  # re-check them against the new segment
        if "params" in changes and "segment" not in changes:
            changes["segment"] = stored.segment
        values = self._validate(changes, classify=classify)
        old = _row_values(stored)
        diff = {k: v for k, v in values.items() if old.get(k) != v}
        if not diff:
            return current
        merged = {**old, **values}
        before = self.require("update", client_id)
        if (
            "owner_id" in diff
        ):  # a new owner: both the card and its new owner are the user's to give
            self.s.access.require("reassign", "client", before)
            after = self.s.access.view_of("client", {**merged, "id": client_id})
            self.s.access.require("reassign", "client", after)
        self._check_duplicates(merged, exclude_id=client_id)
        self._check_plugins(merged, changes=_fields(diff))
        diff["updated_at"] = utcnow()
        self.conn.execute(update(self.t).where(self.t.c.id == client_id).values(diff))
        client = self._fetch(client_id)
        self.s.record(
            "client",
            client_id,
            "updated",
            {
                k: {"old": _jsonable({k: old.get(k)})[k], "new": _jsonable({k: v})[k]}
                for k, v in diff.items()
                if k != "updated_at"
            },
        )
        self.s.crm.plugins.client_saved(session=self.s, client=client, created=False)
        return client

    def get(self, client_id: int) -> Client:
        """Open the client card with this id: :class:`NotFound` unless the user may read it.

        A card the acting user may not read is reported exactly like one that
        does not exist. Opening counts toward the user's daily read quota,
        when a policy sets one, and is recorded in the audit log.
        """
        query = self.s.access.filter(
            self._select().where(self.t.c.id == client_id), "read", "client"
        )
        client = _client(self._one(query, client_id, "client"))
        self.s.access.count_read(client.id)
        self.s.audit("read", "client", ids=[client.id])
        return self._mask(client)

    def _fetch(self, client_id: int) -> Client:
        """The stored card, whatever the acting user may see (for the repository's own use)."""
        return _client(
            self._one(self._select().where(self.t.c.id == client_id), client_id, "client")
        )

    def require(self, action: str, client_id: int) -> dict[str, Any]:
        """Raise :class:`PermissionDenied` unless the user may ``action`` the card.

        Returns the card as policies see it. Plugins call it before they
        change their own data about a client (``s.clients.require("update", id)``).
        """
        view = self.s.access.view("client", client_id)
        if view is None:
            raise NotFound(f"no client with id {client_id}", field="client")
        self.s.access.require(action, "client", view)
        return view

    def _mask(self, client: Client, action: str = "read") -> Client:
        hidden = self.s.access.hidden(action, "client")
        if not hidden:
            return client
        blank: dict[str, Any] = {f: ({} if f in ("requisites", "params") else None) for f in hidden}
        return attrs.evolve(client, **blank, hidden=tuple(sorted(hidden)))

    def find(self, *, email: str | None = None, external_id: str | None = None) -> Client | None:
        """The client the user may read with this email (case-insensitive) or external id."""
        found = self._find(email=email, external_id=external_id, action="read")
        if found is not None:
            self.s.access.count_read(found.id)  # finding a card opens it
            self.s.audit("read", "client", ids=[found.id])
            return self._mask(found)
        return None

    def _find(
        self,
        *,
        email: str | None = None,
        external_id: str | None = None,
        action: str | None = None,
    ) -> Client | None:
        """The client with this email or external id; only among those ``action`` allows."""
        conds = []
        if email:
            conds.append(func.lower(self.t.c.email) == email.strip().lower())
        if external_id:
            conds.append(self.t.c.external_id == external_id.strip())
        if not conds:
            return None
        for cond in conds:  # external id first when both are given: it is the stronger key
            query = self._select().where(cond)
            if action is not None:
                query = self.s.access.filter(query, action, "client")
            row = self.conn.execute(query).first()
            if row is not None:
                return _client(row)
        return None

    def list(
        self,
        *,
        owner: str | int | None = None,
        segment: str | None = None,
        source: str | None = None,
        search: str | None = None,
        stage: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[Client]:
        """The clients the user may read, newest first, by owner, segment, source, stage, name.

        Only cards the access policies let the acting user read are listed
        (the database filters them); the ids listed are recorded in the audit log.
        """
        found = [
            self._mask(_client(r))
            for r in self.conn.execute(
                self._filtered(
                    owner=owner, segment=segment, source=source, search=search, stage=stage
                )
                .order_by(self.t.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
        ]
        self.s.audit("read", "client", ids=[c.id for c in found], detail={"listed": True})
        return found

    def count(self, **filters: Any) -> int:
        """How many clients :meth:`list` would find without a limit."""
        q = self._filtered(**filters).with_only_columns(func.count()).order_by(None)
        return int(self.conn.execute(q).scalar_one())

    def iter(
        self, batch_size: int = 1000, *, action: str = "read", **filters: Any
    ) -> Iterator[Client]:
        """Every client the user may ``action`` (read, export), in id order, in batches."""
        return self._keyset(
            self._filtered(action=action, **filters),
            lambda q: [self._mask(_client(r), action) for r in self.conn.execute(q)],
            batch_size,
        )

    def rescore(self, *, segment: str | None = None, batch_size: int = 1000) -> dict[str, int]:
        """Classify and score every card again, with the segments' settings in force now.

        Run it after changing a segment's settings (weights, thresholds) in
        ``crmkit.toml``: stored potentials are otherwise refreshed only when a
        card is saved. A card without a segment gets the one its parameters
        fit when they are valid for it. Each changed card records an event.
        Returns ``{"checked": n, "rescored": n, "classified": n}``.
        """
        crm = self.s.crm
        if segment is not None:
            crm.segment(segment)
        counts = dict.fromkeys(("checked", "rescored", "classified"), 0)
        changed: builtins.list[tuple[Client, dict[str, Any]]] = []
        for card in self.iter(batch_size=batch_size, segment=segment):
            if not card.params:
                continue
            counts["checked"] += 1
            name = card.segment
            if name is None:
                name = crm.classify(card.params)
                if name is None or crm.segment(name).validate(card.params):
                    continue
            seg = crm.segments.get(name)
            if seg is None:  # the segment's plugin is gone: leave the card as it is
                continue
            potential = seg.potential(card.params)
            values = {
                "segment": name,
                "potential_score": None if potential is None else potential.score,
                "potential_category": None if potential is None else potential.category,
            }
            if any(getattr(card, k) != v for k, v in values.items()):
                counts["classified" if card.segment is None else "rescored"] += 1
                changed.append((card, values))
            if len(changed) >= batch_size:
                self._store_scores(changed)
                changed = []
        self._store_scores(changed)
        return counts

    def _store_scores(self, changed: builtins.list[tuple[Client, dict[str, Any]]]) -> None:
        """Write rescored cards and their events: two statements per batch, not two per card."""
        if not changed:
            return
        t = self.t
        self.conn.execute(
            update(t)
            .where(t.c.id == bindparam("card_id"))
            .values({k: bindparam(f"new_{k}") for k in changed[0][1]}),
            [
                {"card_id": card.id, **{f"new_{k}": v for k, v in new.items()}}
                for card, new in changed
            ],
        )
        now = utcnow()
        self.s.audit(
            "rescored", "client", ids=[card.id for card, _ in changed], kind="change"
        )  # one entry per batch; the events hold each card's old and new values
        self.conn.execute(
            insert(self.s.tables["events"]),
            [
                {
                    "at": now,
                    "user_id": self.s.user.id,
                    "entity": "client",
                    "entity_id": card.id,
                    "action": "rescored",
                    "data": {
                        k: {"old": getattr(card, k), "new": v}
                        for k, v in new.items()
                        if getattr(card, k) != v
                    },
                }
                for card, new in changed
            ],
        )

    # -- internals ---------------------------------------------------------
    def _select(self) -> Any:
        users = self.s.tables["users"]
        return select(self.t, users.c.login.label("owner")).select_from(
            self.t.outerjoin(users, users.c.id == self.t.c.owner_id)
        )

    def _filtered(
        self,
        *,
        action: str = "read",
        owner: str | int | None = None,
        segment: str | None = None,
        source: str | None = None,
        search: str | None = None,
        stage: str | None = None,
    ) -> Any:
        q = self._select()
        if stage is not None:
            if self.s.crm.lifecycle is not None:
                self.s.crm.lifecycle.stage(stage)  # an unknown stage lists the allowed
            q = q.where(self.t.c.stage == stage)
        if owner is not None:
            q = q.where(self.t.c.owner_id == self.s.users.get(owner, field="owner").id)
        if segment is not None:
            q = q.where(self.t.c.segment == segment)
        if source is not None:
            q = q.where(self.t.c.source == source)
        if search:
            q = q.where(func.lower(self.t.c.name).contains(search.lower(), autoescape=True))
        return self.s.access.filter(q, action, "client")

    def _validate(self, given: dict[str, Any], *, classify: bool = True) -> dict[str, Any]:
        """Normalise the given fields; every problem is reported at once.

        With ``classify``, parameters given without a segment get the segment
        they fit (:meth:`crmkit.CRM.classify`); an update that clears the
        segment on purpose passes False.
        """
        crm = self.s.crm
        out: dict[str, Any] = {}
        problems: list[Problem] = []

        def check(key: str, fn: Callable[[Any], Any]) -> None:
            if key not in given:
                return
            try:
                out[_column(key)] = fn(given[key])
            except (ValidationError, NotFound) as exc:
                problems.extend(getattr(exc, "problems", None) or [Problem(exc.field, exc.message)])

        check("name", lambda v: require_text(v, field="name"))
        check("kind", lambda v: _enum(ClientKind, v, "kind").value)
        check("email", lambda v: normalize_email(v))
        check("phone", lambda v: normalize_phone(v))
        check("requisites", lambda v: _requisites(v))
        check("segment", lambda v: None if v in (None, "") else crm.segment(v).name)
        check("owner", lambda v: self._owner(v))
        check("source", lambda v: None if v in (None, "") else crm.channel(v).name)
        check("external_id", lambda v: _optional_text(v, field="external_id"))
        if "params" in given:
            params = given["params"]
            if params is None:
                params = {}
            if not isinstance(params, dict):
                problems.append(Problem("params", "must be an object of parameter names to values"))
            elif "segment" not in {p.field for p in problems}:
                segment = out.get("segment", given.get("segment"))
                if not segment and params and classify:  # the segment the parameters fit
                    segment = out["segment"] = crm.classify(params)
                potential = None
                if segment:
                    seg = crm.segment(segment)
                    found = seg.validate(params)
                    problems.extend(found)
                    if not found:
                        potential = seg.potential(params)
                out["params"] = params
                out["potential_score"] = None if potential is None else potential.score
                out["potential_category"] = None if potential is None else potential.category
        if problems:
            raise ValidationError.from_problems(problems)
        return out

    def _owner(self, ref: str | int, *, field: str = "owner") -> int:
        user = self.s.users.get(ref, field=field)
        if not user.active:
            raise ValidationError(f"user {user.login!r} is not active", field=field)
        return user.id

    def _check_duplicates(self, values: dict[str, Any], exclude_id: int | None) -> None:
        for key in ("external_id", "email"):
            value = values.get(key)
            if not value:
                continue
            existing = self._find(**{key: value})
            if existing is not None and existing.id != exclude_id:
                label = "external id" if key == "external_id" else "email"
                if self._find(**{key: value}, action="read") is None:  # reveal nothing of it
                    raise DuplicateError(
                        f"another client, which you may not see, already has this {label}",
                        field=key,
                    )
                raise DuplicateError(
                    f"client #{existing.id} {existing.name!r} already has the {label} "
                    f"{getattr(existing, key)!r}",
                    field=key,
                    existing_id=existing.id,
                )

    def _check_plugins(self, values: dict[str, Any], *, changes: dict[str, Any]) -> None:
        users = self.s.tables["users"]
        owner = None
        if values.get("owner_id") is not None:
            owner = self.conn.execute(
                select(users.c.login).where(users.c.id == values["owner_id"])
            ).scalar()
        candidate = Client(
            id=values.get("id") or 0,
            name=values["name"],
            kind=ClientKind(values.get("kind", "company")),
            email=values.get("email"),
            phone=values.get("phone"),
            requisites=values.get("requisites") or {},
            segment=values.get("segment"),
            params=values.get("params") or {},
            owner_id=values.get("owner_id"),
            owner=owner,
            source=values.get("source"),
            external_id=values.get("external_id"),
            created_at=values.get("created_at"),
            updated_at=values.get("updated_at"),
            stage=values.get("stage"),
        )
        problems = self.s.crm.plugins.check_client(
            session=self.s, client=candidate, changes=changes
        )
        if problems:
            raise ValidationError.from_problems(problems)


class Contacts(_Repo):
    """Contact persons of clients."""

    table_name = "contacts"

    def add(
        self,
        client_id: int,
        name: str,
        *,
        position: str | None = None,
        email: str | None = None,
        phone: str | None = None,
    ) -> Contact:
        """Add a contact person to a client."""
        client = self.s.clients.get(client_id)
        problems: list[Problem] = []
        values: dict[str, Any] = {"client_id": client.id, "created_at": utcnow()}
        for key, fn, value in (
            ("name", lambda v: require_text(v, field="name"), name),
            ("position", lambda v: _optional_text(v, field="position"), position),
            ("email", normalize_email, email),
            ("phone", normalize_phone, phone),
        ):
            try:
                values[key] = fn(value)
            except ValidationError as exc:
                problems.append(Problem(exc.field, exc.message))
        if problems:
            raise ValidationError.from_problems(problems)
        self.s.access.require("create", "contact", self.s.access.view_of("contact", values))
        if values["email"]:
            dup = self.conn.execute(
                select(self.t.c.id, self.t.c.name).where(
                    self.t.c.client_id == client.id,
                    func.lower(self.t.c.email) == values["email"].lower(),
                )
            ).first()
            if dup is not None:
                raise DuplicateError(
                    f"contact #{dup.id} {dup.name!r} of client #{client.id} already has this email",
                    field="email",
                    existing_id=dup.id,
                )
        contact_id = self._insert(values)
        self.s.record("contact", contact_id, "created", _jsonable(values))
        row = self._one(select(self.t).where(self.t.c.id == contact_id), contact_id, "contact")
        return Contact(**row._mapping)

    def get(self, contact_id: int) -> Contact:
        """The contact with this id, if the user may read it; raises :class:`NotFound`."""
        query = self.s.access.filter(
            select(self.t).where(self.t.c.id == contact_id), "read", "contact"
        )
        contact = self._mask(Contact(**self._one(query, contact_id, "contact")._mapping))
        self.s.audit("read", "contact", ids=[contact.id])
        return contact

    def list(self, client_id: int) -> list[Contact]:
        """The contact persons of a client that the user may read."""
        self.s.clients.get(client_id)
        query = select(self.t).where(self.t.c.client_id == client_id).order_by(self.t.c.id)
        rows = self.conn.execute(self.s.access.filter(query, "read", "contact"))
        found = [self._mask(Contact(**r._mapping)) for r in rows]
        self.s.audit("read", "contact", ids=[c.id for c in found], detail={"listed": True})
        return found

    def _mask(self, contact: Contact) -> Contact:
        hidden = self.s.access.hidden("read", "contact")
        if not hidden:
            return contact
        blank: dict[str, Any] = dict.fromkeys(hidden)
        return attrs.evolve(contact, **blank, hidden=tuple(sorted(hidden)))


# -- helpers -----------------------------------------------------------------
def _column(key: str) -> str:
    return "owner_id" if key == "owner" else key


def _fields(values: dict[str, Any]) -> dict[str, Any]:
    """Column values back to the field names of the API (``owner_id`` -> ``owner``)."""
    return {
        ("owner" if key == "owner_id" else key): value
        for key, value in values.items()
        if key not in ("created_at", "updated_at")
    }


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _enum(cls: Any, value: Any, field: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise ValidationError(f"{value!r} is not one of {choices}", field=field) from None


def _optional_text(value: Any, *, field: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return require_text(str(value), field=field, max_length=200)


def _requisites(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError("must be an object of names to values", field="requisites")
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) and item is not None:
            raise ValidationError("must be text or a number", field=f"requisites.{key}")
    return dict(value)


def _user(row: Row[Any]) -> User:
    data = dict(row._mapping)
    data["role"] = Role(data["role"])
    return User(**data)


def _client(row: Row[Any]) -> Client:
    data = dict(row._mapping)
    data["kind"] = ClientKind(data["kind"])
    return Client(**data)


def _row_values(client: Client) -> dict[str, Any]:
    return {
        "name": client.name,
        "kind": client.kind.value,
        "email": client.email,
        "phone": client.phone,
        "requisites": client.requisites,
        "segment": client.segment,
        "params": client.params,
        "owner_id": client.owner_id,
        "source": client.source,
        "external_id": client.external_id,
        "created_at": client.created_at,
        "updated_at": client.updated_at,
        "stage": client.stage,
        "potential_score": client.potential_score,
        "potential_category": client.potential_category,
    }


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        out[key] = value.isoformat() if hasattr(value, "isoformat") else value
    return out
