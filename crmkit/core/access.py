"""Access policies: JSON documents whose conditions are JSON Schema, applied everywhere.

A policy document (registered by a plugin with ``crmkit_access_policies`` or
named in ``crmkit.toml`` under ``[access] policies``) holds rules::

    {"version": 1, "default": "deny",
     "rules": [
       {"id": "manager-own-clients", "effect": "allow", "roles": ["manager"],
        "actions": ["read", "update"], "resource": "client",
        "when": {"properties": {"resource": {"properties": {
            "owner_id": {"const": {"$subject": "id"}}}}}}}]}

Access is denied unless a rule allows it; it is allowed when at least one
``allow`` rule matches and no ``deny`` rule does. A rule matches an acting
user (the *subject*), an *action* and a *resource* record when the user has
one of its ``roles``, the action is one of its ``actions``, the resource is
its ``resource``, and ``when`` (JSON Schema, draft 2020-12) validates the
document ``{"subject": ..., "action": ..., "resource": ...}``.

``{"$subject": "NAME"}`` anywhere in ``when`` is replaced by the subject's
attribute first. Then the clauses about the subject and the action are
decided at once (they fold to true or false), and what is left is about the
resource. For lists, counts, reports and exports that part is translated to a
SQL ``WHERE`` clause (:meth:`Access.where`): the database filters, with the
same verdict as JSON Schema gives on every record, NULLs included. Rules for
those actions must stay within the translatable subset (see
:data:`TRANSLATABLE`); a rule that does not is refused when it is loaded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import field, frozen
from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    case,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy import (
    cast as sql_cast,
)
from sqlalchemy.types import BigInteger

from .errors import ConfigError, CrmError, NotFound, PermissionDenied, PluginError, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from .app import CRM
    from .store import Session

#: the actions every resource has; plugins may declare more
CORE_ACTIONS = ("read", "create", "update", "delete", "export", "reassign")
#: actions whose rules are applied in SQL (lists, counts, reports, exports)
LIST_ACTIONS = ("read", "export")
#: keywords of a resource attribute's schema that translate to SQL
TRANSLATABLE = (
    "const",
    "enum",
    "type",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
)
#: keywords that never change a verdict
ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated"}
)
_ATTR_TYPES = ("integer", "number", "string", "boolean")

#: the meta-schema every policy document is checked against when it is loaded
POLICY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://crmkit.dev/schemas/policy-1.json",
    "title": "crmkit access policy document",
    "type": "object",
    "required": ["version", "rules"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "id": {"$ref": "#/$defs/id"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "default": {
            "const": "deny",
            "description": "crmkit denies what no rule allows; the key makes it explicit",
        },
        "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
        "quotas": {"type": "array", "items": {"$ref": "#/$defs/quota"}},
    },
    "$defs": {
        "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,99}$"},
        "names": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "minLength": 1},
        },
        "rule": {
            "type": "object",
            "required": ["id", "effect", "actions", "resource"],
            "additionalProperties": False,
            "properties": {
                "id": {"$ref": "#/$defs/id"},
                "description": {"type": "string"},
                "effect": {"enum": ["allow", "deny"]},
                "roles": {"$ref": "#/$defs/names"},
                "actions": {"$ref": "#/$defs/names"},
                "resource": {
                    "anyOf": [{"type": "string", "minLength": 1}, {"$ref": "#/$defs/names"}]
                },
                "when": {"type": ["object", "boolean"]},
                "hide": {"$ref": "#/$defs/names"},
            },
        },
        "quota": {
            "type": "object",
            "required": ["id", "resource", "per_day"],
            "additionalProperties": False,
            "properties": {
                "id": {"$ref": "#/$defs/id"},
                "description": {"type": "string"},
                "roles": {"$ref": "#/$defs/names"},
                "resource": {"const": "client"},
                "per_day": {"type": "integer", "minimum": 1},
            },
        },
    },
}


# -- resources ----------------------------------------------------------------------
@frozen
class Col:
    """An attribute stored in a column of the resource's own table."""

    name: str


@frozen
class Via:
    """An attribute of the row that ``fk`` points to (by ``table.id``): the owner's team."""

    fk: str
    table: str
    target: Col | Via
    fk_nullable: bool = True


@frozen
class Attribute:
    """An attribute of a resource record, as policies see it: a JSON type and where it lives."""

    name: str
    type: str
    source: Col | Via
    nullable: bool = True
    description: str = ""


@frozen
class Resource:
    """Something policies protect: its records' attributes and the actions on it.

    ``table`` is where records live (None for resources without rows, such as
    ``report``); ``fields`` are the fields of a record that a rule may hide.
    Plugins declare their own resources, or more actions on an existing one,
    with ``crmkit_access_resources``.
    """

    name: str
    table: str | None
    attributes: dict[str, Attribute] = field(factory=dict)
    actions: tuple[str, ...] = CORE_ACTIONS
    fields: tuple[str, ...] = ()
    title: str = ""
    plugin: str | None = field(default=None, eq=False)


def _attrs(*items: tuple[str, str, Col | Via, bool, str]) -> dict[str, Attribute]:
    return {item[0]: Attribute(*item) for item in items}


_OWNER_TEAM = Via("owner_id", "users", Col("team_id"))


