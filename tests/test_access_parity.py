"""Parity of the access policy engine: SQL pushdown, compiled Python and JSON Schema agree.

Random policies within the translatable subset (:data:`crmkit.core.access.TRANSLATABLE`),
random users and random records (NULLs everywhere a column allows them, integral
and non-integral scores, owners without a team, contacts two hops from their
owner's team): the ids the SQL condition of :meth:`Access.where` selects, the
records :meth:`Access.allows` and :meth:`Access.decide` allow, and the records
the ``jsonschema`` library itself validates (the oracle, with allow and deny
combined as the engine documents) are the same set. Runs on SQLite and on
PostgreSQL (``CRMKIT_TEST_DATABASE=postgresql``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from sqlalchemy import insert, select

from crmkit.core.access import (
    Access,
    Policies,
    PolicyError,
    core_resources,
    parse_policy,
    resolve_subject,
    subject_of,
)
from crmkit.core.errors import PermissionDenied

RESOURCES = core_resources()
ROLES = ("admin", "head", "manager", "marketer")
LIST_ACTIONS = ("read", "export")
NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)

#: teams (name, parent) and users (login, role, team) of every deployment of this module
TEAMS = (("sales", None), ("east", "sales"), ("west", None))
USERS = (
    ("anna", "manager", "east"),
    ("bob", "manager", "west"),
    ("lone", "manager", None),  # a manager without a team
    ("boss", "head", "sales"),  # heads the sales department: sales and east
    ("wendy", "head", "west"),
    ("mara", "marketer", None),
)
LOGINS = ("admin", *(u[0] for u in USERS))

# -- values: the right JSON type for an attribute, and every wrong one ---------------------
STRINGS = ("", "a", "A", "ab", "abc", "é", "日本語", "a b ", "1", "1.0", "true", "null", "company")
NUMBERS = (0, 1, 1.0, -1, 2, 2.5, 3, 3.0, 4, 7, -0.5, 0.25, 100, 99.5, 1e-9)
# beyond 32 bits, 53 bits (every float integral) and 64 bits (no SQL integer holds them)
HUGE = (2**31, 3e9, 2.0**53 + 2, 2**63, -(2**63) - 1, 1e20, 10**20)
IDS = st.integers(min_value=-1, max_value=9)  # users, teams and records have small ids
SCALARS = st.one_of(
    st.sampled_from(STRINGS),
    st.sampled_from(NUMBERS),
    st.sampled_from(HUGE),
    IDS,
    st.booleans(),
    st.none(),
)
SUBJECT_REFS = st.sampled_from(
    [{"$subject": n} for n in ("id", "team_id", "team_ids", "role", "login")]
)
VALUES = st.one_of(SCALARS, SCALARS, SUBJECT_REFS)
BOUNDS = st.one_of(
    st.sampled_from(NUMBERS),
    st.sampled_from(HUGE),
    IDS,
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.just({"$subject": "id"}),
)
TYPES = ("null", "boolean", "integer", "number", "string", "object", "array")


def merge(parts: list[Any]) -> Any:
    """Schemas side by side in one object (``properties`` joined; ``true`` adds nothing)."""
    out: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, bool):
            if part is False:
                return False
            continue
        for key, value in part.items():
            if key == "properties" and key in out:
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


def combinators(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """allOf / anyOf / oneOf / not / if-then-else over ``inner``, and several keywords at once."""
    branches = st.lists(inner, min_size=1, max_size=3)

    def if_then_else(parts: tuple[Any, Any, Any]) -> dict[str, Any]:
        cond, then, other = parts
        out = {"if": cond}
        if then is not None:
            out["then"] = then
        if other is not None:
            out["else"] = other
        return out

    return st.one_of(
        branches.map(lambda xs: {"allOf": xs}),
        branches.map(lambda xs: {"anyOf": xs}),
        branches.map(lambda xs: {"oneOf": xs}),
        inner.map(lambda x: {"not": x}),
        st.tuples(inner, st.none() | inner, st.none() | inner).map(if_then_else),
        st.lists(inner, min_size=2, max_size=3).map(merge),
    )


def attribute_schemas() -> st.SearchStrategy[Any]:
    """A schema for one attribute's value."""
    type_names = st.sampled_from(TYPES)
    leaf = st.one_of(
        VALUES.map(lambda v: {"const": v}),
        st.lists(VALUES, max_size=4).map(lambda vs: {"enum": vs}),
        st.just({"enum": {"$subject": "team_ids"}}),
        type_names.map(lambda t: {"type": t}),
        st.lists(type_names, min_size=1, max_size=3, unique=True).map(lambda ts: {"type": ts}),
        st.tuples(
            st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
            BOUNDS,
        ).map(lambda kv: {kv[0]: kv[1]}),
        st.tuples(st.sampled_from(["minLength", "maxLength"]), st.integers(0, 4)).map(
            lambda kv: {kv[0]: kv[1]}
        ),
        st.booleans(),
        st.just({}),
    )
    return st.recursive(leaf, combinators, max_leaves=5)


