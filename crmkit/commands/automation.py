"""``crmkit automation list|show|test|log|run``: the deployment's automation rules.

The rules are ``[automation.rules.NAME]`` of ``crmkit.toml`` and plugins'
(``crmkit_automation_rules``); the engine is :mod:`crmkit.core.automation`
and :doc:`/automation` describes the rule language.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from crmkit.cli import (
    WHEN_HELP,
    State,
    cli,
    emit,
    format_option,
    limit_option,
    pass_state,
    show,
)
from crmkit.core.errors import CrmError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.automation import Rule, Run

LIST_COLUMNS = ["name", "trigger", "title", "actions", "enabled", "plugin"]
LOG_COLUMNS = ["id", "at", "rule", "status", "key", "done"]
#: keys of an action's result that hold record ids (shown as ``#12``)
RECORDS = {"client", "deal", "task", "tasks", "interaction", "invoice", "message"}
RESULTS_WIDTH = 60  # characters of what a run did in a table (JSON has all of it)


@cli.group()
def automation() -> None:
    """Automation rules: what happens by itself when an event occurs or time passes.

    Rules live in [automation.rules.NAME] of crmkit.toml or come from
    plugins; 'crmkit automation run' is the scheduler of the time triggers.
    """


def _summary(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "trigger": rule.trigger,
        "title": rule.title,
        "actions": len(rule.actions),
        "enabled": rule.enabled,
        "plugin": rule.plugin,
    }


@automation.command("list")
@format_option
@pass_state
def automation_list(state: State, fmt: str) -> None:
    """List the rules: name, trigger, title, number of actions, enabled, plugin.

    ``plugin`` is empty for a rule of crmkit.toml.
    """
    rules = state.crm().automation.rules.values()
    found = [_summary(r) for r in sorted(rules, key=lambda r: r.name)]
    if fmt == "table":
        found = [{**r, "enabled": "yes" if r["enabled"] else "no"} for r in found]
    emit(found, fmt, columns=LIST_COLUMNS)


def _steps(rule: Rule) -> list[dict[str, Any]]:
    return [
        {"do": step["do"], "params": {k: v for k, v in step.items() if k != "do"}}
        for step in rule.actions
    ]


def _run_counts(state: State, name: str) -> dict[str, Any]:
    """How often the rule ran, by status, and when last."""
    from sqlalchemy import func, select

    with state.session(readonly=True) as s:
        table = s.table("automation_runs")
        rows = s.connection.execute(
            select(table.c.status, func.count(), func.max(table.c.at))
            .where(table.c.rule == name)
            .group_by(table.c.status)
        ).all()
    counts = {status: count for status, count, _ in rows}
    times = [at for _, _, at in rows if at is not None]
    return {
        "total": sum(counts.values()),
        "by_status": counts,
        "last_at": max(times).isoformat() if times else None,
    }


@automation.command("show")
@click.argument("name", metavar="RULE")
@format_option
@pass_state
def automation_show(state: State, name: str, fmt: str) -> None:
    """Show the rule RULE: trigger, parameters, condition, actions, and its runs so far."""
    crm = state.crm()
    rule = crm.automation.rule(name)
    data = {
        "name": rule.name,
        "title": rule.title,
        "trigger": rule.trigger,
        "event": rule.event,
        "schedule": rule.schedule,
        "params": rule.params,
        "when": rule.when,
        "actions": _steps(rule),
        "enabled": rule.enabled,
        "plugin": rule.plugin,
        "runs": _run_counts(state, rule.name),
    }
    if fmt == "json":
        emit(data, fmt)
        return
    runs = data["runs"]
    lines = [
        f"Rule {rule.name}" + (f": {rule.title}" if rule.title else ""),
        f"  trigger:   {rule.trigger}",
    ]
    if rule.schedule is not None:
        lines.append(f"  params:    {_json(rule.params) if rule.params else '(none)'}")
    lines += [
        f"  condition: {_json(rule.when) if rule.when is not None else '(none: always)'}",
        f"  enabled:   {'yes' if rule.enabled else 'no'}",
        f"  from:      {rule.plugin or 'crmkit.toml'}",
        "  actions:",
    ]
    for i, step in enumerate(data["actions"], 1):
        lines.append(f"    {i}. {step['do']} {_json(step['params'])}")
    if runs["total"]:
        by = ", ".join(f"{n} {s}" for s, n in sorted(runs["by_status"].items()))
        last = show_time(runs["last_at"], crm.tz)
        lines.append(f"  runs:      {runs['total']} ({by}); last {last}")
    else:
        lines.append("  runs:      none yet")
    click.echo("\n".join(lines))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def show_time(value: Any, tz: Any) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM`` in the deployment's time zone."""
    from crmkit.cli import _short_time

    return str(_short_time(value, tz))