def core_resources() -> dict[str, Resource]:
    """The resources of the core's tables."""
    own = ("owner_id", "integer", Col("owner_id"), True, "the owner (a user id)")
    team = ("team_id", "integer", _OWNER_TEAM, True, "the owner's team")
    client_owner = Via("client_id", "clients", Col("owner_id"), fk_nullable=False)
    client_team = Via("client_id", "clients", _OWNER_TEAM, fk_nullable=False)
    deal_owner = Via("deal_id", "deals", Col("owner_id"), fk_nullable=False)
    deal_team = Via("deal_id", "deals", _OWNER_TEAM, fk_nullable=False)
    return {
        "client": Resource(
            "client",
            "clients",
            _attrs(
                ("id", "integer", Col("id"), False, ""),
                ("name", "string", Col("name"), False, ""),
                ("kind", "string", Col("kind"), False, "company or person"),
                ("email", "string", Col("email"), True, ""),
                ("phone", "string", Col("phone"), True, ""),
                ("segment", "string", Col("segment"), True, ""),
                ("source", "string", Col("source"), True, "the marketing channel"),
                ("stage", "string", Col("stage"), True, "the lifecycle stage"),
                ("external_id", "string", Col("external_id"), True, ""),
                own,
                team,
                ("potential_score", "number", Col("potential_score"), True, ""),
                ("potential_category", "string", Col("potential_category"), True, ""),
            ),
            fields=("name", "email", "phone", "requisites", "params", "external_id"),
            title="client cards",
        ),
        "contact": Resource(
            "contact",
            "contacts",
            _attrs(
                ("id", "integer", Col("id"), False, ""),
                ("client_id", "integer", Col("client_id"), False, ""),
                ("name", "string", Col("name"), False, ""),
                ("position", "string", Col("position"), True, ""),
                ("email", "string", Col("email"), True, ""),
                ("phone", "string", Col("phone"), True, ""),
                ("owner_id", "integer", client_owner, True, "the owner of the client"),
                ("team_id", "integer", client_team, True, "the team of the client's owner"),
            ),
            fields=("name", "position", "email", "phone"),
            title="contact persons",
        ),
        "deal": Resource(
            "deal",
            "deals",
            _attrs(
                ("id", "integer", Col("id"), False, ""),
                ("client_id", "integer", Col("client_id"), False, ""),
                ("pipeline", "string", Col("pipeline"), False, ""),
                ("stage", "string", Col("stage"), False, ""),
                ("status", "string", Col("status"), False, "open, won or lost"),
                ("title", "string", Col("title"), False, ""),
                ("amount", "number", Col("amount"), False, ""),
                ("currency", "string", Col("currency"), False, ""),
                own,
                team,
                ("client_owner_id", "integer", client_owner, True, "the owner of the client"),
            ),
            title="deals",
        ),
        "interaction": Resource(
            "interaction",
            "interactions",
            _attrs(
                ("id", "integer", Col("id"), False, ""),
                ("client_id", "integer", Col("client_id"), False, ""),
                ("deal_id", "integer", Col("deal_id"), True, ""),
                ("user_id", "integer", Col("user_id"), True, "who logged it"),
                ("kind", "string", Col("kind"), False, ""),
                ("direction", "string", Col("direction"), True, ""),
                ("topic", "string", Col("topic"), False, ""),
                ("outcome", "string", Col("outcome"), False, ""),
                ("owner_id", "integer", client_owner, True, "the owner of the client"),
                ("team_id", "integer", client_team, True, "the team of the client's owner"),
            ),
            fields=("note",),
            title="interactions",
        ),
        "invoice": Resource(
            "invoice",
            "invoices",
            _attrs(
                ("id", "integer", Col("id"), False, ""),
                ("deal_id", "integer", Col("deal_id"), False, ""),
                ("number", "string", Col("number"), False, ""),
                ("status", "string", Col("status"), False, ""),
                ("amount", "number", Col("amount"), False, ""),
                ("currency", "string", Col("currency"), False, ""),
                ("owner_id", "integer", deal_owner, True, "the owner of the deal"),
                ("team_id", "integer", deal_team, True, "the team of the deal's owner"),
            ),
            title="invoices",
        ),
        "task": Resource(
            "task",
            "tasks",
            _attrs(
                ("id", "integer", Col("id"), False, ""),
                ("title", "string", Col("title"), False, ""),
                ("owner_id", "integer", Col("assignee_id"), True, "the assignee"),
                ("team_id", "integer", Via("assignee_id", "users", Col("team_id")), True, ""),
                ("created_by", "integer", Col("created_by"), True, ""),
                ("client_id", "integer", Col("client_id"), True, ""),
                ("deal_id", "integer", Col("deal_id"), True, ""),
            ),
            title="tasks",
        ),
        "plan": Resource(
            "plan",
            "plans",
            _attrs(
                ("id", "integer", Col("id"), False, ""),
                ("kpi", "string", Col("kpi"), False, "the KPI planned"),
                ("scope", "string", Col("scope"), False, "user or team"),
                ("user_id", "integer", Col("user_id"), True, "the planned user (null: a team)"),
                ("team_id", "integer", Col("team_id"), True, "the team, or the user's team"),
            ),
            actions=("read", "create", "update", "delete"),
            title="plans",
        ),
        "report": Resource(
            "report",
            None,
            _attrs(("name", "string", Col("name"), False, "the report's name")),
            actions=("read",),
            title="reports",
        ),
    }


# -- policy documents -----------------------------------------------------------------
@frozen
class Rule:
    """One rule of a policy document."""

    id: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    roles: tuple[str, ...] | None = None
    when: Any = True
    hide: tuple[str, ...] = ()
    description: str = ""
    source: str = ""

    def applies(self, role: str, action: str, resource: str) -> bool:
        """Whether this rule is about ``role`` doing ``action`` on ``resource`` at all."""
        return (
            (self.roles is None or role in self.roles or "*" in self.roles)
            and (action in self.actions or "*" in self.actions)
            and (resource in self.resources or "*" in self.resources)
        )


@frozen
class Quota:
    """A limit on how many distinct client cards a user may open per day."""

    id: str
    per_day: int
    resource: str = "client"
    roles: tuple[str, ...] | None = None
    description: str = ""
    source: str = ""


@frozen
class Policy:
    """A loaded policy document."""

    id: str
    rules: tuple[Rule, ...]
    quotas: tuple[Quota, ...] = ()
    title: str = ""
    source: str = ""


class PolicyError(CrmError):
    """A policy document that cannot be used (raised as a Plugin or Config error)."""


def parse_policy(document: Any, *, source: str, resources: Mapping[str, Resource]) -> Policy:
    """Check ``document`` against :data:`POLICY_SCHEMA` and the known resources.

    Raises :class:`PolicyError` naming the rule and the problem: an unknown
    resource, action, attribute, hidden field or subject attribute, a
    ``when`` that is not JSON Schema, or a condition of a rule for
    :data:`LIST_ACTIONS` that cannot be translated to SQL.
    """
    from .validation import schema_problems

    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise PolicyError(f"is not JSON: {exc}", field=source) from None
    problems = schema_problems(POLICY_SCHEMA, document)
    if problems:
        first = problems[0]
        raise PolicyError(first.reason, field=_join(source, first.field))
    rules = []
    for index, raw in enumerate(document.get("rules", [])):
        where = _join(source, f"rules.{index}")
        resource_names = (raw["resource"],) if isinstance(raw["resource"], str) else raw["resource"]
        rule = Rule(
            id=raw["id"],
            effect=raw["effect"],
            actions=tuple(raw["actions"]),
            resources=tuple(resource_names),
            roles=tuple(raw["roles"]) if "roles" in raw else None,
            when=raw.get("when", True),
            hide=tuple(raw.get("hide", ())),
            description=raw.get("description", ""),
            source=source,
        )
        _check_rule(rule, resources, where=f"{where} ({rule.id})")
        rules.append(rule)
    quotas = tuple(
        Quota(
            id=q["id"],
            per_day=q["per_day"],
            resource=q["resource"],
            roles=tuple(q["roles"]) if "roles" in q else None,
            description=q.get("description", ""),
            source=source,
        )
        for q in document.get("quotas", [])
    )
    return Policy(
        id=document.get("id", source),
        rules=tuple(rules),
        quotas=quotas,
        title=document.get("title", ""),
        source=source,
    )