ATTRIBUTE = attribute_schemas()


def resource_schemas(resource: str) -> st.SearchStrategy[Any]:
    """A schema for a record of ``resource``: its attributes, ``required`` ones, combinators."""
    names = st.sampled_from(sorted(RESOURCES[resource].attributes))
    leaf = st.one_of(
        st.dictionaries(names, ATTRIBUTE, min_size=1, max_size=3).map(lambda d: {"properties": d}),
        st.dictionaries(names, ATTRIBUTE, min_size=1, max_size=2).map(lambda d: {"properties": d}),
        st.lists(names, min_size=1, max_size=3, unique=True).map(lambda r: {"required": r}),
        st.sampled_from([{"type": "object"}, {"type": ["null", "object"]}, {"type": "array"}]),
        st.booleans(),
    )
    return st.recursive(leaf, combinators, max_leaves=4)


SUBJECT_CLAUSES = st.one_of(
    st.sampled_from(ROLES).map(lambda r: {"properties": {"role": {"const": r}}}),
    st.lists(st.sampled_from(ROLES), max_size=3).map(
        lambda rs: {"properties": {"role": {"enum": rs}}}
    ),
    st.one_of(st.none(), st.integers(1, 4)).map(
        lambda t: {"properties": {"team_id": {"const": t}}}
    ),
    st.integers(1, 4).map(lambda t: {"properties": {"team_ids": {"contains": {"const": t}}}}),
    st.sampled_from(LOGINS).map(lambda login: {"properties": {"login": {"const": login}}}),
)


def root_schemas(resource: str) -> st.SearchStrategy[Any]:
    """A rule's ``when``: clauses on the resource, mixed with clauses on the subject and action."""
    on_resource = resource_schemas(resource).map(lambda r: {"properties": {"resource": r}})
    leaf = st.one_of(
        on_resource,
        on_resource,
        on_resource,
        SUBJECT_CLAUSES.map(lambda c: {"properties": {"subject": c}}),
        st.sampled_from([*LIST_ACTIONS, "update"]).map(
            lambda a: {"properties": {"action": {"const": a}}}
        ),
        st.lists(
            st.sampled_from(["subject", "action", "resource", "other"]), min_size=1, unique=True
        ).map(lambda r: {"required": r}),
        st.booleans(),
    )
    return st.recursive(leaf, combinators, max_leaves=4)


def rules(resource: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "effect": st.sampled_from(["allow", "allow", "deny"]),
            "actions": st.one_of(
                st.lists(st.sampled_from([*LIST_ACTIONS, "update"]), min_size=1, unique=True),
                st.just(["*"]),
            ),
            "resource": st.just(resource),
            "when": root_schemas(resource),
        },
        optional={
            "roles": st.lists(st.sampled_from([*ROLES, "*"]), min_size=1, max_size=3, unique=True)
        },
    )


def policy_documents(resource: str) -> st.SearchStrategy[dict[str, Any]]:
    def document(items: list[dict[str, Any]]) -> dict[str, Any]:
        numbered = [{"id": f"r{i}", **item} for i, item in enumerate(items)]
        return {"version": 1, "default": "deny", "rules": numbered}

    return st.lists(rules(resource), min_size=1, max_size=4).map(document)


