"""API tokens and deactivation: access ends at once, the work passes on in one transaction.

Issue 6, "Protection of the base": ``crmkit user deactivate LOGIN
--reassign-to LOGIN`` ends the user's access (sessions and tokens stop
working) and passes their clients, open deals and open tasks to the new owner
in one transaction, recorded in history; deactivation takes effect for a
session already open (a token is checked at every use).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select, update

from crmkit import (
    CRM,
    Conflict,
    DeploymentError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from crmkit.cli import State, build_cli
from crmkit.core.store import Users
from crmkit.core.tokens import INVALID_TOKEN, TOKEN_PREFIX


# -- helpers -------------------------------------------------------------------------------
def run_cli(crm: CRM, *args: str, env: dict[str, str] | None = None) -> Any:
    """The CLI in this process, with ``env`` (``CRMKIT_TOKEN``) set for the run."""
    argv = ["-C", str(crm.config.root), *args]
    result = CliRunner().invoke(build_cli(crm.plugins), argv, obj=crm.plugins, env=env)
    return result


def other_process(crm: CRM) -> CRM:
    """The same deployment opened again: what another process (an admin's shell) sees."""
    return CRM.open(crm.config.root, plugins=crm.plugins)


@pytest.fixture
def world(crm: CRM) -> dict[str, Any]:
    """anna (a manager) with clients, open and closed deals, open and done tasks, tokens."""
    with crm.session() as s:
        s.users.add("anna", role="manager")
        s.users.add("boris", role="manager")
        s.users.add("carl", role="manager")
        s.users.add("olga", role="manager")  # owns nothing
    with crm.session("carl") as s:
        carls = s.clients.create("Carl's own")
    with crm.session() as s:
        s.users.deactivate("carl", reassign_to="boris")
    with crm.session("anna") as s:
        clients = [s.clients.create(f"Client {i}") for i in range(3)]
        open_deals = [s.deals.open(clients[i].id, amount=100 * (i + 1)) for i in range(2)]
        won = s.deals.open(clients[2].id, pipeline="webshop", amount=70)
        s.deals.win(won.id)
        lost = s.deals.open(clients[2].id, amount=30)
        s.deals.lose(lost.id, "price")
        open_tasks = [
            s.tasks.add(f"Call {i}", due="2030-01-01", client_id=clients[i].id) for i in range(2)
        ]
        done = s.tasks.add("Done already", due="2030-01-01")
        s.tasks.done(done.id)
        secret, token = s.tokens.create("anna", name="laptop")
        secret2, _ = s.tokens.create("anna", name="script", expires_in_days=30)
    with crm.session("boris") as s:
        borises = s.clients.create("Boris's own")
    return {
        "clients": [c.id for c in clients],
        "open_deals": [d.id for d in open_deals],
        "won": won.id,
        "lost": lost.id,
        "open_tasks": [t.id for t in open_tasks],
        "done_task": done.id,
        "secret": secret,
        "secret2": secret2,
        "token": token,
        "carls": carls.id,
        "borises": borises.id,
    }


def snapshot(crm: CRM) -> dict[str, Any]:
    """Everything deactivation may change: owners, flags, tokens, events."""
    with crm.session(readonly=True) as s:
        t = s.tables
        return {
            name: sorted(map(tuple, s.connection.execute(select(*cols)).all()))
            for name, cols in {
                "users": (t["users"].c.login, t["users"].c.active),
                "clients": (t["clients"].c.id, t["clients"].c.owner_id, t["clients"].c.updated_at),
                "deals": (t["deals"].c.id, t["deals"].c.owner_id),
                "tasks": (t["tasks"].c.id, t["tasks"].c.assignee_id),
                "tokens": (t["api_tokens"].c.id, t["api_tokens"].c.revoked_at),
                "events": (t["events"].c.id,),
            }.items()
        }


# -- API tokens ------------------------------------------------------------------------------
def test_token_is_shown_once_and_only_its_hash_is_stored(crm: CRM) -> None:
    with crm.session() as s:
        s.users.add("anna", role="manager")
    with crm.session("anna") as s:
        secret, token = s.tokens.create("anna", name="laptop", expires_in_days=7)
        row = s.connection.execute(select(s.tables["api_tokens"])).one()
    with crm.session() as s:
        events = s.events("token", token.id)
    assert secret.startswith(TOKEN_PREFIX) and len(secret) > 40
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in [str(v) for v in row]
    assert (token.user, token.name, token.status) == ("anna", "laptop", "active")
    assert token.expires_at is not None and token.last_used_at is None
    assert not hasattr(token, "token_hash")
    assert [(e["action"], e["user"], e["data"]["name"]) for e in events] == [
        ("created", "anna", "laptop")
    ]


def test_authenticate_returns_the_user_and_records_the_use(crm: CRM) -> None:
    with crm.session() as s:
        s.users.add("anna", role="manager")
        s.users.add("boris", role="head")
        secret, token = s.tokens.create("boris", name="ci")
    user = crm.authenticate(secret)
    assert (user.login, user.role.value) == ("boris", "head")
    with crm.session(token=secret) as s:
        assert s.user.login == "boris"
        created = s.clients.create("Acme")
        listed = s.tokens.list()
    assert [t.id for t in listed] == [token.id] and listed[0].last_used_at is not None
    with crm.session() as s:
        assert s.clients.get(created.id).owner == "boris"
        assert s.events("client", created.id)[0]["user"] == "boris"


def test_every_bad_token_gets_the_same_refusal(crm: CRM) -> None:
    with crm.session() as s:
        s.users.add("anna", role="manager")
        s.users.add("boris", role="manager")
        revoked, revoked_token = s.tokens.create("anna", name="revoked")
        s.tokens.revoke(revoked_token.id)
        expired, expired_token = s.tokens.create("anna", name="expired", expires_in_days=1)
        t = s.tables["api_tokens"]
        s.connection.execute(
            update(t)
            .where(t.c.id == expired_token.id)
            .values(expires_at=expired_token.created_at.replace(year=2000))
        )
        inactive, _ = s.tokens.create("boris", name="of an inactive user")
        s.users.deactivate("boris")
    bad = [
        revoked,
        expired,
        inactive,
        TOKEN_PREFIX + "x" * 43,  # well-formed, unknown
        "not-a-token",
        "",
        TOKEN_PREFIX + "y" * 1000,
    ]
    for secret in bad:
        with pytest.raises(PermissionDenied) as err:
            crm.authenticate(secret)
        assert (err.value.field, err.value.message) == ("token", INVALID_TOKEN), secret
        with pytest.raises(PermissionDenied), crm.session(token=secret):
            pass
    assert "unknown, expired or revoked" in INVALID_TOKEN
    with crm.session() as s:
        tokens = {t.name: t for t in s.tokens.list()}
    assert tokens["expired"].status == "expired"
    assert tokens["revoked"].status == "revoked"
    assert all(t.last_used_at is None for t in tokens.values())


def test_users_manage_their_own_tokens_admins_anyones(crm: CRM) -> None:
    with crm.session() as s:
        s.users.add("anna", role="manager")
        s.users.add("boris", role="head")
        _, boris_token = s.tokens.create("boris", name="by the admin")
    with crm.session("anna") as s:
        _, own = s.tokens.create("anna", name="mine")
        assert [t.id for t in s.tokens.list()] == [own.id]
        assert [t.id for t in s.tokens.list("anna")] == [own.id]
        with pytest.raises(PermissionDenied) as err:
            s.tokens.create("boris", name="not mine")
        assert err.value.field == "user" and "their own tokens" in err.value.message
        with pytest.raises(PermissionDenied):
            s.tokens.list("boris")
        with pytest.raises(NotFound):  # another user's token: as if it did not exist
            s.tokens.revoke(boris_token.id)
        with pytest.raises(NotFound):
            s.tokens.get(boris_token.id)
        with pytest.raises(PermissionDenied):
            s.tokens.revoke_all(boris_token.user_id)
        assert s.tokens.revoke(own.id).status == "revoked"
        with pytest.raises(Conflict):
            s.tokens.revoke(own.id)
    with crm.session() as s:
        assert [t.id for t in s.tokens.list()] == [boris_token.id, own.id]
        assert [t.id for t in s.tokens.list("boris")] == [boris_token.id]
        assert s.tokens.revoke(boris_token.id).revoked_at is not None
        assert [e["action"] for e in s.events("token", boris_token.id)] == ["created", "revoked"]


def test_token_input_is_checked(crm: CRM) -> None:
    with crm.session() as s:
        s.users.add("gone", role="manager", active=False)
        for days in (0, -1, 3651, 1.5, True, "7"):
            with pytest.raises(ValidationError) as err:
                s.tokens.create("admin", name="x", expires_in_days=days)
            assert err.value.field == "expires_in_days", days
        with pytest.raises(ValidationError) as err:
            s.tokens.create("admin", name="  ")
        assert err.value.field == "name"
        with pytest.raises(ValidationError) as err:
            s.tokens.create("gone", name="x")
        assert err.value.field == "user" and "deactivated" in err.value.message
        with pytest.raises(NotFound):
            s.tokens.create("nobody", name="x")
        assert s.tokens.list() == []


# -- deactivation ---------------------------------------------------------------------------
def test_deactivation_passes_open_work_on_and_keeps_closed_work(crm: CRM, world: dict) -> None:
    with crm.session() as s:
        done = s.users.deactivate("anna", reassign_to="boris", note="left the company")
        audited = [
            (e.kind, e.resource, sorted(e.record_ids or []))
            for e in s.audit_buffer
            if e.action == "reassigned"
        ]
    assert audited == [
        ("change", "client", world["clients"]),
        ("change", "deal", world["open_deals"]),
        ("change", "task", world["open_tasks"]),
    ]
    assert done == {
        "user": "anna",
        "reassigned_to": "boris",
        "tokens_revoked": 2,
        "clients": 3,
        "deals": 2,
        "tasks": 2,
    }
    with crm.session(readonly=True) as s:
        assert s.users.get("anna").active is False
        assert [s.clients.get(i).owner for i in world["clients"]] == ["boris"] * 3
        assert [s.deals.get(i).owner_id for i in world["open_deals"]] == [
            s.users.get("boris").id
        ] * 2
        anna_id = s.users.get("anna").id
        # past sales stay attributed to the person who made them
        assert s.deals.get(world["won"]).owner_id == anna_id
        assert s.deals.get(world["lost"]).owner_id == anna_id
        assert [s.tasks.get(i).assignee for i in world["open_tasks"]] == ["boris"] * 2
        assert s.tasks.get(world["done_task"]).assignee == "anna"
        assert s.clients.get(world["borises"]).owner == "boris"
        assert {t.status for t in s.tokens.list("anna")} == {"revoked"}
        expected = {
            "from": "anna",
            "to": "boris",
            "cause": "deactivation",
            "note": "left the company",
        }
        for entity, ids in (
            ("client", world["clients"]),
            ("deal", world["open_deals"]),
            ("task", world["open_tasks"]),
        ):
            for entity_id in ids:
                last = s.events(entity, entity_id)[-1]
                assert (last["action"], last["user"], last["data"]) == (
                    "reassigned",
                    "admin",
                    expected,
                )
        for entity, entity_id in (("deal", world["won"]), ("task", world["done_task"])):
            assert "reassigned" not in [e["action"] for e in s.events(entity, entity_id)]
        last = s.events("user", anna_id)[-1]
        assert last["action"] == "deactivated"
        assert last["data"] == {**done, "note": "left the company"}


def test_deactivation_refusals_name_the_field_and_change_nothing(crm: CRM, world: dict) -> None:
    before = snapshot(crm)
    cases = [
        ({}, "reassign_to", "3 clients, 2 open deals and 2 open tasks"),
        ({"reassign_to": "anna"}, "reassign_to", "cannot pass"),
        ({"reassign_to": "carl"}, "reassign_to", "'carl' is deactivated"),
        ({"reassign_to": "nobody"}, "reassign_to", "no user 'nobody'"),
    ]
    for kwargs, field, text in cases:
        with crm.session() as s, pytest.raises(ValidationError) as err:
            s.users.deactivate("anna", **kwargs)
        assert err.value.field == field and text in err.value.message, err.value
    with crm.session() as s, pytest.raises(ValidationError) as err:
        s.users.deactivate("anna")
    assert "--reassign-to LOGIN" in err.value.message
    with crm.session() as s, pytest.raises(ValidationError) as err:
        s.users.deactivate("admin", reassign_to="boris")
    assert err.value.field == "login" and "deployment's admin" in err.value.message
    with crm.session() as s, pytest.raises(Conflict):
        s.users.deactivate("carl", reassign_to="boris")
    with crm.session() as s, pytest.raises(NotFound):
        s.users.deactivate("nobody")
    assert snapshot(crm) == before


def test_the_last_active_admin_cannot_be_deactivated(crm: CRM) -> None:
    with crm.session() as s:
        s.users.add("root2", role="admin")
        s.users.add("root3", role="admin")
        s.users.deactivate("root3")  # another admin is left
        users = s.tables["users"]  # the deployment's admin off, as after editing crmkit.toml
        s.connection.execute(update(users).where(users.c.login == "admin").values(active=False))
    with crm.session("root2") as s, pytest.raises(ValidationError) as err:
        s.users.deactivate("root2")
    assert err.value.field == "login" and "last active admin" in err.value.message


def test_only_an_admin_deactivates(crm: CRM, world: dict) -> None:
    with crm.session() as s:
        s.users.add("head", role="head")
    for login in ("anna", "head"):
        with crm.session(login) as s:
            with pytest.raises(PermissionDenied):
                s.users.deactivate("boris", reassign_to="olga")
            with pytest.raises(PermissionDenied):
                s.users.activate("carl")
    with crm.session(readonly=True) as s:
        assert s.users.get("boris").active and not s.users.get("carl").active


def test_a_user_who_owns_nothing_needs_no_reassignment(crm: CRM, world: dict) -> None:
    with crm.session() as s:
        done = s.users.deactivate("olga")
        assert done == {
            "user": "olga",
            "reassigned_to": None,
            "tokens_revoked": 0,
            "clients": 0,
            "deals": 0,
            "tasks": 0,
        }
        # update(active=False) is deactivation too: refused while anna owns work
        with pytest.raises(ValidationError) as err:
            s.users.update("anna", active=False)
        assert err.value.field == "reassign_to"
        assert s.users.get("anna").active


def test_activate_lets_the_user_back_without_their_tokens(crm: CRM, world: dict) -> None:
    with crm.session() as s:
        s.users.deactivate("anna", reassign_to="boris")
        again = s.users.activate("anna", note="came back")
        assert again.active is True
        assert s.events("user", again.id)[-1]["action"] == "activated"
        with pytest.raises(Conflict):
            s.users.activate("anna")
    with crm.session("anna") as s:
        assert s.user.login == "anna"
        assert {t.status for t in s.tokens.list()} == {"revoked"}
        assert s.clients.count(owner="anna") == 0  # the work stays with boris
    with pytest.raises(PermissionDenied):
        crm.authenticate(world["secret"])


def test_a_failure_midway_leaves_nothing_half_written(
    crm: CRM, world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(crm)
    real = Users._reassigned

    def failing(self: Users, entity: str, *args: Any) -> None:
        if entity == "task":  # clients and deals are moved by then
            raise RuntimeError("disk full")
        real(self, entity, *args)

    monkeypatch.setattr(Users, "_reassigned", failing)
    with pytest.raises(RuntimeError), crm.session() as s:
        s.users.deactivate("anna", reassign_to="boris")
    assert snapshot(crm) == before
    # caught inside a session that goes on and commits: the savepoint still undoes it all
    with crm.session() as s:
        with pytest.raises(RuntimeError):
            s.users.deactivate("anna", reassign_to="boris")
        s.users.add("zoe", role="manager")
    after = snapshot(crm)
    assert [u for u in after["users"] if u[0] != "zoe"] == before["users"]
    assert {k: v for k, v in after.items() if k not in ("users", "events")} == {
        k: v for k, v in before.items() if k not in ("users", "events")
    }
    assert crm.authenticate(world["secret"]).login == "anna"
    monkeypatch.undo()
    with crm.session() as s:
        assert s.users.deactivate("anna", reassign_to="boris")["clients"] == 3


def test_reassignment_is_set_based(crm_factory: Any) -> None:
    """The number of statements does not grow with the number of records."""

    def statements(n: int) -> int:
        crm = crm_factory(f"crm{n}")
        with crm.session() as s:
            s.users.add("anna", role="manager")
            s.users.add("boris", role="manager")
        with crm.session("anna") as s:
            for i in range(n):
                client = s.clients.create(f"Client {i}")
                s.deals.open(client.id)
                s.tasks.add("Call", due="2030-01-01", client_id=client.id)
        seen: list[str] = []
        counter = lambda *args: seen.append(args[2])  # noqa: E731
        event.listen(crm.engine, "before_cursor_execute", counter)
        try:
            with crm.session() as s:
                start = len(seen)
                done = s.users.deactivate("anna", reassign_to="boris")
                used = len(seen) - start
        finally:
            event.remove(crm.engine, "before_cursor_execute", counter)
        assert (done["clients"], done["deals"], done["tasks"]) == (n, n, n)
        with crm.session(readonly=True) as s:
            assert s.clients.count(owner="boris") == n
        return used

    assert statements(3) == statements(40)


# -- "deactivation takes effect for a session already open" ----------------------------------
def test_a_working_token_stops_right_after_deactivation(crm: CRM, world: dict) -> None:
    assert crm.authenticate(world["secret"]).login == "anna"
    with crm.session(token=world["secret2"]) as s:
        assert s.user.login == "anna"
    admin = other_process(crm)
    try:
        with admin.session() as s:
            s.users.deactivate("anna", reassign_to="boris")
    finally:
        admin.close()
    for secret in (world["secret"], world["secret2"]):
        with pytest.raises(PermissionDenied):
            crm.authenticate(secret)
        with pytest.raises(PermissionDenied), crm.session(token=secret):
            pass
    with pytest.raises(DeploymentError) as err, crm.session(as_user="anna"):
        pass
    assert "deactivated" in err.value.message


def test_a_long_lived_holder_of_a_token_is_refused_at_its_next_use(crm: CRM, world: dict) -> None:
    """A server or a script keeps the token and opens a session per request."""
    holder = State(str(crm.config.root), None, crm.plugins, token=world["secret"])
    with holder.session(readonly=True) as s:
        assert s.user.login == "anna" and s.clients.count() >= 3
    with holder.session() as s:
        s.clients.create("Made through the token")
    admin = other_process(crm)
    try:
        with admin.session() as s:
            s.users.deactivate("anna", reassign_to="boris")
    finally:
        admin.close()
    with pytest.raises(PermissionDenied), holder.session(readonly=True):
        pass
    with pytest.raises(PermissionDenied), holder.session():
        pass
    holder.crm().close()


def test_the_cli_with_a_token_stops_working_after_deactivation(crm: CRM, world: dict) -> None:
    env = {"CRMKIT_TOKEN": world["secret"]}
    for result in (
        run_cli(crm, "client", "list", "--format", "json", env=env),
        run_cli(crm, "--token", world["secret2"], "client", "list", "--format", "json"),
    ):
        assert result.exit_code == 0, result.output
    made = run_cli(crm, "client", "add", "Via token", env=env)
    assert made.exit_code == 0, made.stderr
    deactivated = run_cli(crm, "user", "deactivate", "anna", "--reassign-to", "boris")
    assert deactivated.exit_code == 0, deactivated.stderr
    for result in (
        run_cli(crm, "client", "list", env=env),
        run_cli(crm, "--token", world["secret2"], "client", "list"),
    ):
        assert result.exit_code == 5
        assert result.stderr == f"Error: token: {INVALID_TOKEN}\n"
    with crm.session(readonly=True) as s:
        # the client made through anna's token passed to boris with the rest
        assert [c.owner for c in s.clients.list(search="Via token")] == ["boris"]


# -- the command line -------------------------------------------------------------------------
def test_cli_token_create_list_revoke(crm: CRM, world: dict) -> None:
    made = run_cli(crm, "--as", "boris", "user", "token", "create", "boris", "--name", "ci")
    assert made.exit_code == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith(TOKEN_PREFIX) and "\n" not in secret
    assert "will not be shown again" in made.stderr and "'ci' for boris" in made.stderr
    assert crm.authenticate(secret).login == "boris"
    as_json = run_cli(
        crm, "user", "token", "create", "boris", "--expires-days", "3", "--format", "json"
    )
    assert as_json.exit_code == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["token"].startswith(TOKEN_PREFIX) and data["expires_at"] and data["user"] == "boris"

    listed = run_cli(crm, "--token", secret, "user", "token", "list", "--format", "json")
    rows = json.loads(listed.stdout)
    assert [(r["user"], r["name"], r["status"]) for r in rows] == [
        ("boris", "ci", "active"),
        ("boris", "default", "active"),
    ]
    assert secret not in listed.stdout and "token_hash" not in listed.stdout
    everyone = run_cli(crm, "user", "token", "list", "--format", "json")
    assert {r["user"] for r in json.loads(everyone.stdout)} == {"anna", "boris"}

    revoked = run_cli(crm, "--token", secret, "user", "token", "revoke", str(rows[0]["id"]))
    assert (
        revoked.exit_code == 0
        and revoked.stdout == f"Revoked token #{rows[0]['id']} 'ci' of boris.\n"
    )
    again = run_cli(crm, "user", "token", "revoke", str(rows[0]["id"]))
    assert again.exit_code == 4 and "already revoked" in again.stderr
    missing = run_cli(crm, "user", "token", "revoke", "999")
    assert missing.exit_code == 3
    foreign = run_cli(crm, "--as", "boris", "user", "token", "create", "anna")
    assert foreign.exit_code == 5 and "their own tokens" in foreign.stderr
    bad_days = run_cli(crm, "user", "token", "create", "anna", "--expires-days", "0")
    assert bad_days.exit_code == 2


def test_cli_refuses_as_and_token_together(crm: CRM, world: dict) -> None:
    both = run_cli(crm, "--as", "anna", "--token", world["secret"], "client", "list")
    assert both.exit_code == 2
    assert "--as (CRMKIT_AS) or --token (CRMKIT_TOKEN), not both" in both.stderr
    env_both = run_cli(
        crm, "client", "list", env={"CRMKIT_AS": "anna", "CRMKIT_TOKEN": world["secret"]}
    )
    assert env_both.exit_code == 2
    bad = run_cli(crm, "--token", "crmk_nonsense", "client", "list")
    assert bad.exit_code == 5 and bad.stderr == f"Error: token: {INVALID_TOKEN}\n"


def test_cli_deactivate_and_activate(crm: CRM, world: dict) -> None:
    refused = run_cli(crm, "user", "deactivate", "anna")
    assert refused.exit_code == 2
    assert refused.stderr == (
        "Error: reassign_to: 'anna' has 3 clients, 2 open deals and 2 open tasks: name the "
        "active user who takes them over (reassign_to, --reassign-to LOGIN)\n"
    )
    denied = run_cli(crm, "--as", "boris", "user", "deactivate", "anna", "--reassign-to", "boris")
    assert denied.exit_code == 5
    by_token = run_cli(
        crm,
        "user",
        "deactivate",
        "anna",
        "--reassign-to",
        "boris",
        env={"CRMKIT_TOKEN": world["secret"]},
    )
    assert by_token.exit_code == 5  # anna's own token is a manager's
    admin_itself = run_cli(crm, "user", "deactivate", "admin", "--reassign-to", "boris")
    assert admin_itself.exit_code == 2 and "deployment's admin" in admin_itself.stderr

    done = run_cli(crm, "user", "deactivate", "anna", "--reassign-to", "boris", "--note", "left")
    assert done.exit_code == 0, done.stderr
    assert done.stdout == (
        "Deactivated anna: access ended, 2 tokens revoked.\n"
        "Passed to boris: 3 clients, 2 open deals, 2 open tasks "
        "(closed deals and done tasks keep their owner).\n"
    )
    twice = run_cli(crm, "user", "deactivate", "anna", "--reassign-to", "boris")
    assert twice.exit_code == 4
    as_anna = run_cli(crm, "--as", "anna", "client", "list")
    assert as_anna.exit_code == 6 and "deactivated" in as_anna.stderr

    nothing = run_cli(crm, "user", "deactivate", "olga", "--format", "json")
    assert nothing.exit_code == 0
    assert json.loads(nothing.stdout) == {
        "user": "olga",
        "reassigned_to": None,
        "tokens_revoked": 0,
        "clients": 0,
        "deals": 0,
        "tasks": 0,
    }
    back = run_cli(crm, "user", "activate", "anna")
    assert back.exit_code == 0 and "old tokens stay revoked" in back.stdout
    assert run_cli(crm, "--as", "anna", "client", "list").exit_code == 0
    assert run_cli(crm, "user", "activate", "anna").exit_code == 4


def test_cli_help_says_closed_deals_keep_their_owner(crm: CRM) -> None:
    shown = run_cli(crm, "user", "deactivate", "--help")
    assert shown.exit_code == 0
    text = " ".join(shown.stdout.split())
    assert "past sales stay attributed to whoever made them" in text
    assert "--reassign-to LOGIN" in text
    assert "--token TOKEN" in run_cli(crm, "--help").stdout