# -- automation test -------------------------------------------------------------------------
def _read_payload(path: str) -> dict[str, Any]:
    """The JSON object in ``path`` (``-``: stdin); errors name the file and the place."""
    where = "stdin" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ValidationError(f"cannot read {where}: {reason}", field="event") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{where} is not UTF-8 text", field="event") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{where} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            field="event",
        ) from None
    if not isinstance(payload, dict):
        raise ValidationError(
            f"{where} must hold a JSON object (the event's payload: "
            '{"client": {...}, "deal": {...}}), not ' + type(payload).__name__,
            field="event",
        )
    return payload


def _logins(state: State, results: list[dict[str, Any]]) -> dict[int, str]:
    """The logins of the users the results name (``assignee_id``)."""
    ids = {r.get("assignee_id") for r in results} - {None}
    if not ids:
        return {}
    from sqlalchemy import select

    with state.session(readonly=True) as s:
        users = s.table("users")
        rows = s.connection.execute(select(users.c.id, users.c.login).where(users.c.id.in_(ids)))
        return dict(rows.all())


def _describe(result: dict[str, Any], logins: dict[int, str]) -> str:
    """``open_deal: deal 12, assignee anna`` for one action's result."""
    parts = []
    for key, value in result.items():
        if key == "do":
            continue
        if key == "assignee_id":
            parts.append(f"assignee {logins.get(value, f'#{value}')}")
        elif key in RECORDS and isinstance(value, int):
            parts.append(f"{key} #{value}")
        elif key in RECORDS and isinstance(value, list):
            parts.append(f"{key} " + ", ".join(f"#{v}" for v in value))
        else:
            parts.append(f"{key} {_json(value) if isinstance(value, dict | list) else value}")
    return f"{result['do']}: " + (", ".join(parts) if parts else "done")


@automation.command("test")
@click.argument("name", metavar="RULE")
@click.option(
    "--event",
    "event_file",
    required=True,
    metavar="FILE",
    help="A JSON file holding the event's payload ('-': read it from stdin).",
)
@click.option(
    "--actor",
    metavar="LOGIN",
    help="The user whose change raises the event: the rule's 'actor' (default: you).",
)
@format_option
@pass_state
def automation_test(state: State, name: str, event_file: str, actor: str | None, fmt: str) -> None:
    """Dry-run RULE on an event: would it fire, what would its actions do?

    The actions run for real against the current data (gates, validation and
    assignees included) and everything is rolled back: nothing is stored,
    not even a run. The rule acts as --actor (the user whose change raises
    the event), by default as you. Exits with 0 whether the rule would fire
    or not; '--format json' gives 'fires'. Admins only.
    """
    from crmkit.core.model import Role

    crm = state.crm()
    crm.automation.rule(name)  # an unknown rule first: NotFound naming the rules
    payload = _read_payload(event_file)
    with state.session(readonly=True) as s:
        s.require_role(Role.ADMIN)
    with crm.session(as_user=actor) if actor else state.session() as s:
        answer = crm.automation.test(s, name, payload)
    if fmt == "json":
        emit(answer, fmt)
        return
    rule = crm.automation.rule(name)
    if "actions" not in answer:
        click.echo(f"Rule {name} would not fire: {answer['reason']}")
        return
    results = answer["actions"]
    logins = _logins(state, results)
    if answer["fires"]:
        click.echo(f"Rule {name} would fire; its actions would do:")
    elif answer["status"] == "loop_limit":
        click.echo(f"Rule {name} would not run: {answer['error']}")
        return
    else:
        click.echo(f"Rule {name} would fire and fail; everything it did would be rolled back:")
    for i, result in enumerate(results, 1):
        click.echo(f"  {i}. {_describe(result, logins)}")
    if not answer["fires"]:
        i = len(results)
        failing = rule.actions[i]["do"] if i < len(rule.actions) else "?"
        click.echo(f"  {i + 1}. {failing}: FAILS: {answer['error']}")
    click.echo("(a dry run: nothing was stored)")