# -- records ---------------------------------------------------------------------------------
def nullable(values: Any) -> st.SearchStrategy[Any]:
    if isinstance(values, st.SearchStrategy):
        return st.one_of(st.none(), values)
    return st.sampled_from((None, *values))


OWNERS = nullable(LOGINS)
SCORES = nullable(
    st.one_of(
        st.sampled_from([0.0, 1.0, 2.5, 3.0, -1.0, 0.25, 99.5, 100.0, 2.0**31, 2.0**63, 1e20]),
        st.integers(-5, 10).map(float),
        st.floats(min_value=-1e4, max_value=1e4, allow_nan=False),
    )
)
CLIENTS = st.lists(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["company", "person", "", "a"]),
            "name": st.sampled_from(STRINGS),
            "email": nullable(STRINGS),
            "phone": nullable(STRINGS),
            "segment": nullable(STRINGS),
            "source": nullable(STRINGS),
            "stage": nullable(STRINGS),
            "external_id": nullable(STRINGS),
            "owner": OWNERS,
            "potential_score": SCORES,
            "potential_category": nullable(["A", "B", "C", ""]),
        }
    ),
    min_size=1,
    max_size=10,
)
# amounts a Numeric(16, 2) column stores as they are: at most two decimals
AMOUNTS = st.one_of(
    st.sampled_from([0, 1, 2.5, 0.1, 0.25, -3, 99.99, 100, 2**31, 3e9, 5_000_000_000.5]),
    st.integers(-10, 10),
    st.integers(-(10**9), 10**9).map(lambda c: c / 100),
)
DEALS = st.lists(
    st.fixed_dictionaries(
        {
            "client": st.integers(0, 9),
            "owner": OWNERS,
            "amount": AMOUNTS,
            "title": st.sampled_from(STRINGS),
            "stage": st.sampled_from(["new", "won", ""]),
            "status": st.sampled_from(["open", "won", "lost"]),
            "currency": st.sampled_from(["RUB", "EUR"]),
        }
    ),
    max_size=6,
)
CONTACTS = st.lists(
    st.fixed_dictionaries(
        {
            "client": st.integers(0, 9),
            "name": st.sampled_from(STRINGS),
            "position": nullable(STRINGS),
            "email": nullable(STRINGS),
            "phone": nullable(STRINGS),
        }
    ),
    max_size=6,
)


def unique_or_null(rows: list[dict[str, Any]], key: str, fold: Callable[[str], str]) -> None:
    """NULL for every repeated value of a column with a unique index."""
    seen: set[str] = set()
    for row in rows:
        value = row[key]
        if value is None:
            continue
        if fold(value) in seen:
            row[key] = None
        seen.add(fold(value))


# -- the deployment ----------------------------------------------------------------------------
@pytest.fixture
def world(crm_factory: Callable[..., Any]) -> Any:
    """One deployment per test: teams, and users of every role, with a team and without."""
    crm = crm_factory("parity")
    with crm.session() as s:
        for name, parent in TEAMS:
            s.teams.add(name, parent=parent)
        for login, role, team in USERS:
            s.users.add(login, role=role, team=team)
    return crm


def user_ids(s: Any) -> dict[str, int]:
    users = s.tables["users"]
    return {login: uid for uid, login in s.connection.execute(select(users.c.id, users.c.login))}