def _join(source: str, path: str | None) -> str:
    return f"{source}.{path}" if path else source


def _check_rule(rule: Rule, resources: Mapping[str, Resource], *, where: str) -> None:
    from .validation import check_schema

    targets = list(resources.values()) if "*" in rule.resources else []
    for name in rule.resources:
        if name == "*":
            continue
        if name not in resources:
            known = ", ".join(sorted(resources))
            raise PolicyError(f"unknown resource {name!r} (known: {known})", field=where)
        targets.append(resources[name])
    for action in rule.actions:
        if action == "*":
            continue
        if not any(action in r.actions for r in targets):
            known = ", ".join(sorted({a for r in targets for a in r.actions}))
            raise PolicyError(
                f"unknown action {action!r} for {', '.join(r.name for r in targets)} "
                f"(actions: {known})",
                field=where,
            )
    for name in rule.hide:
        if rule.effect != "allow":
            raise PolicyError("only allow rules may hide fields", field=f"{where}.hide")
        bad = [r.name for r in targets if name not in r.fields]
        if bad:
            raise PolicyError(
                f"{bad[0]} has no field {name!r} that can be hidden "
                f"(fields: {', '.join(resources[bad[0]].fields) or 'none'})",
                field=f"{where}.hide",
            )
    template = resolve_subject(rule.when, TEMPLATE_SUBJECT, field=f"{where}.when")
    if isinstance(template, dict):
        try:
            check_schema(template, field=f"{where}.when")
        except ValidationError as exc:
            raise PolicyError(exc.message, field=exc.field) from None
    listed = "*" in rule.actions or any(a in LIST_ACTIONS for a in rule.actions)
    for resource in targets:
        try:
            root_node(template, TEMPLATE_SUBJECT, "read", resource)
        except Untranslatable as exc:
            if listed:
                raise PolicyError(
                    f"{exc} (rules for {' and '.join(LIST_ACTIONS)} are applied in SQL, "
                    "so their conditions must use the translatable keywords: "
                    f"{', '.join(TRANSLATABLE)})",
                    field=f"{where}.when",
                ) from None
        except UnknownAttribute as exc:
            raise PolicyError(str(exc), field=f"{where}.when") from None


#: the rule that allows the effects of an allowed action (:meth:`Access.on_behalf`)
BEHALF_RULE = Rule(
    id="on-behalf",
    effect="allow",
    actions=("*",),
    resources=("*",),
    description="the effects of an action the user was allowed",
)

#: the subject's attributes (what ``{"$subject": NAME}`` may name), with template values
TEMPLATE_SUBJECT: dict[str, Any] = {
    "id": 0,
    "login": "",
    "name": "",
    "role": "",
    "team_id": 0,
    "team_ids": [0],
    "active": True,
}


def resolve_subject(schema: Any, subject: Mapping[str, Any], *, field: str = "when") -> Any:
    """``schema`` with every ``{"$subject": NAME}`` replaced by the subject's attribute."""
    if isinstance(schema, dict):
        if set(schema) == {"$subject"}:
            name = schema["$subject"]
            if not isinstance(name, str) or name not in subject:
                known = ", ".join(subject)
                raise PolicyError(
                    f"unknown subject attribute {name!r} (known: {known})", field=field
                )
            return subject[name]
        return {k: resolve_subject(v, subject, field=field) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolve_subject(v, subject, field=field) for v in schema]
    return schema


# -- conditions as a tree -------------------------------------------------------------
class Untranslatable(Exception):
    """A keyword outside the translatable subset."""


class UnknownAttribute(Exception):
    """A condition names an attribute the resource does not have."""


@frozen
class Leaf:
    """One keyword applied to one attribute: ``minimum: 3`` on ``potential_score``."""

    attr: Attribute
    keyword: str
    value: Any


@frozen
class And:
    items: tuple[Node, ...]


@frozen
class Or:
    items: tuple[Node, ...]


@frozen
class Not:
    item: Node


@frozen
class Opaque:
    """A condition kept as JSON Schema, evaluated in Python only (single-record checks)."""

    schema: Any


Node = bool | Leaf | And | Or | Not | Opaque


def conj(items: Iterable[Node]) -> Node:
    out: list[Node] = []
    for item in items:
        if item is False:
            return False
        if item is True:
            continue
        out.extend(item.items if isinstance(item, And) else [item])
    if not out:
        return True
    return out[0] if len(out) == 1 else And(tuple(out))


def disj(items: Iterable[Node]) -> Node:
    out: list[Node] = []
    for item in items:
        if item is True:
            return True
        if item is False:
            continue
        out.extend(item.items if isinstance(item, Or) else [item])
    if not out:
        return False
    return out[0] if len(out) == 1 else Or(tuple(out))


def neg(item: Node) -> Node:
    if isinstance(item, bool):
        return not item
    if isinstance(item, Not):
        return item.item
    return Not(item)


def _combinators(schema: dict[str, Any], recurse: Callable[[Any], Node]) -> list[Node]:
    """allOf / anyOf / oneOf / not / if-then-else, whatever level they are at."""
    out: list[Node] = []
    if "allOf" in schema:
        # every branch is translated (a list, not a generator): conj and disj stop at the
        # first False or True, and a branch they skip must still be checked when loaded
        out.append(conj([recurse(s) for s in schema["allOf"]]))
    if "anyOf" in schema:
        out.append(disj([recurse(s) for s in schema["anyOf"]]))
    if "oneOf" in schema:
        branches = [recurse(s) for s in schema["oneOf"]]
        out.append(
            disj(
                conj([b, *(neg(o) for j, o in enumerate(branches) if j != i)])
                for i, b in enumerate(branches)
            )
        )
    if "not" in schema:
        out.append(neg(recurse(schema["not"])))
    if "if" in schema:
        cond = recurse(schema["if"])
        then = recurse(schema["then"]) if "then" in schema else True
        other = recurse(schema["else"]) if "else" in schema else True
        out.append(disj([conj([cond, then]), conj([neg(cond), other])]))
    return out