# -- automation log ----------------------------------------------------------------------------
def _run_row(run: Run, logins: dict[int, str]) -> dict[str, Any]:
    if run.status == "fired":
        done = "; ".join(_describe(r, logins) for r in run.results if "do" in r)
    else:
        done = run.error or ""
    if len(done) > RESULTS_WIDTH:
        done = done[: RESULTS_WIDTH - 3] + "..."
    return {
        "id": run.id,
        "at": run.at,
        "rule": run.rule,
        "status": run.status,
        "key": run.key,
        "done": done,
    }


@automation.command("log")
@click.option("--rule", metavar="RULE", help="Only the runs of this rule.")
@click.option("--since", metavar="WHEN", help="Only from this moment on. " + WHEN_HELP)
@limit_option("runs")
@format_option
@pass_state
def automation_log(state: State, rule: str | None, since: str | None, limit: int, fmt: str) -> None:
    """List the rules' runs, newest first: rule, event, key, status, what the actions did.

    A status is ``fired``, ``failed`` (the rule's changes were rolled back;
    ``error`` says why) or ``loop_limit``. Admins only.
    """
    from crmkit.core.model import Role
    from crmkit.core.validation import parse_when

    crm = state.crm()
    when = None if since is None else parse_when(since, crm.tz, field="since")
    with state.session(readonly=True) as s:
        s.require_role(Role.ADMIN)
        found = crm.automation.runs(s, rule=rule, since=when, limit=limit)
    if fmt == "json":
        emit(found, fmt)
        return
    logins = _logins(state, [result for run in found for result in run.results])
    show([_run_row(r, logins) for r in found], fmt, crm.tz, columns=LOG_COLUMNS)


# -- automation run: the scheduler -----------------------------------------------------------------
def _print_runs(state: State, runs: list[Run], fmt: str, *, lines: bool) -> None:
    from crmkit.core.model import to_json

    if fmt == "json":
        if lines:  # one JSON object per run and line: a log a program can follow
            for run in runs:
                click.echo(json.dumps(to_json(run), ensure_ascii=False, default=str))
        else:
            emit(runs, fmt)
        return
    logins = _logins(state, [result for run in runs for result in run.results])
    tz = state.crm().tz
    for run in runs:
        line = f"{show_time(run.at, tz)} {run.rule} {run.status} on {run.key}"
        if run.status == "fired":
            done = "; ".join(_describe(r, logins) for r in run.results if "do" in r)
            click.echo(line + (f": {done}" if done else ""))
        else:
            click.echo(f"{line}: {run.error}")


@automation.command("run")
@click.option(
    "--once",
    is_flag=True,
    help="Evaluate the time triggers once and exit (for cron, every minute).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Without --once: how often to evaluate the time triggers.",
)
@format_option
@pass_state
def automation_run(state: State, once: bool, interval: float, fmt: str) -> None:
    """The scheduler: fire the rules of time triggers (deal.stalled ...) that hold now.

    With --once it evaluates every such rule once and exits; run it from
    cron every minute. Without, it runs until SIGTERM or Ctrl-C, evaluating
    every --interval seconds. Each occasion fires a rule once, however often
    the scheduler runs and however many run at the same time. It prints what
    fired ('--format json': a JSON array with --once, else one JSON object per
    line). The rules act as '--as', else '[automation] as_user' of
    crmkit.toml, else the deployment's admin.
    """
    crm = state.crm()
    automation = crm.automation
    if once:
        _print_runs(state, automation.run_schedule(as_user=state.as_user), fmt, lines=False)
        return
    import signal
    import threading

    stop = threading.Event()

    def stopping(signum: int, frame: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, stopping)
    scheduled = sum(1 for r in automation.rules.values() if r.enabled and r.schedule)
    click.echo(
        f"crmkit automation scheduler: {scheduled} time-triggered rule(s), every {interval:g} s; "
        "stop with Ctrl-C or SIGTERM",
        err=True,
    )
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                runs = automation.run_schedule(as_user=state.as_user)
                _print_runs(state, runs, fmt, lines=True)
                sys.stdout.flush()
            except Exception as exc:  # e.g. the database away for a moment: the next round retries
                what = str(exc) if isinstance(exc, CrmError) else f"{type(exc).__name__}: {exc}"
                click.echo(f"Error: {what} (trying again in {interval:g} s)", err=True)
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo("crmkit automation scheduler: stopped", err=True)