def insert_records(
    s: Any, clients: list[dict[str, Any]], deals: list[dict[str, Any]], contacts: list[Any]
) -> None:
    """The records, with ids 1, 2 ... (the tables are empty: each example rolls back)."""
    ids = user_ids(s)
    rows = [dict(c) for c in clients]
    unique_or_null(rows, "email", str.lower)
    unique_or_null(rows, "external_id", str)
    client_rows = []
    for number, row in enumerate(rows, start=1):
        owner = row.pop("owner")
        client_rows.append(
            {
                **row,
                "id": number,
                "owner_id": None if owner is None else ids[owner],
                "requisites": {},
                "params": {},
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
    s.connection.execute(insert(s.tables["clients"]), client_rows)
    if deals:
        s.connection.execute(
            insert(s.tables["deals"]),
            [
                {
                    "id": number,
                    "client_id": deal["client"] % len(client_rows) + 1,
                    "owner_id": None if deal["owner"] is None else ids[deal["owner"]],
                    "amount": deal["amount"],
                    "title": deal["title"],
                    "pipeline": "sales",
                    "stage": deal["stage"],
                    "status": deal["status"],
                    "currency": deal["currency"],
                    "opened_at": NOW,
                    "stage_entered_at": NOW,
                }
                for number, deal in enumerate(deals, start=1)
            ],
        )
    if contacts:
        s.connection.execute(
            insert(s.tables["contacts"]),
            [
                {
                    "id": number,
                    "client_id": contact["client"] % len(client_rows) + 1,
                    "name": contact["name"],
                    "position": contact["position"],
                    "email": contact["email"],
                    "phone": contact["phone"],
                    "created_at": NOW,
                }
                for number, contact in enumerate(contacts, start=1)
            ],
        )


@pytest.fixture
def records_of(world: Any) -> Callable[..., Any]:
    """``with records_of(login, clients, deals, contacts) as s``: a session, rolled back after."""

    @contextlib.contextmanager
    def open_records(
        login: str, clients: list[Any], deals: list[Any], contacts: list[Any]
    ) -> Iterator[Any]:
        with world.session(as_user=login) as s, s.connection.begin_nested() as savepoint:
            insert_records(s, clients, deals, contacts)
            try:
                yield s
            finally:
                savepoint.rollback()

    return open_records


# -- the oracle ------------------------------------------------------------------------------
def rule_applies(rule: dict[str, Any], role: str, action: str, resource: str) -> bool:
    roles = rule.get("roles")
    return (
        (roles is None or role in roles or "*" in roles)
        and (action in rule["actions"] or "*" in rule["actions"])
        and rule["resource"] == resource
    )


class Oracle:
    """The decisions of the ``jsonschema`` library on ``{"subject", "action", "resource"}``."""

    def __init__(self, document: dict[str, Any], subject: dict[str, Any], *, formats: bool = False):
        self.rules = document["rules"]
        self.subject = subject
        self.formats = formats
        self._validators: dict[str, Any] = {}

    def matches(self, when: Any, action: str, view: dict[str, Any]) -> bool:
        schema = resolve_subject(when, self.subject)
        if isinstance(schema, bool):
            return schema
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            checker = Draft202012Validator.FORMAT_CHECKER if self.formats else None
            validator = self._validators[key] = Draft202012Validator(schema, format_checker=checker)
        instance = {"subject": self.subject, "action": action, "resource": view}
        return bool(validator.is_valid(instance))

    def allows(self, action: str, resource: str, view: dict[str, Any]) -> bool:
        live = [r for r in self.rules if rule_applies(r, self.subject["role"], action, resource)]
        allowed = any(self.matches(r["when"], action, view) for r in live if r["effect"] == "allow")
        denied = any(self.matches(r["when"], action, view) for r in live if r["effect"] == "deny")
        return allowed and not denied

    def any_allow_rule(self, action: str, resource: str) -> bool:
        role = self.subject["role"]
        return any(
            r["effect"] == "allow" and rule_applies(r, role, action, resource) for r in self.rules
        )


def load(document: dict[str, Any]) -> Policies:
    return Policies(RESOURCES, [parse_policy(document, source="test", resources=RESOURCES)])


def check_parity(s: Any, document: dict[str, Any], resource: str) -> None:
    """SQL ids == jsonschema's == allows' == decide's, for the list actions; Python for update."""
    access = Access(load(document), s)
    subject = subject_of(s)
    assert access.subject == subject
    oracle = Oracle(document, subject)
    table = s.tables[RESOURCES[resource].table]
    all_ids = sorted(s.connection.execute(select(table.c.id)).scalars())
    views = {i: access.view(resource, i) for i in all_ids}
    for action in (*LIST_ACTIONS, "update"):
        expected = {i for i, v in views.items() if oracle.allows(action, resource, v)}
        python = {i for i, v in views.items() if access.allows(action, resource, v)}
        decided = {i for i, v in views.items() if access.decide(action, resource, v).allowed}
        assert python == expected, (action, views)
        assert decided == expected, action
        if action not in LIST_ACTIONS:
            continue
        try:
            condition = access.where(action, resource)
        except PermissionDenied:
            assert not oracle.any_allow_rule(action, resource)
            assert not expected
            continue
        pushed = set(s.connection.execute(select(table.c.id).where(condition)).scalars())
        assert pushed == expected, (action, str(condition), views)
        filtered = access.filter(select(table.c.id), action, resource)
        assert set(s.connection.execute(filtered).scalars()) == expected


def examples(n: int) -> Any:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# strategies made once (hypothesis validates a strategy object once, not once per example)
POLICIES = {r: st.tuples(st.just(r), policy_documents(r)) for r in ("client", "deal", "contact")}
RESOURCE_AND_POLICY = st.sampled_from(["client", "client", "deal", "contact"]).flatmap(
    POLICIES.__getitem__
)


# -- the tests ---------------------------------------------------------------------------------
@examples(200)
@given(
    case=RESOURCE_AND_POLICY,
    login=st.sampled_from(LOGINS),
    clients=CLIENTS,
    deals=DEALS,
    contacts=CONTACTS,
)
def test_pushdown_agrees_with_jsonschema(
    records_of: Callable[..., Any],
    case: tuple[str, dict[str, Any]],
    login: str,
    clients: list[Any],
    deals: list[Any],
    contacts: list[Any],
) -> None:
    resource, document = case
    with records_of(login, clients, deals, contacts) as s:
        check_parity(s, document, resource)


def _doc(when: Any, actions: list[str], resource: str = "client", effect: str = "allow") -> Any:
    return {
        "version": 1,
        "rules": [
            {"id": "r", "effect": effect, "actions": actions, "resource": resource, "when": when}
        ],
    }


def _client(owner: str | None = "anna", score: float | None = None) -> dict[str, Any]:
    return {"kind": "company", "name": "a", "email": None, "phone": None, "segment": None,
            "source": None, "stage": None, "external_id": None, "owner": owner,
            "potential_score": score, "potential_category": None}  # fmt: skip


def _deal(amount: float) -> dict[str, Any]:
    return {"client": 0, "owner": "anna", "amount": amount, "title": "t", "stage": "new",
            "status": "open", "currency": "RUB"}  # fmt: skip


def _on(resource: str, attribute: str, schema: Any) -> dict[str, Any]:
    when = {"properties": {"resource": {"properties": {attribute: schema}}}}
    return _doc(when, ["read", "export", "update"], resource)


REGRESSIONS = {
    # "integer" on a number was CAST(x AS INTEGER): out of range on PostgreSQL from 2**31
    # (a deal of 3 billion), saturated on SQLite from 2**63 (1e20 was "not an integer")
    "integer-score": ("client", _on("client", "potential_score", {"type": "integer"})),
    "integer-amount": ("deal", _on("deal", "amount", {"type": "integer"})),
    "not-integer-amount": ("deal", _on("deal", "amount", {"not": {"type": "integer"}})),
    # constants no INTEGER column holds: out of range on PostgreSQL, OverflowError on SQLite
    "const-3e9": ("client", _on("client", "owner_id", {"const": 3e9})),
    "enum-huge": ("client", _on("client", "owner_id", {"enum": [2**63, 10**20, 3e9, 1e20]})),
    "minimum-1e20": ("client", _on("client", "owner_id", {"minimum": 1e20})),
    "maximum-huge": ("client", _on("client", "owner_id", {"not": {"maximum": 10**20}})),
    "score-huge": ("client", _on("client", "potential_score", {"exclusiveMaximum": 2**63})),
    "score-const-huge": ("client", _on("client", "potential_score", {"const": 10**20})),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regressions(records_of: Callable[..., Any], name: str) -> None:
    """Parity bugs the property test found, pinned."""
    scores = [1e20, 2.0**63, 10.0**20, 3e9, 2.0**53, 2.0**53 + 2, 2.5, 3.0, -0.0, None]
    clients = [_client("anna" if i % 2 else None, score) for i, score in enumerate(scores)]
    deals = [_deal(a) for a in (3e9, 5_000_000_000.5, 2**31, 2.5, 7, -12_345_678_901.25)]
    resource, document = REGRESSIONS[name]
    for login in ("admin", "anna", "boss"):
        with records_of(login, clients, deals, []) as s:
            check_parity(s, document, resource)


def test_views_show_missing_values_as_null(records_of: Callable[..., Any]) -> None:
    """Every attribute is in a record's view, NULL as None; team_id through one or two hops."""
    clients = [_client(o, score) for o, score in (("anna", 3.0), ("lone", 2.5), (None, None))]
    contacts = [
        {"client": i, "name": "x", "position": None, "email": None, "phone": None} for i in range(3)
    ]
    with records_of("boss", clients, [], contacts) as s:
        access = s.access
        teams = {t.name: t.id for t in s.teams.list()}
        ids = user_ids(s)
        views = [access.view("client", i) for i in (1, 2, 3)]
        assert all(set(v) == set(RESOURCES["client"].attributes) for v in views)
        assert [(v["owner_id"], v["team_id"], v["potential_score"]) for v in views] == [
            (ids["anna"], teams["east"], 3.0),
            (ids["lone"], None, 2.5),
            (None, None, None),
        ]
        assert [access.view("contact", i)["team_id"] for i in (1, 2, 3)] == [
            teams["east"],
            None,
            None,
        ]
        assert access.view("client", 99) is None


SCHEMAS = {
    r: st.tuples(st.just(r), resource_schemas(r), root_schemas(r))
    for r in ("client", "deal", "contact")
}
WHEN_WITH_RESOURCE_SCHEMA = st.sampled_from(sorted(SCHEMAS)).flatmap(SCHEMAS.__getitem__)


@examples(40)
@given(
    case=WHEN_WITH_RESOURCE_SCHEMA,
    name=st.sampled_from(
        ["nope", "owner", "Email", "potential_score", "amount", "client_owner_id"]
    ),
    wrap=st.sampled_from(
        ["properties", "required", "allOf", "anyOf", "oneOf", "not", "if", "else"]
    ),
    actions=st.sampled_from([["read"], ["export"], ["update"], ["*"], ["read", "update"]]),
)
def test_unknown_attributes_are_refused_when_loaded(
    case: tuple[str, Any, Any], name: str, wrap: str, actions: list[str]
) -> None:
    """An attribute the resource does not have is refused wherever it is, whatever the action.

    Also behind a branch that decides the rest (``allOf: [false, ...]``,
    ``anyOf: [true, ...]``) or a clause on the subject that the template
    subject of the load-time check does not satisfy.
    """
    resource, other, root = case
    if name in RESOURCES[resource].attributes:
        name = "nope"
    bad: Any = {"required": [name]} if wrap == "required" else {"properties": {name: {}}}
    wrapped = {
        "properties": bad,
        "required": bad,
        "allOf": {"allOf": [False, other, bad]},
        "anyOf": {"anyOf": [True, other, bad]},
        "oneOf": {"oneOf": [other, bad]},
        "not": {"not": bad},
        "if": {"if": other, "then": bad},
        "else": {"if": True, "else": bad},
    }[wrap]
    when = {
        "anyOf": [
            root,
            {
                "allOf": [
                    {"properties": {"subject": {"properties": {"role": {"const": "manager"}}}}},
                    {"properties": {"resource": wrapped}},
                ]
            },
        ]
    }
    with pytest.raises(PolicyError, match=f"has no attribute '{name}'"):
        parse_policy(_doc(when, actions, resource), source="test", resources=RESOURCES)


@pytest.mark.parametrize(
    ("resource", "name"),
    [("client", "amount"), ("deal", "email"), ("contact", "potential_score"), ("client", "")],
)
def test_unknown_attribute_message(resource: str, name: str) -> None:
    when = {"properties": {"resource": {"properties": {name: {"const": 1}}}}}
    with pytest.raises(PolicyError) as info:
        parse_policy(_doc(when, ["read"], resource), source="test", resources=RESOURCES)
    assert f"{resource} has no attribute {name!r}" in info.value.message
    assert "rules.0 (r).when" in str(info.value.field)


# untranslatable keywords: the ``when`` of the rule, and what names the refused keyword
UNTRANSLATABLE = {
    "pattern": {"properties": {"resource": {"properties": {"email": {"pattern": "^a"}}}}},
    "format": {"properties": {"resource": {"properties": {"email": {"format": "email"}}}}},
    "multipleOf": {
        "properties": {"resource": {"properties": {"potential_score": {"multipleOf": 0.5}}}}
    },
    "additionalProperties": {
        "properties": {
            "resource": {
                "properties": {"email": True},
                "additionalProperties": {"not": {"const": "b"}},
            }
        }
    },
    "$ref": {
        "properties": {"resource": {"properties": {"segment": {"$ref": "#/$defs/short"}}}},
        "$defs": {"short": {"type": ["string", "null"], "maxLength": 1}},
    },
    # behind a clause on the subject that decides the rest for the load-time check's subject
    "$subject-in-allOf": {
        "allOf": [
            {"properties": {"subject": {"properties": {"role": {"const": "manager"}}}}},
            {"properties": {"resource": {"properties": {"name": {"pattern": "b"}}}}},
        ]
    },
    "$subject-in-anyOf": {
        "anyOf": [
            {"properties": {"subject": {"properties": {"role": {"not": {"const": "manager"}}}}}},
            {"properties": {"resource": {"properties": {"name": {"pattern": "b"}}}}},
        ]
    },
}


@pytest.mark.parametrize("keyword", sorted(UNTRANSLATABLE))
@pytest.mark.parametrize("actions", [["read"], ["export"], ["read", "update"], ["*"]])
def test_untranslatable_keywords_are_refused_for_lists(keyword: str, actions: list[str]) -> None:
    named = "pattern" if keyword.startswith("$subject") else keyword
    for effect in ("allow", "deny"):
        document = _doc(UNTRANSLATABLE[keyword], actions, effect=effect)
        with pytest.raises(PolicyError) as info:
            parse_policy(document, source="test", resources=RESOURCES)
        assert f"keyword {named!r}" in info.value.message
        assert "cannot be translated" in info.value.message
        assert "rules for read and export are applied in SQL" in info.value.message


@examples(20)
@given(login=st.sampled_from(LOGINS), clients=CLIENTS)
def test_untranslatable_keywords_follow_jsonschema_for_updates(
    records_of: Callable[..., Any], login: str, clients: list[Any]
) -> None:
    """Accepted for an update-only rule; the verdicts are jsonschema's (formats asserted)."""
    rules = [
        {"id": f"u-{i}", "effect": "allow", "actions": ["update"], "resource": "client", "when": w}
        for i, w in enumerate(UNTRANSLATABLE.values())
    ]
    deny = {
        "id": "d",
        "effect": "deny",
        "actions": ["update"],
        "resource": "client",
        "when": {"properties": {"resource": {"properties": {"kind": {"pattern": "^p"}}}}},
    }
    documents = [{"version": 1, "rules": [rule, deny]} for rule in rules]
    with records_of(login, clients, [], []) as s:
        ids = sorted(s.connection.execute(select(s.tables["clients"].c.id)).scalars())
        views = [s.access.view("client", i) for i in ids]
        for document in documents:
            access = Access(load(document), s)
            oracle = Oracle(document, subject_of(s), formats=True)
            for view in views:
                expected = oracle.allows("update", "client", view)
                assert access.allows("update", "client", view) is expected, (document, view)
                assert access.decide("update", "client", view).allowed is expected
            with pytest.raises(PermissionDenied):  # no rule about reading at all
                access.where("read", "client")
