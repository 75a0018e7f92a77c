"""Access policies: the built-in roles, the engine's contract, clients, export, quotas, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from crmkit import DuplicateError, NotFound, PermissionDenied, ValidationError, hookimpl
from crmkit.core.access import Access
from crmkit.core.errors import ConfigError, PluginError

RESOURCES = ("client", "contact", "deal", "interaction", "invoice", "task")
ACTIONS = ("read", "create", "update", "delete", "export", "reassign")


@pytest.fixture
def org(crm):
    """Teams north (with north-a nested) and south; a head of north, two managers, a marketer."""
    with crm.session() as s:
        s.teams.add("north")
        s.teams.add("north-a", parent="north")
        s.teams.add("south")
        s.users.add("helen", role="head", team="north")
        s.users.add("anna", role="manager", team="north-a")
        s.users.add("boris", role="manager", team="south")
        s.users.add("mark", role="marketer")
        ids: dict[str, list[int]] = {"anna": [], "boris": []}
        for owner in ("anna", "boris"):
            for n in range(3 if owner == "anna" else 2):
                client = s.clients.create(
                    f"{owner.title()} client {n}",
                    owner=owner,
                    email=f"{owner}{n}@clients.example",
                    phone="+7 900 000 00 0" + str(n),
                )
                ids[owner].append(client.id)
                s.contacts.add(client.id, f"Contact of {client.name}", email=f"c{client.id}@x.io")
        deal = s.deals.open(ids["anna"][0], pipeline="b2b", title="Anna's deal", owner="anna")
        other = s.deals.open(ids["boris"][0], pipeline="b2b", title="Boris's deal", owner="boris")
        s.interactions.log(
            ids["anna"][0],
            kind="call",
            direction="outbound",
            topic="first_contact",
            outcome="callback_requested",
        )
        s.tasks.add("Call back", due="2030-01-01", assignee="anna", client_id=ids["anna"][0])
        s.invoices.issue(deal.id, amount=100)
    return {"clients": ids, "deal": deal.id, "other_deal": other.id}


def _owner_of(crm, resource: str, record_id: int) -> int | None:
    with crm.session() as s:
        view = s.access.view(resource, record_id)
        return view.get("owner_id")


def _first_id(crm, table: str, **where) -> int:
    with crm.session() as s:
        t = s.tables[table]
        q = select(t.c.id).order_by(t.c.id)
        for k, v in where.items():
            q = q.where(t.c[k] == v)
        return s.connection.execute(q).scalar_one()


def expected(role: str, action: str, resource: str, relation: str) -> bool:
    """What the built-in policies promise: ``relation`` is own, team (head's subtree) or other."""
    if role == "admin":
        return True
    if role == "head":
        return action in ("read", "export", "create", "update", "reassign") and relation in (
            "own",
            "team",
        )
    if role == "manager":
        return action in ("read", "create", "update") and relation == "own"
    if role == "marketer":
        return (action, resource) in {
            ("read", "client"),
            ("read", "deal"),
            ("create", "client"),
            ("create", "contact"),
        }
    raise AssertionError(role)


def test_every_builtin_role_against_every_resource_and_action(crm, org):
    """Decisions on a north-a record (anna's) and a south one (boris's), for each role."""
    records = {
        "client": (org["clients"]["anna"][0], org["clients"]["boris"][0]),
        "contact": (
            _first_id(crm, "contacts", client_id=org["clients"]["anna"][0]),
            _first_id(crm, "contacts", client_id=org["clients"]["boris"][0]),
        ),
        "deal": (org["deal"], org["other_deal"]),
        "interaction": (_first_id(crm, "interactions"), None),
        "invoice": (_first_id(crm, "invoices"), None),
        "task": (_first_id(crm, "tasks"), None),
    }
    relations = {
        # anna's records are her own, in helen's subtree, and nobody else's
        "anna": ("own", "other"),
        "helen": ("team", "other"),
        "boris": ("other", "own"),
        "mark": ("other", "other"),
        "admin": ("other", "other"),
    }
    roles = {"anna": "manager", "helen": "head", "boris": "manager", "mark": "marketer"}
    roles["admin"] = "admin"
    checked = 0
    for login, (north, south) in relations.items():
        with crm.session(as_user=login, readonly=True) as s:
            for resource, ids in records.items():
                for record_id, relation in zip(ids, (north, south), strict=True):
                    if record_id is None:
                        continue
                    view = s.access.view(resource, record_id)
                    for action in ACTIONS:
                        want = expected(roles[login], action, resource, relation)
                        got = s.access.allows(action, resource, view)
                        assert got is want, (login, action, resource, relation)
                        assert s.access.decide(action, resource, view).allowed is want
                        checked += 1
            for action in ACTIONS[:1]:
                assert s.access.allows(action, "report", {"name": "abcxyz"})
    assert checked == 5 * 9 * 6  # five users, nine records, six actions


def test_a_manager_reads_the_deals_of_their_clients_owned_by_others(crm, org):
    with crm.session() as s:
        handed = s.deals.open(org["clients"]["anna"][1], pipeline="b2b", title="X", owner="boris")
    with crm.session(as_user="anna", readonly=True) as s:
        view = s.access.view("deal", handed.id)
        assert s.access.decide("read", "deal", view).allowed_by == ("manager-deals-of-own-clients",)
        assert not s.access.allows("update", "deal", view)


def test_deny_by_default_without_policies(crm, org):
    from crmkit.testing import builtins_with

    for module in builtins_with("crmkit_access_policies"):  # access, and the KPI plugin's
        crm.plugins.unregister(name=module.__name__)
    crm.refresh()
    assert crm.access.rules == ()
    for login in ("admin", "helen", "anna", "mark"):
        with crm.session(as_user=login, readonly=True) as s:
            for resource in RESOURCES:
                for action in ACTIONS:
                    assert not s.access.may(action, resource)
            with pytest.raises(PermissionDenied, match="no policy rule allows it"):
                s.clients.list()
            with pytest.raises(PermissionDenied):
                s.clients.count()
            with pytest.raises(PermissionDenied):
                s.clients.get(org["clients"]["anna"][0])


# -- clients through the API: no leakage ------------------------------------------------
def test_a_manager_lists_and_counts_only_their_clients(crm, org):
    with crm.session(as_user="anna", readonly=True) as s:
        listed = s.clients.list()
        assert sorted(c.id for c in listed) == sorted(org["clients"]["anna"])
        assert s.clients.count() == 3
        assert [c.id for c in s.clients.list(limit=2, offset=2)] == [min(org["clients"]["anna"])]
        assert s.clients.count(search="client") == 3  # boris's "Boris client ..." are not counted
        assert [c.id for c in s.clients.iter(batch_size=1)] == sorted(org["clients"]["anna"])
        assert s.clients.list(owner="boris") == []
    with crm.session(as_user="helen", readonly=True) as s:
        assert s.clients.count() == 3  # north-a is nested in north; south is not hers
    with crm.session(as_user="admin", readonly=True) as s:
        assert s.clients.count() == 5


def test_a_hidden_record_is_not_found_exactly_like_a_missing_one(crm, org):
    boris_client = org["clients"]["boris"][0]
    with crm.session(as_user="anna") as s:
        with pytest.raises(NotFound) as hidden:
            s.clients.get(boris_client)
        with pytest.raises(NotFound) as missing:
            s.clients.get(999_999)
        assert str(hidden.value).replace(str(boris_client), "N") == str(missing.value).replace(
            "999999", "N"
        )
        for attempt in (
            lambda: s.clients.update(boris_client, name="Mine now"),
            lambda: s.contacts.list(boris_client),
            lambda: s.contacts.add(boris_client, "Spy"),
            lambda: s.events("client", boris_client),
        ):
            with pytest.raises(NotFound) as err:
                attempt()
            assert "Boris" not in str(err.value)
        assert s.clients.find(email="boris0@clients.example") is None


def test_a_duplicate_email_does_not_reveal_a_client_the_user_may_not_see(crm, org):
    with crm.session(as_user="anna") as s, pytest.raises(DuplicateError) as err:
        s.clients.create("Copycat", email="boris0@clients.example")
    assert "Boris" not in str(err.value) and "#" not in str(err.value)
    assert err.value.field == "email"
    with crm.session(as_user="admin") as s, pytest.raises(DuplicateError, match="Boris client 0"):
        s.clients.create("Copycat", email="boris0@clients.example")


def test_writes_are_checked_and_refusals_name_the_action(crm, org):
    anna_client = org["clients"]["anna"][0]
    with crm.session(as_user="anna") as s:
        assert s.clients.update(anna_client, name="Renamed").name == "Renamed"
        with pytest.raises(PermissionDenied, match="may not reassign client"):
            s.clients.update(anna_client, owner="boris")
        with pytest.raises(PermissionDenied, match="may not create"):
            s.clients.create("For Boris", owner="boris")
    with crm.session(as_user="helen") as s:
        with pytest.raises(PermissionDenied, match="may not reassign client"):
            s.clients.update(anna_client, owner="boris")  # south is not her team
        assert s.clients.update(anna_client, owner="helen").owner == "helen"
    with crm.session(as_user="mark") as s:
        with pytest.raises(PermissionDenied, match="'mark' \\(marketer\\) may not update"):
            s.clients.update(anna_client, name="Marketing")
        lead = s.clients.create("Lead from a fair", owner="anna", email="lead@fair.example")
        assert lead.owner == "anna"
    with crm.session(as_user="admin", readonly=True) as s:
        assert s.clients.get(anna_client).name == "Renamed"  # nothing half-written


def test_a_marketer_reads_cards_without_contact_data(crm, org):
    client_id = org["clients"]["anna"][0]
    with crm.session(as_user="mark", readonly=True) as s:
        card = s.clients.get(client_id)
        assert card.email is None and card.phone is None and card.requisites == {}
        assert card.hidden == ("email", "phone", "requisites")
        assert card.name == "Anna client 0"
        assert all(c.email is None for c in s.clients.list())
        created = s.events("client", client_id)[0]
        assert "email" not in created["data"] and created["data"]["name"] == "Anna client 0"
        with pytest.raises(PermissionDenied, match="may not read contact persons"):
            s.contacts.list(client_id)
        assert s.clients.find(email="anna0@clients.example") is not None  # found, still masked
    with crm.session(as_user="anna", readonly=True) as s:
        assert s.clients.get(client_id).email == "anna0@clients.example"


# -- export --------------------------------------------------------------------------------
def test_export_is_for_heads_and_admins_and_is_recorded(crm, org, tmp_path):
    from crmkit.transfer.export import export

    with (
        crm.session(as_user="anna", readonly=True) as s,
        pytest.raises(PermissionDenied, match="may not export client cards"),
    ):
        export(s, "clients", tmp_path / "anna.csv")
    assert not (tmp_path / "anna.csv").exists()
    with crm.session(as_user="helen", readonly=True) as s:
        rows = export(s, "clients", tmp_path / "helen.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "helen.jsonl").read_text().splitlines()]
    assert rows == 3 and sorted(r["id"] for r in lines) == sorted(org["clients"]["anna"])
    with crm.session(as_user="admin", readonly=True) as s:
        audit = s.tables["audit_log"]
        found = s.connection.execute(
            select(audit.c.login, audit.c.action, audit.c.allowed, audit.c.detail)
            .where(audit.c.action == "export")
            .order_by(audit.c.id)
        ).all()
    assert [(r.login, r.allowed) for r in found] == [("anna", False), ("helen", True)]
    assert found[1].detail["rows"] == 3 and "owner_id" in found[1].detail["condition"]


# -- reports -------------------------------------------------------------------------------
class CountReport:
    """A report that counts the client cards its reader may read."""

    @hookimpl
    def crmkit_reports(self):
        from sqlalchemy import func

        from crmkit import Report, ReportResult
        from crmkit.core.reports import Column

        def run(session, query):
            t = session.tables["clients"]
            q = session.access.filter(select(func.count()).select_from(t), "read", "client")
            n = session.connection.execute(q).scalar_one()
            return ReportResult("count", [Column("clients", type="integer")], [{"clients": n}])

        return [Report("count", "Clients I can see", run, filters=())]


class NoReportsForMarketers:
    @hookimpl
    def crmkit_access_policies(self):
        return [
            {
                "version": 1,
                "rules": [
                    {
                        "id": "no-count-for-marketers",
                        "effect": "deny",
                        "roles": ["marketer"],
                        "actions": ["read"],
                        "resource": "report",
                        "when": {
                            "properties": {"resource": {"properties": {"name": {"const": "count"}}}}
                        },
                    }
                ],
            }
        ]


def test_reports_count_only_what_the_reader_may_read(crm, org):
    crm.plugins.register(CountReport())
    crm.plugins.register(NoReportsForMarketers())
    crm.refresh()
    counts = {}
    for login in ("admin", "helen", "anna", "boris"):
        with crm.session(as_user=login, readonly=True) as s:
            counts[login] = s.report("count").rows[0]["clients"]
    assert counts == {"admin": 5, "helen": 3, "anna": 3, "boris": 2}
    with (
        crm.session(as_user="mark", readonly=True) as s,
        pytest.raises(
            PermissionDenied,
            match="may not read report 'count': denied by rule 'no-count-for-marketers'",
        ),
    ):
        s.report("count")


# -- read quotas -------------------------------------------------------------------------
def _deployment_policy(crm, document: dict, name: str = "policies.json") -> None:
    path = Path(crm.config.root) / name
    path.write_text(json.dumps(document), "utf-8")
    config = Path(crm.config.root) / "crmkit.toml"
    text = config.read_text("utf-8").split("\n[access]\n")[0]
    config.write_text(text + f'\n[access]\npolicies = ["{name}"]\n', "utf-8")


def _reopen(crm):
    from crmkit import CRM

    again = CRM.open(crm.config.root, plugins=crm.plugins)
    crm.close()
    return again


def test_a_read_quota_refuses_past_the_limit_and_tells_the_head_once(crm, org):
    _deployment_policy(
        crm,
        {
            "version": 1,
            "rules": [],
            "quotas": [
                {
                    "id": "manager-daily-cards",
                    "roles": ["manager"],
                    "resource": "client",
                    "per_day": 2,
                }
            ],
        },
    )
    crm = _reopen(crm)
    assert [q.per_day for q in crm.access.quotas] == [2]  # the deployment's replaced the default
    first, second, third = org["clients"]["anna"]
    with crm.session(as_user="anna", readonly=True) as s:
        s.clients.get(first)
        s.clients.get(first)  # the same card again does not count twice
        s.clients.get(second)
    with crm.session(as_user="anna", readonly=True) as s:
        s.clients.get(second)  # counted yesterday... today, in another session: still fine
        with pytest.raises(PermissionDenied, match="opened 2 client cards today"):
            s.clients.get(third)
    with pytest.raises(PermissionDenied), crm.session(as_user="anna", readonly=True) as s:
        s.clients.get(third)
    with crm.session(as_user="anna", readonly=True) as s:
        assert len(s.clients.list()) == 3  # lists are not card openings
    with crm.session(as_user="admin", readonly=True) as s:
        tasks = s.tasks.list(assignee="helen")
        assert len(tasks) == 1 and "limit of 2 client cards" in tasks[0].title
        audit = s.tables["audit_log"]
        refused = s.connection.execute(
            select(audit.c.record_ids).where(audit.c.allowed.is_(False), audit.c.login == "anna")
        ).all()
        assert [r.record_ids for r in refused] == [[third], [third]]
    with crm.session(as_user="boris", readonly=True) as s:  # every user has their own count
        s.clients.get(org["clients"]["boris"][0])


# -- loading policies ---------------------------------------------------------------------
def _plugin(document):
    class Policies:
        @hookimpl
        def crmkit_access_policies(self):
            return [document]

    return Policies()


def _rule(**changes):
    rule = {"id": "r", "effect": "allow", "actions": ["read"], "resource": "client"}
    rule.update(changes)
    return {"version": 1, "rules": [rule]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"version": 2, "rules": []}, "version"),
        ({"version": 1}, "rules: "),
        (_rule(effect="maybe"), "rules.0.effect"),
        (_rule(resource="spaceship"), "unknown resource 'spaceship'"),
        (_rule(actions=["fly"]), "unknown action 'fly'"),
        (_rule(hide=["shoe_size"]), "no field 'shoe_size'"),
        (_rule(effect="deny", hide=["email"]), "only allow rules may hide fields"),
        (
            _rule(when={"properties": {"resource": {"properties": {"region": {"const": "n"}}}}}),
            "client has no attribute 'region'",
        ),
        (
            _rule(when={"properties": {"resource": {"properties": {"name": {"pattern": "^A"}}}}}),
            "the keyword 'pattern' (on name) cannot be translated",
        ),
        (
            _rule(when={"properties": {"resource": {"additionalProperties": False}}}),
            "the keyword 'additionalProperties' on a client cannot be translated",
        ),
        (
            _rule(
                when={
                    "properties": {
                        "resource": {"properties": {"id": {"const": {"$subject": "age"}}}}
                    }
                }
            ),
            "unknown subject attribute 'age'",
        ),
        (_rule(when={"type": 5}), "not a valid JSON Schema"),
    ],
)
def test_a_bad_policy_from_a_plugin_is_refused_naming_the_problem(crm, document, message):
    crm.plugins.register(_plugin(document))
    crm.refresh()
    with pytest.raises(PluginError) as err:
        crm.access  # noqa: B018
    assert message in str(err.value)


