"""The built-in automation plugin's work (its hooks, in ``crmkit.plugins.automation``, call these).

The core's events, its actions and its time triggers.

* **Events** (:data:`crmkit.core.automation.EVENTS`): this plugin turns the
  core's hooks into automation events, in the transaction of the change:
  ``client.created``, ``interaction.logged``, ``deal.stage_changed``,
  ``deal.won``, ``deal.lost``, ``invoice.status_changed`` and, when the email
  tracking plugin calls its hook, ``email.opened``. ``lead.captured`` is
  raised by ``POST /api/leads``.
* **Actions**: ``create_task``, ``assign_owner``, ``move_stage``,
  ``open_deal``, ``set_field`` (the email plugin adds ``send_email``).
* **Time triggers** for the scheduler: ``deal.stalled``,
  ``client.no_contact``, ``task.due_soon``, ``task.overdue``.

Who an action's task goes to (``assignee``, an ``owner`` ...) is an
*assignee*: ``"owner"`` (of the event's deal, else client), ``"actor"`` (the
user whose change raised the event), ``"head"`` (the heads of the owner's
team and the teams above it; else the admin), ``{"user": LOGIN}``, or
``{"team": NAME, "by": "workload" | "round_robin"}``: *workload* picks the
active member with the fewest open tasks and open deals (ties: the one
assigned longest ago, then the first by id); *round robin* the member after
the one this rule chose last. The team ``"actor"`` is the acting user's own
team (``{"team": "actor", "by": "workload"}``: a colleague of whoever logged
the call).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select

from crmkit.core.automation import Action, Context, TimeTrigger, payload_of
from crmkit.core.errors import ValidationError
from crmkit.core.schema import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.model import Client, Interaction, Invoice, StageChange
    from crmkit.core.store import Session


# -- events -------------------------------------------------------------------------------------
def _client(session: Session, client_id: int | None) -> Any:
    if client_id is None:
        return None
    from crmkit.core.lifecycle import _stored_client

    return _stored_client(session, client_id)


def _deal(session: Session, deal_id: int | None) -> Any:
    return None if deal_id is None else session.deals._fetch(deal_id)


def client_saved(session: Session, client: Client, created: bool) -> None:
    if created and session.crm.automation.wants("client.created"):
        session.crm.automation.fire(
            session, "client.created", payload_of(client=client), f"client:{client.id}"
        )


def interaction_logged(session: Session, interaction: Interaction) -> None:
    if not session.crm.automation.wants("interaction.logged"):
        return
    payload = payload_of(
        interaction=interaction,
        client=_client(session, interaction.client_id),
        deal=_deal(session, interaction.deal_id),
    )
    session.crm.automation.fire(
        session, "interaction.logged", payload, f"interaction:{interaction.id}"
    )


def stage_changed(session: Session, change: StageChange) -> None:
    automation = session.crm.automation
    if change.entity != "deal" or not automation.wants(
        "deal.stage_changed", f"deal.{change.to_stage}"
    ):
        return
    deal = _deal(session, change.entity_id)
    payload = payload_of(change=change, deal=deal, client=_client(session, deal.client_id))
    key = f"stage_change:{change.id}"
    automation.fire(session, "deal.stage_changed", payload, key)
    if change.to_stage in ("won", "lost"):
        automation.fire(session, f"deal.{change.to_stage}", payload, key)


def invoice_status_changed(session: Session, invoice: Invoice, old_status: str | None) -> None:
    if not session.crm.automation.wants("invoice.status_changed"):
        return
    deal = _deal(session, invoice.deal_id)
    payload = payload_of(
        invoice=invoice,
        old_status=old_status,
        deal=deal,
        client=_client(session, deal.client_id if deal else None),
    )
    key = f"invoice:{invoice.id}:{invoice.status}"
    session.crm.automation.fire(session, "invoice.status_changed", payload, key)


def email_opened(session: Session, message: dict[str, Any], first: bool, document: bool) -> None:
    if not session.crm.automation.wants("email.opened"):
        return
    payload = payload_of(
        message=message,
        first=first,
        document=document,
        client=_client(session, message.get("client_id")),
        deal=_deal(session, message.get("deal_id")),
    )
    what = "read" if document else "open"
    key = f"email:{message['id']}:{what}:{utcnow().isoformat()}"
    session.crm.automation.fire(session, "email.opened", payload, key)


# -- assignees ------------------------------------------------------------------------------------
ASSIGNEE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"enum": ["owner", "actor", "head"]},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["user"],
            "properties": {"user": {"type": "string", "minLength": 1}},
        },
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["team", "by"],
            "properties": {
                "team": {"type": "string", "minLength": 1},
                "by": {"enum": ["workload", "round_robin"]},
            },
        },
    ]
}


def assignee(context: Context, spec: Any) -> list[int]:
    """The user ids an assignee spec names (one, but ``head`` may name several)."""
    s, payload = context.session, context.payload
    if spec in (None, "owner"):
        record = payload.get("deal") or payload.get("client") or payload.get("task")
        owner = (record or {}).get("owner_id") or (record or {}).get("assignee_id")
        if owner is None:
            raise ValidationError("the event has no record with an owner", field="assignee")
        return [int(owner)]
    if spec == "actor":
        return [s.user.id]
    if spec == "head":
        return _heads(context)
    if isinstance(spec, dict) and "user" in spec:
        return [s.users.get(spec["user"]).id]
    if isinstance(spec, dict) and "team" in spec:
        members = _members(s, _actor_team(s) if spec["team"] == "actor" else spec["team"])
        if spec["by"] == "workload":
            return [_least_loaded(s, members)]
        return [_next_in_turn(context, members)]
    raise ValidationError(f"not an assignee: {spec!r}", field="assignee")


def _actor_team(session: Session) -> str:
    """The name of the acting user's team (the assignee ``{"team": "actor", ...}``)."""
    user = session.user
    if user.team_id is None:
        raise ValidationError(
            f"the acting user {user.login!r} is in no team, so the team 'actor' names none",
            field="assignee",
        )
    teams = session.table("teams")
    return str(
        session.connection.execute(select(teams.c.name).where(teams.c.id == user.team_id)).scalar()
    )