_COMBINATORS = frozenset({"allOf", "anyOf", "oneOf", "not", "if", "then", "else"})


def root_node(schema: Any, subject: Mapping[str, Any], action: str, resource: Resource) -> Node:
    """The condition of ``schema`` over ``{subject, action, resource}``, subject folded away."""
    from .validation import _validator

    if isinstance(schema, bool):
        return schema
    parts: list[Node] = []
    for key, value in schema.items():
        if key in ANNOTATIONS or key in _COMBINATORS:
            continue
        if key == "properties":
            for name, sub in value.items():
                if name == "resource":
                    parts.append(resource_node(sub, resource))
                elif name in ("subject", "action"):
                    instance = dict(subject) if name == "subject" else action
                    validator = _validator(json.dumps(sub, sort_keys=True))
                    parts.append(bool(validator.is_valid(instance)))
                # any other name is not in the document: its schema does not apply
        elif key == "required":
            parts.append(set(value) <= {"subject", "action", "resource"})
        elif key == "type":
            parts.append("object" in ([value] if isinstance(value, str) else value))
        else:
            raise Untranslatable(f"the keyword {key!r} at the top of 'when' cannot be used")
    parts.extend(_combinators(schema, lambda s: root_node(s, subject, action, resource)))
    return conj(parts)


def resource_node(schema: Any, resource: Resource) -> Node:
    """The condition of ``schema`` over one record of ``resource``."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, dict):
        raise Untranslatable(f"{schema!r} is not a schema")
    parts: list[Node] = []
    for key, value in schema.items():
        if key in ANNOTATIONS or key in _COMBINATORS:
            continue
        if key == "properties":
            for name, sub in value.items():
                attr = resource.attributes.get(name)
                if attr is None:
                    known = ", ".join(resource.attributes)
                    raise UnknownAttribute(
                        f"{resource.name} has no attribute {name!r} (attributes: {known})"
                    )
                parts.append(attribute_node(sub, attr))
        elif key == "required":
            unknown = [n for n in value if n not in resource.attributes]
            if unknown:
                known = ", ".join(resource.attributes)
                raise UnknownAttribute(
                    f"{resource.name} has no attribute {unknown[0]!r} (attributes: {known})"
                )
            parts.append(True)  # every attribute of a record is present (NULL is null)
        elif key == "type":
            parts.append("object" in ([value] if isinstance(value, str) else value))
        else:
            raise Untranslatable(f"the keyword {key!r} on a {resource.name} cannot be translated")
    parts.extend(_combinators(schema, lambda s: resource_node(s, resource)))
    return conj(parts)


_LEAF_KEYWORDS = frozenset(TRANSLATABLE) - _COMBINATORS


def attribute_node(schema: Any, attr: Attribute) -> Node:
    """The condition of ``schema`` over one attribute's value."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, dict):
        raise Untranslatable(f"{schema!r} is not a schema")
    parts: list[Node] = []
    for key, value in schema.items():
        if key in ANNOTATIONS or key in _COMBINATORS:
            continue
        if key not in _LEAF_KEYWORDS:
            raise Untranslatable(f"the keyword {key!r} (on {attr.name}) cannot be translated")
        parts.append(_leaf(attr, key, value))
    parts.extend(_combinators(schema, lambda s: attribute_node(s, attr)))
    return conj(parts)


def _leaf(attr: Attribute, keyword: str, value: Any) -> Node:
    """A leaf, or its constant when the attribute's type decides it (``minimum`` on text)."""
    numeric = attr.type in ("integer", "number")
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") and not numeric:
        return True  # only numbers are constrained
    if keyword in ("minLength", "maxLength") and attr.type != "string":
        return True  # only strings are constrained
    if keyword == "const":
        if value is None:
            return Leaf(attr, "null", None) if attr.nullable else False
        return Leaf(attr, "const", value) if _fits(value, attr.type) else False
    if keyword == "enum":
        kept = [v for v in value if v is not None and _fits(v, attr.type)]
        nodes: list[Node] = [Leaf(attr, "enum", tuple(kept))] if kept else []
        if attr.nullable and any(v is None for v in value):
            nodes.append(Leaf(attr, "null", None))
        return disj(nodes)
    if keyword == "type":
        names = [value] if isinstance(value, str) else list(value)
        return disj(_type_node(attr, name) for name in names)
    return Leaf(attr, keyword, value)


def _type_node(attr: Attribute, name: str) -> Node:
    present = Leaf(attr, "present", None) if attr.nullable else True
    if name == "null":
        return Leaf(attr, "null", None) if attr.nullable else False
    if name == attr.type or (name == "number" and attr.type == "integer"):
        return present
    if name == "integer" and attr.type == "number":
        return Leaf(attr, "integral", None)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits(value: Any, typ: str) -> bool:
    """Whether a constant can equal a value of an attribute of JSON type ``typ``."""
    if typ == "boolean":
        return isinstance(value, bool)
    if typ == "string":
        return isinstance(value, str)
    if typ == "integer":  # and within 64 bits, as every SQL integer is
        return _is_number(value) and float(value).is_integer() and -(2**63) <= value < 2**63
    return _is_number(value)


# -- evaluation in Python ---------------------------------------------------------------
Check = Callable[[Mapping[str, Any]], bool]


def compile_node(node: Node, root: Callable[[Mapping[str, Any]], Any] | None = None) -> Check:
    """A function of a record view (attribute name -> value) that gives ``node``'s verdict."""
    if node is True:
        return lambda r: True
    if node is False:
        return lambda r: False
    if isinstance(node, And):
        fs = [compile_node(i, root) for i in node.items]
        return lambda r: all(f(r) for f in fs)
    if isinstance(node, Or):
        fs = [compile_node(i, root) for i in node.items]
        return lambda r: any(f(r) for f in fs)
    if isinstance(node, Not):
        f = compile_node(node.item, root)
        return lambda r: not f(r)
    if isinstance(node, Opaque):
        from .validation import _validator

        validator = _validator(json.dumps(node.schema, sort_keys=True))
        make = root or (lambda r: r)
        return lambda r: bool(validator.is_valid(make(r)))
    assert isinstance(node, Leaf)
    return _leaf_check(node)