def test_untranslatable_conditions_are_fine_for_single_record_actions(crm, org):
    crm.plugins.register(
        _plugin(
            _rule(
                id="update-a-names",
                actions=["update"],
                roles=["marketer"],
                when={"properties": {"resource": {"properties": {"name": {"pattern": "^Anna"}}}}},
            )
        )
    )
    crm.refresh()
    with (
        crm.session(as_user="mark", readonly=True) as s,
        pytest.raises(ValidationError, match="decided record by record: rule 'update-a-names'"),
    ):
        s.access.where("update", "client")
    with crm.session(as_user="mark") as s:
        assert s.clients.update(org["clients"]["anna"][0], source="website").source == "website"
        with pytest.raises(PermissionDenied, match="no rule allows it"):
            s.clients.update(org["clients"]["boris"][0], source="website")


def test_a_rule_id_registered_twice_by_plugins_is_an_error(crm):
    crm.plugins.register(_plugin(_rule(id="admin-all")))
    crm.refresh()
    with pytest.raises(PluginError, match="'admin-all' is registered twice"):
        crm.access  # noqa: B018


def test_a_deployment_file_replaces_a_rule_and_its_errors_name_the_file(crm, org):
    _deployment_policy(
        crm,
        _rule(
            id="manager-own",
            roles=["manager"],
            actions=["read"],
            when={"properties": {"resource": {"properties": {"stage": {"const": "lead"}}}}},
        ),
    )
    crm = _reopen(crm)
    with crm.session(as_user="boris", readonly=True) as s:
        assert s.clients.count() == 5  # every lead, whoever owns it: the file's rule won
    _deployment_policy(crm, {"version": 1, "rules": [{"id": "x"}]}, name="broken.json")
    crm = _reopen(crm)
    with pytest.raises(ConfigError) as err:
        crm.access  # noqa: B018
    assert "broken.json" in str(err.value) and "effect" in str(err.value)


