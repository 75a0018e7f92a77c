"""Automation: declarative rules that act when something happens, or when time passes.

A :class:`Rule` has a *trigger*, a *condition* and *actions*:

* the trigger is an **event** (``interaction.logged``, ``deal.won`` ... see
  :data:`EVENTS`), raised by the core and plugins inside the transaction of
  the change, or a **time trigger** (``deal.stalled`` ...) that the scheduler
  (``crmkit automation run``) evaluates;
* the condition is a JSON Schema over the event's *payload* (a dict of the
  records involved: ``client``, ``deal``, ``interaction`` ...), checked with
  crmkit's validator;
* the actions run in order (:class:`Action`: ``create_task``,
  ``move_stage`` ... or a plugin's).

Rules come from ``[automation.rules.NAME]`` in ``crmkit.toml`` and from
plugins (:func:`~crmkit.core.hookspecs.crmkit_automation_rules`); actions and
time triggers from the core and plugins
(:func:`~crmkit.core.hookspecs.crmkit_automation_actions`,
:func:`~crmkit.core.hookspecs.crmkit_automation_triggers`). Every rule is
checked when the deployment opens: an unknown action or event, a bad
parameter, an action whose plugin is not installed is a
:class:`~crmkit.ConfigError` naming the rule.

How a rule fires (:meth:`Automation.fire`):

* **Once per event.** Each firing is a row of ``automation_runs``, unique by
  rule and *event key* (``interaction:42``): a second firing for the same
  event, by a rerun, a retry or a second scheduler, finds the row and does
  nothing.
* **In the transaction of the change**, inside a savepoint: the actions'
  changes commit with the change that triggered them. An action that fails
  rolls back its rule's changes only; the failure is recorded (status
  ``failed`` with the error) and the triggering change is kept. Outgoing
  effects (an email) are queued in the same transaction and sent by their
  worker after it commits.
* **As an effect**: the actions are not checked against the acting user's
  access policies one by one (like a pipeline's outcome rules, they are the
  deployment's own rules); the audit log names the rule.
* **Without loops**: an action's change may trigger rules in turn, to a
  depth of :data:`MAX_DEPTH`; deeper, the rule is not run and the run is
  recorded as ``loop_limit``.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from .errors import ConfigError, CrmError, NotFound, ValidationError
from .schema import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from .app import CRM
    from .store import Session

log = logging.getLogger("crmkit.automation")

#: The events the core and the bundled plugins raise, with what their payload holds.
EVENTS: dict[str, str] = {
    "client.created": "client",
    "interaction.logged": "interaction, client, deal (or null)",
    "deal.stage_changed": "change, deal, client",
    "deal.won": "change, deal, client",
    "deal.lost": "change, deal, client",
    "invoice.status_changed": "invoice, old_status, deal, client",
    "email.opened": "message, first, document, client, deal (or null)  [email_tracking]",
    "lead.captured": "client, created, lead (the form's fields), channel",
}
#: How deep rules may trigger rules: the first rule runs at depth 1.
MAX_DEPTH = 5
#: The statuses of a run.
STATUSES = ("fired", "failed", "loop_limit")

_NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"}
RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["actions"],
    "properties": {
        "title": {"type": "string"},
        "event": {"type": "string", "pattern": "^[a-z_]+\\.[a-z_]+$"},
        "schedule": {"type": "string", "pattern": "^[a-z_]+\\.[a-z_]+$"},
        "params": {"type": "object"},
        "when": {"type": "object"},
        "actions": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["do"],
                "properties": {"do": _NAME},
            },
        },
        "enabled": {"type": "boolean"},
    },
}


@frozen
class Rule:
    """A rule as loaded: its trigger (``event`` or ``schedule``), condition and actions."""

    name: str
    actions: tuple[dict[str, Any], ...]
    event: str | None = None
    schedule: str | None = None
    params: dict[str, Any] = field(factory=dict)
    when: dict[str, Any] | None = None
    title: str = ""
    enabled: bool = True
    #: the plugin that registered it; None for ``crmkit.toml``
    plugin: str | None = None

    @property
    def trigger(self) -> str:
        """``event NAME`` or ``schedule NAME``."""
        return f"event {self.event}" if self.event else f"schedule {self.schedule}"


@define
class Context:
    """What an action sees: the session, the rule, the event and its payload.

    ``results`` holds what the earlier actions of the rule returned (a
    ``create_task`` action's task is ``results[i]["task"]``); ``dry_run`` is
    true under ``crmkit automation test``, where everything is rolled back.
    """

    session: Session
    rule: Rule
    event: str
    payload: dict[str, Any]
    key: str
    dry_run: bool = False
    results: list[dict[str, Any]] = field(factory=list)

    def render(self, text: Any) -> Any:
        """``text`` with ``{client.name}``-style fields of the payload filled in."""
        if not isinstance(text, str):
            return text
        return _FIELD.sub(lambda m: _lookup(self.payload, m.group(1), text), text)


@frozen
class Action:
    """A kind of action: its name, the JSON Schema of its parameters and what it does.

    ``run(context, params)`` makes the change in ``context.session`` and
    returns a JSON-able summary of it (``{"task": 12}``), which ``crmkit
    automation log`` shows.
    """

    name: str
    run: Callable[[Context, dict[str, Any]], dict[str, Any] | None] = field(repr=False)
    schema: dict[str, Any] = field(factory=lambda: {"type": "object"})
    title: str = ""
    plugin: str | None = None


@frozen
class TimeTrigger:
    """A condition that time makes true, found by the scheduler.

    ``find(session, now, params)`` yields ``(key, payload)`` for every record
    that meets it now; ``key`` names the occasion (``deal_stalled:12:345``:
    the deal and the stay), so that each occasion fires a rule once.
    """

    name: str
    find: Callable[[Session, dt.datetime, dict[str, Any]], Iterable[tuple[str, dict[str, Any]]]] = (
        field(repr=False)
    )
    schema: dict[str, Any] = field(factory=lambda: {"type": "object"})
    title: str = ""
    plugin: str | None = None


@frozen
class Run:
    """One firing of a rule (a row of ``automation_runs``)."""

    rule: str
    event: str
    key: str
    status: str
    at: dt.datetime
    depth: int = 1
    results: list[dict[str, Any]] = field(factory=list)
    error: str | None = None
    id: int | None = None


class Automation:
    """A deployment's rules, actions and time triggers (``crm.automation``)."""

    def __init__(self, crm: CRM) -> None:
        self.crm = crm
        self.actions: dict[str, Action] = {}
        for action in crm.plugins.automation_actions():
            if action.name in self.actions:
                raise ConfigError(
                    f"two plugins register the automation action {action.name!r}",
                    field="automation.actions",
                )
            self.actions[action.name] = action
        self.triggers: dict[str, TimeTrigger] = {}
        for trigger in crm.plugins.automation_triggers():
            self.triggers[trigger.name] = trigger
        #: the events plugins declare (``crmkit_automation_events``), read once
        self.extra_events = set(crm.plugins.automation_events())
        self.rules: dict[str, Rule] = {}
        for data, plugin in crm.plugins.automation_rules():
            rule = self._load(data, plugin)
            self.rules[rule.name] = rule
        for name, data in crm.config.automation.get("rules", {}).items():
            self.rules[name] = self._load({"name": name, **data}, None)
        self.max_depth = int(crm.config.automation.get("max_depth", MAX_DEPTH))

    # -- loading -------------------------------------------------------------------------------
    def _load(self, data: Any, plugin: str | None) -> Rule:
        from .validation import schema_problems

        if isinstance(data, Rule):
            data = {
                "name": data.name,
                "title": data.title,
                "actions": list(data.actions),
                **({"event": data.event} if data.event else {"schedule": data.schedule}),
                "params": data.params,
                **({"when": data.when} if data.when is not None else {}),
                "enabled": data.enabled,
            }
        data = dict(data)
        name = data.pop("name", None)
        where = f"automation.rules.{name}"
        if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9_]{0,62}$", name):
            raise ConfigError("a rule needs a name of lowercase letters, digits and _", field=where)
        problems = schema_problems(RULE_SCHEMA, data, prefix=where)
        if problems:
            raise ConfigError(problems[0].reason, field=problems[0].field or where)
        event, schedule = data.get("event"), data.get("schedule")
        if (event is None) == (schedule is None):
            raise ConfigError("needs one trigger: 'event' or 'schedule'", field=where)
        if event is not None and event not in EVENTS and event not in self.extra_events:
            known = ", ".join(sorted({*EVENTS, *self.extra_events}))
            raise ConfigError(f"unknown event {event!r} (known: {known})", field=f"{where}.event")
        params = data.get("params", {})
        if schedule is not None:
            trigger = self.triggers.get(schedule)
            if trigger is None:
                known = ", ".join(sorted(self.triggers)) or "none"
                raise ConfigError(
                    f"unknown time trigger {schedule!r} (known: {known})",
                    field=f"{where}.schedule",
                )
            _check(trigger.schema, params, f"{where}.params")
        if data.get("when") is not None:
            from .validation import check_schema

            try:
                check_schema(data["when"], field=f"{where}.when")
            except ValidationError as exc:
                raise ConfigError(exc.message, field=exc.field) from None
        actions = []
        for i, step in enumerate(data["actions"]):
            step = dict(step)
            kind = step.pop("do")
            action = self.actions.get(kind)
            if action is None:
                hint = ""
                if kind == "send_email":
                    hint = "; it comes with the email tracking plugin (crmkit-email-tracking)"
                known = ", ".join(sorted(self.actions))
                raise ConfigError(
                    f"unknown action {kind!r} (known: {known}){hint}",
                    field=f"{where}.actions.{i}",
                )
            _check(action.schema, step, f"{where}.actions.{i}")
            actions.append({"do": kind, **step})
        return Rule(
            name=name,
            actions=tuple(actions),
            event=event,
            schedule=schedule,
            params=params,
            when=data.get("when"),
            title=data.get("title", ""),
            enabled=data.get("enabled", True),
            plugin=plugin,
        )

    def rule(self, name: str) -> Rule:
        """The rule ``name``; :class:`NotFound` naming the known ones."""
        try:
            return self.rules[name]
        except KeyError:
            known = ", ".join(sorted(self.rules)) or "none"
            raise NotFound(f"no rule {name!r} (rules: {known})", field="rule") from None

    # -- firing ----------------------------------------------------------------------------------
    def wants(self, *events: str) -> bool:
        """Whether an enabled rule listens to one of ``events`` (else skip making a payload)."""
        return any(r.enabled and r.event in events for r in self.rules.values())

    def fire(self, session: Session, event: str, payload: dict[str, Any], key: str) -> list[Run]:
        """Run every enabled rule of ``event`` whose condition holds; what each did.

        Called by the core and plugins in the transaction of the change that
        raised the event. Never raises for a rule's failure: it is recorded.
        """
        rules = [r for r in self.rules.values() if r.enabled and r.event == event]
        return [run for rule in rules if (run := self._fire(session, rule, payload, key))]

    def _fire(
        self,
        session: Session,
        rule: Rule,
        payload: dict[str, Any],
        key: str,
        *,
        dry_run: bool = False,
    ) -> Run | None:
        if not self.matches(rule, payload):
            return None
        payload = copy.deepcopy(payload)  # actions may add to it (open_deal's deal): this rule's
        depth = _depth(session) + 1
        event = rule.event or rule.schedule or ""
        conn = session.connection
        runs = session.table("automation_runs")
        now = utcnow()
        if depth > self.max_depth:
            run = Run(rule.name, event, key, "loop_limit", now, depth, error=_loop(self.max_depth))
            if not dry_run:  # a dry run reports it to its caller, not to the log
                log.warning("automation rule %s: %s", rule.name, run.error)
                self._record(session, run)
            return run
        savepoint = conn.begin_nested()
        try:
            if not dry_run:
                conn.execute(
                    insert(runs).values(
                        rule=rule.name,
                        event=event,
                        event_key=key,
                        status="fired",
                        at=now,
                        depth=depth,
                        results=[],
                    )
                )
        except IntegrityError:
            savepoint.rollback()
            return None  # this rule already fired for this event
        context = Context(session, rule, event, payload, key, dry_run=dry_run)
        try:
            with session.access.on_behalf(f"automation rule {rule.name}"), _deeper(session):
                for step in rule.actions:
                    params = {k: v for k, v in step.items() if k != "do"}
                    done = self.actions[step["do"]].run(context, params) or {}
                    context.results.append({"do": step["do"], **done})
            if not dry_run:
                conn.execute(
                    update(runs)
                    .where(runs.c.rule == rule.name, runs.c.event_key == key)
                    .values(results=_plain(context.results))
                )
            savepoint.commit()
        except Exception as exc:  # the rule's changes go, the triggering change stays
            savepoint.rollback()
            error = str(exc) if isinstance(exc, CrmError) else f"{type(exc).__name__}: {exc}"
            run = Run(rule.name, event, key, "failed", now, depth, context.results, error)
            if not dry_run:
                log.warning("automation rule %s failed on %s: %s", rule.name, key, error)
                self._record(session, run)
            return run
        return Run(rule.name, event, key, "fired", now, depth, context.results)

    def _record(self, session: Session, run: Run) -> None:
        """Store a run that did not fire (failed, loop_limit): once per rule and event."""
        runs = session.table("automation_runs")
        savepoint = session.connection.begin_nested()
        try:
            session.connection.execute(
                insert(runs).values(
                    rule=run.rule,
                    event=run.event,
                    event_key=run.key,
                    status=run.status,
                    at=run.at,
                    depth=run.depth,
                    results=_plain(run.results),
                    error=run.error,
                )
            )
            savepoint.commit()
        except IntegrityError:
            savepoint.rollback()

    def matches(self, rule: Rule, payload: dict[str, Any]) -> bool:
        """Whether ``payload`` meets the rule's condition (``when``)."""
        if rule.when is None:
            return True
        from .validation import schema_problems

        return not schema_problems(rule.when, _plain(payload))

    def test(self, session: Session, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Would ``name`` fire on ``payload``, and what would it do? Everything is rolled back.

        The actions run for real in a savepoint that is then rolled back, so
        the answer is what they would change now, gates and validation
        included.
        """
        rule = self.rule(name)
        if not self.matches(rule, payload):
            return {"rule": name, "fires": False, "reason": "the condition does not hold"}
        savepoint = session.connection.begin_nested()
        try:
            run = self._fire(session, rule, payload, "dry-run", dry_run=True)
        finally:
            savepoint.rollback()
        assert run is not None
        return {
            "rule": name,
            "fires": run.status == "fired",
            "status": run.status,
            "actions": run.results,
            "error": run.error,
        }

    # -- the scheduler ------------------------------------------------------------------------
    def run_schedule(
        self, now: dt.datetime | None = None, *, as_user: str | None = None
    ) -> list[Run]:
        """Evaluate every time-triggered rule once; each occasion fires in its own transaction.

        The rules act as ``as_user`` (default: ``[automation] as_user``, else
        the deployment's admin).
        """
        now = now or utcnow()
        as_user = as_user or self.crm.config.automation.get("as_user")
        done: list[Run] = []
        for rule in self.rules.values():
            if not rule.enabled or rule.schedule is None:
                continue
            trigger = self.triggers[rule.schedule]
            with self.crm.session(as_user=as_user, readonly=True) as s:
                found = list(trigger.find(s, now, rule.params))
            for key, payload in found:
                with self.crm.session(as_user=as_user) as s:
                    if _fired(s, rule.name, key):
                        continue
                    run = self._fire(s, rule, payload, key)
                if run is not None:
                    done.append(run)
        return done

    def runs(
        self,
        session: Session,
        *,
        rule: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """The newest runs (of ``rule``, since ``since``)."""
        table = session.table("automation_runs")
        query = select(table).order_by(table.c.id.desc()).limit(limit)
        if rule is not None:
            if rule not in self.rules and rule not in self._logged_rules(session):
                self.rule(rule)  # NotFound, naming the rules
            query = query.where(table.c.rule == rule)
        if since is not None:
            query = query.where(table.c.at >= since)
        return [
            Run(
                rule=r.rule,
                event=r.event,
                key=r.event_key,
                status=r.status,
                at=r.at,
                depth=r.depth,
                results=list(r.results or []),
                error=r.error,
                id=r.id,
            )
            for r in session.connection.execute(query)
        ]

    def _logged_rules(self, session: Session) -> set[str]:
        table = session.table("automation_runs")
        return set(session.connection.execute(select(table.c.rule).distinct()).scalars())


# -- helpers ----------------------------------------------------------------------------------
_FIELD = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)\}")


def _lookup(payload: Mapping[str, Any], path: str, text: str) -> str:
    value: Any = payload
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            raise ValidationError(f"{{{path}}} is not in the event (in {text!r})", field="params")
    return "" if value is None else str(value)


def _check(schema: dict[str, Any], params: Any, where: str) -> None:
    from .validation import schema_problems

    problems = schema_problems(schema, params, prefix=where)
    if problems:
        raise ConfigError(problems[0].reason, field=problems[0].field or where)


def _depth(session: Session) -> int:
    return int(session.__dict__.get("_automation_depth", 0))


class _deeper:
    """A context manager: one level deeper in rules triggering rules."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self) -> None:
        self.session.__dict__["_automation_depth"] = _depth(self.session) + 1

    def __exit__(self, *exc: object) -> None:
        self.session.__dict__["_automation_depth"] = _depth(self.session) - 1


def _loop(limit: int) -> str:
    return f"not run: rules triggering rules reached the depth limit of {limit} (a loop?)"


def _fired(session: Session, rule: str, key: str) -> bool:
    table = session.table("automation_runs")
    found = session.connection.execute(
        select(table.c.id).where(table.c.rule == rule, table.c.event_key == key)
    ).first()
    return found is not None


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data (records as dicts, times as ISO text, money as numbers).

    Amounts are numbers, not the exact text of :func:`~crmkit.core.model.to_json`,
    so that a condition can compare them (``{"minimum": 100000}`` ignores text).
    """
    from .model import to_json

    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if hasattr(value, "__attrs_attrs__"):
        data = to_json(value)
        if isinstance(data, dict):
            for name in data:
                found = getattr(value, name, None)
                if isinstance(found, decimal.Decimal):
                    data[name] = found
        return _plain(data)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def payload_of(**records: Any) -> dict[str, Any]:
    """An event's payload: each record (attrs objects, dicts) as plain JSON data."""
    return {name: _plain(record) for name, record in records.items()}