def _members(session: Session, team: str) -> list[int]:
    team_id = session.teams.get(team).id
    users = session.table("users")
    ids = list(
        session.connection.execute(
            select(users.c.id)
            .where(users.c.team_id == team_id, users.c.active.is_(True))
            .where(users.c.role == "manager")
            .order_by(users.c.id)
        ).scalars()
    )
    if not ids:
        raise ValidationError(f"team {team!r} has no active member to assign", field="team")
    return ids


def _least_loaded(session: Session, members: list[int]) -> int:
    """The member with the fewest open tasks and open deals; ties: assigned longest ago."""
    tasks, deals = session.table("tasks"), session.table("deals")
    conn = session.connection
    open_tasks = dict(
        conn.execute(
            select(tasks.c.assignee_id, func.count())
            .where(tasks.c.assignee_id.in_(members), tasks.c.done_at.is_(None))
            .group_by(tasks.c.assignee_id)
        ).all()
    )
    open_deals = dict(
        conn.execute(
            select(deals.c.owner_id, func.count())
            .where(deals.c.owner_id.in_(members), deals.c.status == "open")
            .group_by(deals.c.owner_id)
        ).all()
    )
    last_task = dict(
        conn.execute(
            select(tasks.c.assignee_id, func.max(tasks.c.created_at))
            .where(tasks.c.assignee_id.in_(members))
            .group_by(tasks.c.assignee_id)
        ).all()
    )
    never = dt.datetime.min.replace(tzinfo=dt.UTC)

    def load(user_id: int) -> tuple[int, dt.datetime, int]:
        last = last_task.get(user_id)
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=dt.UTC)
        work = open_tasks.get(user_id, 0) + open_deals.get(user_id, 0)
        return (work, last or never, user_id)

    return min(members, key=load)


def _next_in_turn(context: Context, members: list[int]) -> int:
    """The member after the one this rule assigned last (the first, the first time)."""
    runs = context.session.table("automation_runs")
    rows = context.session.connection.execute(
        select(runs.c.results)
        .where(runs.c.rule == context.rule.name, runs.c.status == "fired")
        .order_by(runs.c.id.desc())
        .limit(20)
    ).scalars()
    for results in rows:
        for result in results or []:
            last = result.get("assignee_id")
            if last in members:
                return members[(members.index(last) + 1) % len(members)]
    return members[0]


def _heads(context: Context) -> list[int]:
    s = context.session
    owner = assignee(context, "owner")[0]
    users = s.table("users")
    teams = s.table("teams")
    conn = s.connection
    team_id = conn.execute(select(users.c.team_id).where(users.c.id == owner)).scalar()
    parents = dict(conn.execute(select(teams.c.id, teams.c.parent_id)).all())
    chain: list[int] = []
    while team_id is not None and team_id not in chain:
        chain.append(team_id)
        team_id = parents.get(team_id)
    heads = list(
        conn.execute(
            select(users.c.id)
            .where(users.c.team_id.in_(chain), users.c.role == "head", users.c.active.is_(True))
            .order_by(users.c.id)
        ).scalars()
    )
    if heads:
        return heads
    admin = s.users.get(s.crm.config.admin)
    return [admin.id]