def _leaf_check(leaf: Leaf) -> Check:
    name, kw, v = leaf.attr.name, leaf.keyword, leaf.value
    if kw == "null":
        return lambda r: r.get(name) is None
    if kw == "present":
        return lambda r: r.get(name) is not None
    if kw == "integral":
        return lambda r: _is_number(r.get(name)) and float(r[name]).is_integer()
    if kw == "const":
        return lambda r: json_equal(r.get(name), v)
    if kw == "enum":
        return lambda r: any(json_equal(r.get(name), x) for x in v)
    if kw == "minimum":
        return lambda r: not _is_number(x := r.get(name)) or x >= v
    if kw == "maximum":
        return lambda r: not _is_number(x := r.get(name)) or x <= v
    if kw == "exclusiveMinimum":
        return lambda r: not _is_number(x := r.get(name)) or x > v
    if kw == "exclusiveMaximum":
        return lambda r: not _is_number(x := r.get(name)) or x < v
    if kw == "minLength":
        return lambda r: not isinstance(x := r.get(name), str) or len(x) >= v
    if kw == "maxLength":
        return lambda r: not isinstance(x := r.get(name), str) or len(x) <= v
    raise AssertionError(kw)  # pragma: no cover - _leaf makes no other keywords


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema's ``const`` means it (``1 == 1.0``, ``true != 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if a is None or b is None:
        return a is None and b is None
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return bool(a == b)


# -- translation to SQL -------------------------------------------------------------------
def to_sql(
    node: Node, table: Any, tables: Mapping[str, Table], *, positive: bool = True
) -> ColumnElement[bool]:
    """``node`` as a SQL condition on ``table`` with JSON Schema's verdict on every row.

    Under an even number of NOTs (``positive``) a comparison with NULL may
    stay NULL: SQL keeps only rows whose condition is true, and Kleene logic
    never turns an unknown into a true. Under a NOT every leaf is made
    two-valued (``x IS NOT NULL AND x = 5``), so the negation of a NULL
    comparison cannot drop a row that JSON Schema keeps.
    """
    if node is True:
        return true()
    if node is False:
        return false()
    if isinstance(node, And):
        return and_(*(to_sql(i, table, tables, positive=positive) for i in node.items))
    if isinstance(node, Or):
        return or_(*(to_sql(i, table, tables, positive=positive) for i in node.items))
    if isinstance(node, Not):
        return not_(to_sql(node.item, table, tables, positive=not positive))
    if isinstance(node, Opaque):
        raise Untranslatable("a condition outside the translatable subset")
    return _leaf_sql(node, node.attr.source, table, tables, guard=not positive)


def _leaf_sql(
    leaf: Leaf, source: Col | Via, table: Any, tables: Mapping[str, Table], *, guard: bool
) -> ColumnElement[bool]:
    nullable = leaf.attr.nullable
    if isinstance(source, Via):
        fk = table.c[source.fk]
        target = tables[source.table]
        # inside the subquery only rows whose condition is true matter: no guard needed
        inner = select(target.c.id).where(
            _leaf_sql(leaf, source.target, target, tables, guard=False)
        )
        found: ColumnElement[bool] = fk.in_(inner)  # ids are never NULL: only a NULL fk is unknown
        if source.fk_nullable:
            if _leaf_check(leaf)({}):  # what the leaf says of a missing value (NULL)
                return or_(fk.is_(None), found)
            if guard:
                found = and_(fk.isnot(None), found)
        return found
    col: ColumnElement[Any] = table.c[source.name]
    kw, v = leaf.keyword, leaf.value
    if kw == "null":
        return col.is_(None)
    if kw == "present":
        return col.isnot(None)
    if kw == "integral":
        # a float of magnitude 2**53 or more is integral; below that a BIGINT holds it (an
        # INTEGER does not: PostgreSQL fails on a score or amount >= 2**31, SQLite saturates)
        big = func.abs(col) >= literal(2.0**53)
        return and_(col.isnot(None), case((big, true()), else_=col == sql_cast(col, BigInteger)))
    if kw in ("const", "enum"):
        values = [v] if kw == "const" else list(v)
        values = [_sql_value(x, leaf.attr.type) for x in values]
        cond = col == values[0] if len(values) == 1 else col.in_(values)
        return and_(col.isnot(None), cond) if nullable and guard else cond
    if kw in ("minLength", "maxLength"):
        length = func.length(col)
        cond = length >= v if kw == "minLength" else length <= v
    else:
        bound = _sql_value(v, leaf.attr.type)
        cond = {
            "minimum": col >= bound,
            "maximum": col <= bound,
            "exclusiveMinimum": col > bound,
            "exclusiveMaximum": col < bound,
        }[kw]
    return or_(col.is_(None), cond) if nullable else cond


def _sql_value(value: Any, typ: str) -> Any:
    """A constant as a parameter of a SQL type that holds it (the column's may not)."""
    if not _is_number(value):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return literal(float(value))  # no 64-bit integer holds it: compared as a float
    if _fits(value, "integer") and typ == "integer":
        return literal(int(value), BigInteger)  # 3e9 against an INTEGER column is no error
    return literal(value)


# -- the engine -------------------------------------------------------------------------
@frozen
class Decision:
    """A decision and why: the rules that allowed and those that denied."""

    allowed: bool
    action: str
    resource: str
    allowed_by: tuple[str, ...] = ()
    denied_by: tuple[str, ...] = ()
    applicable: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        """The decision in words."""
        if self.denied_by:
            return f"denied by rule {', '.join(repr(r) for r in self.denied_by)}"
        if self.allowed_by:
            return f"allowed by rule {', '.join(repr(r) for r in self.allowed_by)}"
        if self.applicable:
            return f"no rule allows it (rules considered: {', '.join(self.applicable)})"
        return "no rule allows it (deny by default)"


