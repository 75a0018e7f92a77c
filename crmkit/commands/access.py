"""``crmkit policy``: the access policies in force, and why a user may or may not do something."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from crmkit.cli import State, cli, emit, format_option, pass_state
from crmkit.core.errors import NotFound, PermissionDenied, ValidationError


@cli.group()
def policy() -> None:
    """Access policies: list, show, check a decision, see the SQL used for lists."""


def _rule_row(rule: Any) -> dict[str, Any]:
    return {
        "id": rule.id,
        "effect": rule.effect,
        "roles": ", ".join(rule.roles) if rule.roles is not None else "*",
        "actions": ", ".join(rule.actions),
        "resource": ", ".join(rule.resources),
        "hide": ", ".join(rule.hide),
        "source": rule.source,
        "description": rule.description,
    }


@policy.command("list")
@format_option
@pass_state
def policy_list(state: State, fmt: str) -> None:
    """The rules and read quotas in force, plugins' first, then the deployment's files."""
    policies = state.crm().access
    rows = [_rule_row(r) for r in policies.rules]
    if fmt == "json":
        quotas = [
            {
                "id": q.id,
                "roles": list(q.roles) if q.roles is not None else None,
                "resource": q.resource,
                "per_day": q.per_day,
                "source": q.source,
                "description": q.description,
            }
            for q in policies.quotas
        ]
        emit({"rules": rows, "quotas": quotas}, fmt)
        return
    emit(rows, fmt, columns=["id", "effect", "roles", "actions", "resource", "hide"])
    if policies.quotas:
        emit(
            [
                {
                    "quota": q.id,
                    "roles": ", ".join(q.roles) if q.roles is not None else "*",
                    "per_day": q.per_day,
                }
                for q in policies.quotas
            ],
            fmt,
        )


@policy.command("show")
@click.argument("rule_id", metavar="ID")
@format_option
@pass_state
def policy_show(state: State, rule_id: str, fmt: str) -> None:
    """One rule in full: who, what, on which resource, and its condition."""
    rule = state.crm().access.rule(rule_id)
    data = {**_rule_row(rule), "when": rule.when}
    if fmt == "json":
        emit(
            {
                **data,
                "roles": list(rule.roles) if rule.roles is not None else None,
                "actions": list(rule.actions),
                "resource": list(rule.resources),
                "hide": list(rule.hide),
            },
            fmt,
        )
        return
    emit({k: v for k, v in data.items() if k != "when"}, fmt)
    click.echo("when:")
    click.echo(json.dumps(rule.when, indent=2, ensure_ascii=False))


def _access_for(state: State, login: str) -> Any:
    """A read-only session as ``login``: admins may look at anyone, others at themselves."""
    with state.session(readonly=True) as me:
        actor = me.user
    if actor.role.value != "admin" and actor.login != login:
        raise PermissionDenied(
            f"user {actor.login!r} ({actor.role.value}) may check only their own access; "
            "an admin may check anyone's",
            field="login",
        )
    return state.crm().session(as_user=login, readonly=True)


@policy.command("check")
@click.argument("login")
@click.argument("action")
@click.argument("resource")
@click.argument("record_id", metavar="[ID]", required=False, type=int)
@format_option
@pass_state
def policy_check(
    state: State, login: str, action: str, resource: str, record_id: int | None, fmt: str
) -> None:
    """Explain whether LOGIN may ACTION a RESOURCE (record ID), and which rules decide it.

    Without ID it tells whether any record could be allowed (what a list
    shows) and which fields are hidden. Nothing is recorded in the audit log.
    """
    with _access_for(state, login) as s:
        access = s.access
        compiled = access.compiled(action, resource)
        result: dict[str, Any] = {"user": login, "action": action, "resource": resource}
        if record_id is not None:
            view = access.view(resource, record_id)
            if view is None:
                raise NotFound(f"no {resource} with id {record_id}", field="id")
            decision = access.decide(action, resource, view)
            result.update(
                id=record_id,
                allowed=decision.allowed,
                reason=decision.reason,
                allowed_by=list(decision.allowed_by),
                denied_by=list(decision.denied_by),
            )
        else:
            result.update(
                allowed="some" if access.may(action, resource) else False,
                reason=(
                    "rules allow some records: lists show those the SQL condition selects "
                    "(see 'crmkit policy sql')"
                    if access.may(action, resource)
                    else "no rule allows it (deny by default)"
                ),
            )
        result["rules_considered"] = [
            {"id": r.id, "effect": r.effect} for r, _ in (*compiled.allow, *compiled.deny)
        ]
        result["hidden_fields"] = sorted(compiled.hidden)
        s.audit_buffer.clear()  # looking at a decision is not an access to the record
    if fmt == "json":
        emit(result, fmt)
        return
    verdict = {True: "ALLOWED", False: "DENIED", "some": "ALLOWED for some records"}
    what = f"{resource} #{record_id}" if record_id is not None else resource
    click.echo(
        f"{verdict[result['allowed']]}: {login} may{'' if result['allowed'] else ' not'} "
        f"{action} {what}: {result['reason']}"
    )
    for rule in result["rules_considered"]:
        mark = ""
        if record_id is not None:
            if rule["id"] in result["allowed_by"] or rule["id"] in result["denied_by"]:
                mark = " (matches)"
            else:
                mark = " (does not match)"
        click.echo(f"  {rule['effect']:5} {rule['id']}{mark}")
    if result["hidden_fields"]:
        click.echo(f"  hidden fields: {', '.join(result['hidden_fields'])}")


@policy.command("sql")
@click.argument("login")
@click.argument("action")
@click.argument("resource")
@pass_state
def policy_sql(state: State, login: str, action: str, resource: str) -> None:
    """Print the SQL WHERE clause that selects what LOGIN may ACTION in lists of RESOURCE.

    The clause is rendered for this deployment's database, with the user's
    values filled in; lists, counts, reports and exports add it to their query.
    """
    with _access_for(state, login) as s:
        clause = s.access.where(action, resource)
        dialect = s.connection.dialect
        text = str(clause.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    click.echo(text)


@policy.command("schema")
def policy_schema() -> None:
    """Print the meta-schema that every policy document is checked against (JSON Schema)."""
    from crmkit.core.access import POLICY_SCHEMA

    click.echo(json.dumps(POLICY_SCHEMA, indent=2))


@policy.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_state
def policy_validate(state: State, file: Path) -> None:
    """Check a policy document FILE against the meta-schema and this deployment's resources.

    Run it before naming the file under ``[access] policies`` in crmkit.toml.
    """
    from crmkit.core.access import PolicyError, parse_policy

    try:
        text = file.read_text("utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror}", field="file") from None
    resources = state.crm().access.resources
    try:
        found = parse_policy(text, source=str(file), resources=resources)
    except PolicyError as exc:
        raise ValidationError(exc.message, field=exc.field) from None
    rules, quotas = len(found.rules), len(found.quotas)
    click.echo(
        f"{file}: valid ({rules} rule{'s' * (rules != 1)}, {quotas} quota{'s' * (quotas != 1)})"
    )