# -- actions ------------------------------------------------------------------------------------
def _when(context: Context, value: Any) -> Any:
    """A deadline: ``+2h``, ``+3d``, ``+30m`` from now, or any time crmkit takes."""
    if isinstance(value, str) and value.startswith("+") and value[-1:] in ("m", "h", "d"):
        try:
            amount = float(value[1:-1])
        except ValueError:
            raise ValidationError(f"not a delay: {value!r}", field="due") from None
        unit = {"m": "minutes", "h": "hours", "d": "days"}[value[-1]]
        return utcnow() + dt.timedelta(**{unit: amount})
    return value


def _ids(context: Context) -> tuple[int | None, int | None]:
    client = context.payload.get("client") or {}
    deal = context.payload.get("deal") or {}
    return client.get("id") or deal.get("client_id"), deal.get("id")


def create_task(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A task for each assignee, about the event's client and deal."""
    client_id, deal_id = _ids(context)
    made = []
    for user_id in assignee(context, params.get("assignee", "owner")):
        task = context.session.tasks.add(
            context.render(params["title"]),
            due=_when(context, params.get("due", "+1d")),
            assignee=user_id,
            client_id=client_id,
            deal_id=deal_id,
            steps=[context.render(step) for step in params.get("steps", [])],
        )
        made.append(task)
    return {"tasks": [t.id for t in made], "assignee_id": made[0].assignee_id}


def assign_owner(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Give the event's deal (or client) to an assignee."""
    [user_id] = assignee(context, params["to"])[:1]
    record = params.get("record", "deal" if context.payload.get("deal") else "client")
    client_id, deal_id = _ids(context)
    if record == "deal":
        if deal_id is None:
            raise ValidationError("the event has no deal", field="record")
        context.session.deals.update(deal_id, owner=user_id)
        context.payload["deal"] = payload_of(d=context.session.deals._fetch(deal_id))["d"]
        return {"deal": deal_id, "assignee_id": user_id}
    if client_id is None:
        raise ValidationError("the event has no client", field="record")
    context.session.clients.update(client_id, owner=user_id)
    return {"client": client_id, "assignee_id": user_id}


def move_stage(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Move the event's deal to a stage, through the pipeline's order and gates."""
    _, deal_id = _ids(context)
    if deal_id is None:
        raise ValidationError("the event has no deal", field="to")
    change = context.session.deals.move(
        deal_id, params["to"], cause="automation", note=f"rule {context.rule.name}"
    )
    return {"deal": deal_id, "stage": change.to_stage}


def open_deal(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Open a deal for the event's client; the next actions see it as the event's deal."""
    client_id, _ = _ids(context)
    if client_id is None:
        raise ValidationError("the event has no client", field="client")
    owner = assignee(context, params.get("owner", "actor"))[0]
    deal = context.session.deals.open(
        client_id,
        pipeline=params.get("pipeline"),
        title=context.render(params.get("title")) if params.get("title") else None,
        amount=params.get("amount", 0),
        owner=owner,
    )
    context.payload["deal"] = payload_of(d=deal)["d"]
    return {"deal": deal.id, "assignee_id": owner}


SETTABLE = {
    "client": ("name", "email", "phone", "source", "segment"),
    "deal": ("title", "amount", "expected_close"),
}


def set_field(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Set a field of the event's client or deal."""
    record, name = params["record"], params["field"]
    client_id, deal_id = _ids(context)
    value = context.render(params.get("value"))
    if record == "deal":
        if deal_id is None:
            raise ValidationError("the event has no deal", field="record")
        context.session.deals.update(deal_id, **{name: value})
        return {"deal": deal_id, name: value}
    if client_id is None:
        raise ValidationError("the event has no client", field="record")
    context.session.clients.update(client_id, **{name: value})
    return {"client": client_id, name: value}


def actions() -> list[Action]:
    text = {"type": "string", "minLength": 1}
    due = {"anyOf": [{"type": "string", "minLength": 2}]}
    return [
        Action(
            "create_task",
            create_task,
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["title"],
                "properties": {
                    "title": text,
                    "steps": {"type": "array", "items": text},
                    "due": due,
                    "assignee": ASSIGNEE_SCHEMA,
                },
            },
            "A task for the owner, a user, the head, or a team member by workload or in turn",
        ),
        Action(
            "assign_owner",
            assign_owner,
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["to"],
                "properties": {"to": ASSIGNEE_SCHEMA, "record": {"enum": ["deal", "client"]}},
            },
            "Give the deal (or client) to an assignee",
        ),
        Action(
            "move_stage",
            move_stage,
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["to"],
                "properties": {"to": text},
            },
            "Move the deal to a stage (its gates apply)",
        ),
        Action(
            "open_deal",
            open_deal,
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "pipeline": text,
                    "title": text,
                    "amount": {"type": ["number", "string"]},
                    "owner": ASSIGNEE_SCHEMA,
                },
            },
            "Open a deal for the client",
        ),
        Action(
            "set_field",
            set_field,
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["record", "field", "value"],
                "properties": {
                    "record": {"enum": ["client", "deal"]},
                    "field": {"enum": sorted({*SETTABLE["client"], *SETTABLE["deal"]})},
                    "value": {},
                },
            },
            "Set a field of the client or deal",
        ),
    ]