def test_policy_documents_may_be_json_text_and_are_checked_by_the_meta_schema():
    from crmkit.core.access import POLICY_SCHEMA, PolicyError, core_resources, parse_policy
    from crmkit.core.validation import check_schema

    check_schema(POLICY_SCHEMA)
    policy = parse_policy(json.dumps(_rule()), source="text", resources=core_resources())
    assert [r.id for r in policy.rules] == ["r"]
    with pytest.raises(PolicyError, match="is not JSON"):
        parse_policy("{", source="text", resources=core_resources())


def test_the_sql_of_a_list_uses_the_subjects_values(crm, org):
    with crm.session(as_user="anna", readonly=True) as s:
        anna = s.user.id
        sql = str(s.access.where("read", "client").compile(compile_kwargs={"literal_binds": True}))
        assert sql == f"clients.owner_id = {anna}"
        access = Access(crm.access, s)  # a fresh engine gives the same
        assert (
            str(access.where("read", "client").compile(compile_kwargs={"literal_binds": True}))
            == sql
        )


# -- the CLI -------------------------------------------------------------------------------
def test_policy_commands(crm, org, tmp_path):
    from click.testing import CliRunner

    from crmkit.cli import build_cli

    cli = build_cli(crm.plugins)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, ["-C", str(crm.config.root), *args], obj=crm.plugins)

    listed = run("policy", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    assert "manager-own" in [r["id"] for r in json.loads(listed.output)["rules"]]
    shown = run("policy", "show", "head-team")
    assert shown.exit_code == 0 and '"$subject": "team_ids"' in shown.output
    assert run("policy", "show", "nope").exit_code == 3
    boris_client = org["clients"]["boris"][0]
    check = run("policy", "check", "anna", "read", "client", str(boris_client))
    assert check.exit_code == 0
    assert check.output.startswith(f"DENIED: anna may not read client #{boris_client}")
    assert "manager-own (does not match)" in check.output
    allowed = run("policy", "check", "anna", "read", "client", str(org["clients"]["anna"][0]))
    assert "ALLOWED" in allowed.output and "manager-own (matches)" in allowed.output
    assert (
        "hidden fields: email, phone, requisites"
        in run("policy", "check", "mark", "read", "client").output
    )
    sql = run("policy", "sql", "helen", "read", "client")
    assert sql.exit_code == 0 and "users.team_id IN" in sql.output
    spy = run("--as", "anna", "policy", "check", "boris", "read", "client")
    assert spy.exit_code == 5 and "may check only their own access" in spy.output
    schema = run("policy", "schema")
    assert json.loads(schema.output)["$id"].endswith("policy-1.json")
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            _rule(when={"properties": {"resource": {"properties": {"name": {"pattern": "x"}}}}})
        )
    )
    validated = run("policy", "validate", str(bad))
    assert validated.exit_code == 2 and "'pattern'" in validated.output
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_rule()))
    assert "valid (1 rule, 0 quotas)" in run("policy", "validate", str(good)).output
    export = run("--as", "anna", "export", "clients", str(tmp_path / "out.csv"))
    assert export.exit_code == 5 and "may not export" in export.output
    shown = run("--as", "mark", "client", "show", str(org["clients"]["anna"][0]))
    assert shown.exit_code == 0, shown.output
    assert "(hidden)" in shown.output and "anna0@clients.example" not in shown.output
    as_json = json.loads(run("--as", "mark", "client", "list", "--format", "json").output)
    assert {c["email"] for c in as_json} == {None}
    assert {tuple(c["hidden"]) for c in as_json} == {("email", "phone", "requisites")}
    not_hers = run("--as", "anna", "client", "show", str(boris_client))
    assert not_hers.exit_code == 3 and f"no client with id {boris_client}" in not_hers.output