@frozen
class Compiled:
    """The rules for one subject, action and resource, folded and ready to apply."""

    action: str
    resource: Resource
    allow: tuple[tuple[Rule, Node], ...]
    deny: tuple[tuple[Rule, Node], ...]

    @cached_property
    def node(self) -> Node:
        """(any allow) and not (any deny), as one condition."""
        return conj([disj(n for _, n in self.allow), neg(disj(n for _, n in self.deny))])

    @property
    def applies(self) -> bool:
        """Whether any allow rule is about this subject, action and resource at all."""
        return bool(self.allow)

    @cached_property
    def hidden(self) -> frozenset[str]:
        """Fields hidden by every allow rule that may match (a field any rule shows is shown)."""
        live = [rule.hide for rule, node in self.allow if node is not False]
        if not live:
            return frozenset()
        return frozenset.intersection(*(frozenset(h) for h in live))


class Policies:
    """Every loaded policy of a deployment: the resources, rules and read quotas."""

    def __init__(self, resources: dict[str, Resource], policies: Sequence[Policy]) -> None:
        self.resources = resources
        self.policies = tuple(policies)
        rules: dict[str, Rule] = {}
        for policy in self.policies:
            for rule in policy.rules:
                rules[rule.id] = rule  # later documents (the deployment's files) replace
        self.rules = tuple(rules.values())
        quotas: dict[str, Quota] = {}
        for policy in self.policies:
            for quota in policy.quotas:
                quotas[quota.id] = quota
        self.quotas = tuple(quotas.values())

    def resource(self, name: str) -> Resource:
        """The resource called ``name``; the error lists the known ones."""
        try:
            return self.resources[name]
        except KeyError:
            known = ", ".join(sorted(self.resources))
            raise ValidationError(
                f"unknown resource {name!r} (known: {known})", field="resource"
            ) from None

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id; raises :class:`NotFound`."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise NotFound(f"no policy rule {rule_id!r}", field="rule")

    def for_user(self, session: Session) -> Access:
        """The policies as they apply to the session's acting user."""
        return Access(self, session)


def subject_of(session: Session) -> dict[str, Any]:
    """The acting user as policies see it: ``id``, ``login``, ``role``, ``team_ids`` ..."""
    user = session.user
    team_ids = session.teams.subtree_ids(user.team_id) if user.team_id is not None else []
    return {
        "id": user.id,
        "login": user.login,
        "name": user.name,
        "role": user.role.value,
        "team_id": user.team_id,
        "team_ids": sorted(team_ids),
        "active": user.active,
    }