# -- time triggers ----------------------------------------------------------------------------
def stalled_deals(
    session: Session, now: dt.datetime, params: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Open deals longer in their stage than its days (``params.days`` overrides them)."""
    deals = session.table("deals")
    found = []
    for name, flow in session.crm.pipelines.items():
        if flow.entity != "deal":
            continue
        for stage in flow.stages:
            days = params.get("days", stage.days)
            if not days:
                continue
            rows = session.connection.execute(
                select(deals.c.id).where(
                    deals.c.pipeline == name,
                    deals.c.stage == stage.name,
                    deals.c.status == "open",
                    deals.c.stage_entered_at < now - dt.timedelta(days=days),
                )
            ).scalars()
            for deal_id in rows:
                deal = session.deals._fetch(deal_id)
                entered = deal.stage_entered_at
                payload = payload_of(
                    deal=deal,
                    client=_client(session, deal.client_id),
                    stage=stage.name,
                    days=days,
                    days_in_stage=(now - entered).days,
                )
                key = f"deal_stalled:{deal.id}:{stage.name}:{entered.isoformat()}"
                found.append((key, payload))
    return found


def silent_clients(
    session: Session, now: dt.datetime, params: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Clients with no interaction for ``params.days`` days (counting from their creation)."""
    clients, interactions = session.table("clients"), session.table("interactions")
    last = (
        select(interactions.c.client_id, func.max(interactions.c.occurred_at).label("last"))
        .group_by(interactions.c.client_id)
        .subquery()
    )
    since = now - dt.timedelta(days=params["days"])
    rows = session.connection.execute(
        select(clients.c.id, last.c.last)
        .select_from(clients.outerjoin(last, last.c.client_id == clients.c.id))
        .where(
            or_(
                last.c.last < since,
                and_(last.c.last.is_(None), clients.c.created_at < since),
            )
        )
        .where(clients.c.stage.is_distinct_from("lost"))
    ).all()
    found = []
    for client_id, last_at in rows:
        client = _client(session, client_id)
        mark = last_at.isoformat() if last_at is not None else "never"
        payload = payload_of(client=client, last_contact_at=last_at, days=params["days"])
        found.append((f"no_contact:{client_id}:{mark}", payload))
    return found


def _tasks(session: Session, where: Any, kind: str) -> list[tuple[str, dict[str, Any]]]:
    tasks = session.table("tasks")
    rows = session.connection.execute(
        select(tasks.c.id, tasks.c.client_id, tasks.c.deal_id, tasks.c.due_at).where(
            tasks.c.done_at.is_(None), where
        )
    ).all()
    found = []
    for task_id, client_id, deal_id, due_at in rows:
        payload = payload_of(
            task=session.tasks._fetch(task_id),
            client=_client(session, client_id),
            deal=_deal(session, deal_id),
        )
        found.append((f"{kind}:{task_id}:{due_at.isoformat()}", payload))
    return found


def tasks_due_soon(
    session: Session, now: dt.datetime, params: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Open tasks due within ``params.hours`` hours."""
    tasks = session.table("tasks")
    until = now + dt.timedelta(hours=params["hours"])
    return _tasks(session, and_(tasks.c.due_at > now, tasks.c.due_at <= until), "task_due")


def overdue_tasks(
    session: Session, now: dt.datetime, params: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Open tasks past their deadline."""
    return _tasks(session, session.table("tasks").c.due_at < now, "task_overdue")


def triggers() -> list[TimeTrigger]:
    days = {"type": "integer", "minimum": 1, "maximum": 3650}
    return [
        TimeTrigger(
            "deal.stalled",
            stalled_deals,
            {"type": "object", "additionalProperties": False, "properties": {"days": days}},
            "An open deal longer in its stage than the stage's days",
        ),
        TimeTrigger(
            "client.no_contact",
            silent_clients,
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["days"],
                "properties": {"days": days},
            },
            "A client with no interaction for N days",
        ),
        TimeTrigger(
            "task.due_soon",
            tasks_due_soon,
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["hours"],
                "properties": {"hours": {"type": "number", "exclusiveMinimum": 0}},
            },
            "An open task due within N hours",
        ),
        TimeTrigger(
            "task.overdue",
            overdue_tasks,
            {"type": "object", "additionalProperties": False, "properties": {}},
            "An open task past its deadline",
        ),
    ]