def test_an_unknown_action_or_resource_is_a_validation_error(crm, org):
    with crm.session(as_user="anna", readonly=True) as s:
        with pytest.raises(ValidationError, match="unknown resource 'planet'"):
            s.access.where("read", "planet")
        with pytest.raises(ValidationError, match="unknown action 'fly' on client"):
            s.access.where("fly", "client")


# -- bulk import ---------------------------------------------------------------------------
def test_an_import_is_checked_row_by_row_and_reveals_nothing(crm, org, tmp_path):
    from crmkit.transfer.importer import import_file

    source = tmp_path / "clients.csv"
    source.write_text(
        "name,email,owner\n"
        "New of Anna,new1@x.example,anna\n"
        "New for Boris,new2@x.example,boris\n"
        "Boris client 0 again,boris0@clients.example,anna\n"
        "Anna client 1 renamed,anna1@clients.example,anna\n"
        "Anna client 2 given away,anna2@clients.example,boris\n",
        "utf-8",
    )
    result = import_file(crm, "clients", source, as_user="anna", update_existing=True)
    reasons = {e.line: e.reason for e in result.errors}
    assert (result.inserted, result.updated, result.rejected) == (1, 1, 3)
    assert reasons[3].startswith("you may not create this client: no rule allows it")
    assert reasons[4] == "a client you may not see already has this key"
    assert reasons[6].startswith("you may not reassign client #")
    assert all("Boris client" not in r for r in reasons.values())
    with crm.session(as_user="admin", readonly=True) as s:
        assert s.clients.find(email="new1@x.example").owner == "anna"
        assert s.clients.find(email="new2@x.example") is None
        assert s.clients.find(email="anna1@clients.example").name == "Anna client 1 renamed"
        assert s.clients.find(email="boris0@clients.example").name == "Boris client 0"
        assert s.clients.find(email="anna2@clients.example").owner == "anna"


def test_winning_a_deal_on_someone_elses_client_makes_the_client_a_customer(
    crm, org, register_plugin
):
    """The lifecycle move is an effect of the allowed win, made on the user's behalf."""

    class Quick:
        @hookimpl
        def crmkit_pipelines(self):
            return [{"name": "quick", "stages": [{"name": "agreed"}]}]

    register_plugin(Quick())
    boris_client = org["clients"]["boris"][1]
    with crm.session() as s:
        deal = s.deals.open(boris_client, pipeline="quick", title="Anna's", owner="anna")
    with crm.session(as_user="anna") as s:
        s.deals.win(deal.id)
        with pytest.raises(NotFound):
            s.clients.get(boris_client)  # still not hers to read
    with crm.session(as_user="admin", readonly=True) as s:
        assert s.clients.get(boris_client).stage == "customer"
        audit = s.tables["audit_log"]
        moved = s.connection.execute(
            select(audit.c.detail).where(
                audit.c.login == "anna", audit.c.resource == "client", audit.c.kind == "change"
            )
        ).all()
        assert any(r.detail.get("on_behalf") for r in moved)