class Access:
    """The policies as they apply to one acting user (``session.access``)."""

    def __init__(self, policies: Policies, session: Session) -> None:
        self.policies = policies
        self.session = session
        self._compiled: dict[tuple[str, str], Compiled] = {}
        self._checks: dict[tuple[str, str, bool], Check] = {}
        self._where: dict[tuple[str, str, Any, bool], ColumnElement[bool]] = {}
        self._behalf: list[str] = []

    @contextlib.contextmanager
    def on_behalf(self, reason: str) -> Iterator[None]:
        """Do the effects of an allowed action without checking each of them.

        A won deal makes its client a customer; a logged call moves its deal
        along. The user was allowed the action; its effects, defined by the
        pipeline's rules or a plugin, are not theirs to be refused one by one
        (a manager may win their deal on a client owned by someone else, and
        the client still becomes a customer). Inside the block every decision
        allows; the audit log's entries name ``reason``. Use it only for such
        effects, never for what the user asked for.
        """
        self._behalf.append(reason)
        try:
            yield
        finally:
            self._behalf.pop()

    @property
    def behalf(self) -> str | None:
        """The reason of the innermost :meth:`on_behalf` block, or None outside one."""
        return self._behalf[-1] if self._behalf else None

    @cached_property
    def subject(self) -> dict[str, Any]:
        """The acting user's attributes (what ``{"$subject": NAME}`` resolves to)."""
        return subject_of(self.session)

    def compiled(self, action: str, resource: str) -> Compiled:
        """The applicable rules, with the subject resolved and folded away."""
        key = (action, resource)
        found = self._compiled.get(key)
        if found is None:
            res = self.policies.resource(resource)
            if action not in res.actions:
                raise ValidationError(
                    f"unknown action {action!r} on {resource} (actions: {', '.join(res.actions)})",
                    field="action",
                )
            allow: list[tuple[Rule, Node]] = []
            deny: list[tuple[Rule, Node]] = []
            role = self.subject["role"]
            for rule in self.policies.rules:
                if not rule.applies(role, action, resource):
                    continue
                when = resolve_subject(rule.when, self.subject, field=f"{rule.id}.when")
                try:
                    node = root_node(when, self.subject, action, res)
                except Untranslatable:
                    node = Opaque(when)
                (allow if rule.effect == "allow" else deny).append((rule, node))
            found = self._compiled[key] = Compiled(action, res, tuple(allow), tuple(deny))
        if self._behalf:  # the effects of an allowed action (see on_behalf)
            return Compiled(action, found.resource, ((BEHALF_RULE, True),), ())
        return found

    # -- lists --------------------------------------------------------------
    def where(self, action: str, resource: str, table: Table | None = None) -> ColumnElement[bool]:
        """The SQL condition selecting the records of ``resource`` the user may ``action``.

        ``table`` defaults to the resource's table (pass an alias to filter a
        join). Raises :class:`PermissionDenied` when no rule is about this
        user, action and resource at all.
        """
        compiled = self.require_any(action, resource)
        res = compiled.resource
        tables = self.session.tables
        if res.table is None:
            raise ValidationError(f"{resource} has no records to filter", field="resource")
        target = table if table is not None else tables[res.table]
        key = (action, resource, target, bool(self._behalf))
        found = self._where.get(key)  # clauses are immutable: one per session serves every query
        if found is not None:
            return found
        try:
            found = self._where[key] = to_sql(compiled.node, target, tables)
            return found
        except Untranslatable:  # only rules for single-record actions may be untranslatable
            opaque = [r.id for r, n in (*compiled.allow, *compiled.deny) if _has_opaque(n)]
            raise ValidationError(
                f"{action} on {resource} is decided record by record: rule "
                f"{', '.join(repr(r) for r in opaque)} uses JSON Schema beyond what SQL can "
                f"filter, which only {' and '.join(LIST_ACTIONS)} rules must avoid",
                field="action",
            ) from None

    def filter(self, query: Any, action: str, resource: str, table: Table | None = None) -> Any:
        """``query`` with :meth:`where` added (nothing when every record is allowed)."""
        compiled = self.require_any(action, resource)
        if compiled.node is True:
            return query
        return query.where(self.where(action, resource, table))

    def require_any(self, action: str, resource: str) -> Compiled:
        """The compiled rules; :class:`PermissionDenied` when none could allow ``action``."""
        compiled = self.compiled(action, resource)
        if not compiled.applies:
            user = self.session.user
            self.session.audit(action, resource, allowed=False, detail={"reason": "no rule"})
            raise PermissionDenied(
                f"user {user.login!r} ({user.role.value}) may not {action} "
                f"{compiled.resource.title or resource}: no policy rule allows it",
                field="access",
            )
        return compiled

    def may(self, action: str, resource: str) -> bool:
        """Whether some rule lets this user ``action`` at least some ``resource`` records."""
        compiled = self.compiled(action, resource)
        return compiled.applies and compiled.node is not False

    def hidden(self, action: str, resource: str) -> frozenset[str]:
        """The fields of ``resource`` hidden from this user for ``action``."""
        return self.compiled(action, resource).hidden

    # -- single records ---------------------------------------------------------
    def allows(self, action: str, resource: str, record: Mapping[str, Any]) -> bool:
        """Whether the user may ``action`` the record (its view: attribute -> value)."""
        key = (action, resource, bool(self._behalf))
        check = self._checks.get(key)
        if check is None:
            compiled = self.compiled(action, resource)
            check = self._checks[key] = compile_node(compiled.node, self._root(action))
        return check(record)

    def decide(self, action: str, resource: str, record: Mapping[str, Any]) -> Decision:
        """The decision on one record, with the rules that made it."""
        compiled = self.compiled(action, resource)
        root = self._root(action)
        allowed_by = tuple(r.id for r, n in compiled.allow if compile_node(n, root)(record))
        denied_by = tuple(r.id for r, n in compiled.deny if compile_node(n, root)(record))
        return Decision(
            allowed=bool(allowed_by) and not denied_by,
            action=action,
            resource=resource,
            allowed_by=allowed_by,
            denied_by=denied_by,
            applicable=tuple(r.id for r, _ in (*compiled.allow, *compiled.deny)),
        )

    def require(
        self, action: str, resource: str, record: Mapping[str, Any], *, what: str | None = None
    ) -> None:
        """Raise :class:`PermissionDenied` (and audit it) unless the user may ``action`` it."""
        if self.allows(action, resource, record):
            return
        decision = self.decide(action, resource, record)
        user = self.session.user
        ids = [record["id"]] if isinstance(record.get("id"), int) else None
        self.session.audit(action, resource, ids=ids, allowed=False)
        label = what or (f"{resource} #{record['id']}" if ids else f"this {resource}")
        raise PermissionDenied(
            f"user {user.login!r} ({user.role.value}) may not {action} {label}: {decision.reason}",
            field="access",
        )

    # -- read quotas ----------------------------------------------------------------
    def quota(self) -> Quota | None:
        """The tightest daily quota on opening client cards that applies to this user."""
        role = self.subject["role"]
        found = [
            q for q in self.policies.quotas if q.roles is None or role in q.roles or "*" in q.roles
        ]
        return min(found, key=lambda q: q.per_day) if found else None

    def count_read(self, client_id: int) -> None:
        """Count an opened client card toward today's quota; refuse it past the quota.

        A card opened again the same day does not count twice. The refusal is
        audited and, once the session has ended, the heads are told
        (``crmkit_read_quota_exceeded``), at most once per user and day.
        """
        quota = self.quota()
        session = self.session
        if quota is None or self._behalf or client_id in session.pending_reads:
            return
        reads = session.tables["access_reads"]
        day = dt.datetime.now(session.crm.tz).date()
        mine = (reads.c.user_id == session.user.id) & (reads.c.day == day)
        conn = session.connection
        if conn.execute(select(reads.c.day).where(mine, reads.c.client_id == client_id)).first():
            return
        opened = conn.execute(select(func.count()).select_from(reads).where(mine)).scalar_one()
        if opened + len(session.pending_reads) >= quota.per_day:
            session.audit(
                "read",
                "client",
                ids=[client_id],
                allowed=False,
                detail={"quota": quota.id, "per_day": quota.per_day},
            )
            user = session.user
            session.after_end.append(lambda crm: notify_quota(crm, user, quota, day))
            raise PermissionDenied(
                f"user {user.login!r} has opened {quota.per_day} client cards today, the most "
                f"the quota {quota.id!r} allows; the head has been told",
                field="access",
            )
        session.pending_reads.add(client_id)

    def checker(self, action: str, resource: str) -> Check | None:
        """The per-record check for bulk work, or None when every record is allowed.

        Raises :class:`PermissionDenied` when no rule could allow ``action`` at
        all. A bulk import calls the check on each row's view
        (:meth:`view_maker`): a compiled function, no query per row.
        """
        compiled = self.require_any(action, resource)
        if compiled.node is True:
            return None
        return lambda view: self.allows(action, resource, view)

    def view_maker(self, resource: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        """A function of column values to the record's view, for many records at once.

        Attributes stored elsewhere (the owner's team) are looked up once per
        distinct key and remembered, so a batch of rows by a few owners costs
        a few queries.
        """
        res = self.policies.resource(resource)
        tables = self.session.tables
        cache: dict[tuple[str, Any], dict[str, Any] | None] = {}

        def value(source: Col | Via, values: Mapping[str, Any]) -> Any:
            if isinstance(source, Col):
                return values.get(source.name)
            key = values.get(source.fk)
            if key is None:
                return None
            if (source.table, key) not in cache:
                target = tables[source.table]
                row = self.session.connection.execute(
                    select(target).where(target.c.id == key)
                ).first()
                cache[(source.table, key)] = None if row is None else dict(row._mapping)
            found = cache[(source.table, key)]
            return None if found is None else value(source.target, found)

        attributes = list(res.attributes.items())
        return lambda values: {name: plain(value(a.source, values)) for name, a in attributes}

    def _root(self, action: str) -> Callable[[Mapping[str, Any]], Any]:
        subject = self.subject
        return lambda record: {"subject": subject, "action": action, "resource": dict(record)}

    # -- views of records -----------------------------------------------------------
    def view(self, resource: str, record_id: int) -> dict[str, Any] | None:
        """The stored record's attributes as policies see them (None: no such record)."""
        return self.views(resource, [record_id]).get(record_id)

    def views(self, resource: str, record_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The views of many stored records, by id, in one query (bulk work)."""
        res = self.policies.resource(resource)
        if res.table is None:
            raise ValidationError(f"{resource} has no stored records", field="resource")
        ids = sorted(set(record_ids))
        if not ids:
            return {}
        tables = self.session.tables
        table = tables[res.table]
        columns = [
            _view_column(a.source, table, tables).label(n) for n, a in res.attributes.items()
        ]
        if "id" not in res.attributes:
            columns.append(table.c.id.label("id"))
        query = select(*columns).where(table.c.id.in_(ids))
        return {
            row.id: {k: plain(v) for k, v in row._mapping.items()}
            for row in self.session.connection.execute(query)
        }

    def view_of(self, resource: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes of a record about to be written, from its column values."""
        res = self.policies.resource(resource)
        tables = self.session.tables
        out = {}
        for name, attr in res.attributes.items():
            out[name] = plain(self._value(attr.source, values, tables))
        return out

    def _value(
        self, source: Col | Via, values: Mapping[str, Any], tables: Mapping[str, Table]
    ) -> Any:
        if isinstance(source, Col):
            return values.get(source.name)
        key = values.get(source.fk)
        if key is None:
            return None
        target = tables[source.table]
        row = self.session.connection.execute(select(target).where(target.c.id == key)).first()
        return None if row is None else self._value(source.target, dict(row._mapping), tables)


def notify_quota(crm: CRM, user: Any, quota: Quota, day: dt.date) -> None:
    """Tell the heads (``crmkit_read_quota_exceeded``) once per user and day."""
    from .model import Role

    with crm.session() as s:
        events = s.tables["events"]
        told = s.connection.execute(
            select(events.c.id).where(
                events.c.entity == "user",
                events.c.entity_id == user.id,
                events.c.action == "read_quota_exceeded",
                events.c.data["day"].as_string() == day.isoformat(),
            )
        ).first()
        if told is not None:
            return
        s.record(
            "user", user.id, "read_quota_exceeded", {"day": day.isoformat(), "quota": quota.id}
        )
        teams: list[int] = []
        team_id = user.team_id
        parents = {t.id: t.parent_id for t in s.teams.list()}
        while team_id is not None and team_id not in teams:
            teams.append(team_id)
            team_id = parents.get(team_id)
        heads = [u for u in s.users.list(role=Role.HEAD, active=True) if u.team_id in teams]
        if not heads:
            heads = [s.user]
    crm.plugins.read_quota_exceeded(crm=crm, user=user, quota=quota, heads=heads)


def _has_opaque(node: Node) -> bool:
    if isinstance(node, Opaque):
        return True
    if isinstance(node, And | Or):
        return any(_has_opaque(i) for i in node.items)
    if isinstance(node, Not):
        return _has_opaque(node.item)
    return False


def _view_column(source: Col | Via, table: Any, tables: Mapping[str, Table]) -> Any:
    if isinstance(source, Col):
        return table.c[source.name]
    target = tables[source.table].alias()
    return (
        select(_view_column(source.target, target, tables))
        .where(target.c.id == table.c[source.fk])
        .scalar_subquery()
    )


def plain(value: Any) -> Any:
    """A stored value as JSON sees it (Decimal -> int or float)."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


# -- loading ----------------------------------------------------------------------------
def load_policies(crm: CRM) -> Policies:
    """The resources and policies of a deployment: plugins' first, then ``[access] policies``."""
    resources = core_resources()
    for item, plugin in crm.plugins.access_resources():
        _add_resource(resources, item, plugin)
    policies: list[Policy] = []
    seen: dict[str, str] = {}
    for document, plugin in crm.plugins.access_policies():
        try:
            policy = parse_policy(document, source=f"{plugin}", resources=resources)
        except PolicyError as exc:
            raise PluginError(
                f"{plugin}: a policy is invalid: {exc.message}", field=exc.field
            ) from None
        for rule in policy.rules:
            if rule.id in seen:
                raise PluginError(
                    f"policy rule {rule.id!r} is registered twice ({seen[rule.id]} and {plugin})",
                    field="access",
                )
            seen[rule.id] = str(plugin)
        policies.append(policy)
    for index, name in enumerate(crm.config.access_policies):
        path = (crm.config.root / name).resolve()
        where = f"access.policies.{index}"
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read policy file {path}: {exc.strerror}", field=where
            ) from None
        try:
            policies.append(parse_policy(text, source=name, resources=resources))
        except PolicyError as exc:
            raise ConfigError(f"{exc.message} (in {path})", field=exc.field) from None
    return Policies(resources, policies)


def _add_resource(resources: dict[str, Resource], item: Any, plugin: str | None) -> None:
    if not isinstance(item, Resource):
        raise PluginError(
            f"{plugin}: crmkit_access_resources must return crmkit.core.access.Resource "
            f"objects, not {item!r}",
            field="access",
        )
    for attr in item.attributes.values():
        if attr.type not in _ATTR_TYPES:
            raise PluginError(
                f"{plugin}: attribute {attr.name!r} of {item.name!r} has type {attr.type!r} "
                f"(types: {', '.join(_ATTR_TYPES)})",
                field="access",
            )
    existing = resources.get(item.name)
    if existing is None:
        resources[item.name] = item
        return
    clash = set(item.attributes) & set(existing.attributes)
    if clash:
        raise PluginError(
            f"{plugin}: resource {item.name!r} already has the attribute {sorted(clash)[0]!r}",
            field="access",
        )
    resources[item.name] = Resource(
        name=existing.name,
        table=existing.table,
        attributes={**existing.attributes, **item.attributes},
        actions=tuple(dict.fromkeys([*existing.actions, *item.actions])),
        fields=tuple(dict.fromkeys([*existing.fields, *item.fields])),
        title=existing.title,
        plugin=existing.plugin,
    )


__all__ = [
    "CORE_ACTIONS",
    "LIST_ACTIONS",
    "POLICY_SCHEMA",
    "TRANSLATABLE",
    "Access",
    "Attribute",
    "Col",
    "Decision",
    "Policies",
    "Policy",
    "PolicyError",
    "Quota",
    "Resource",
    "Rule",
    "Via",
    "core_resources",
    "load_policies",
    "parse_policy",
]
