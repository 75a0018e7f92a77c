"""The tamper-evident audit log: the hash chain, what sessions write, verify and show."""

from __future__ import annotations

import itertools
import json
import threading

import pytest
from sqlalchemy import delete, event, select, update

from crmkit.core import audit
from crmkit.core.audit import GENESIS
from crmkit.transfer.importer import import_file


def rows(crm) -> list[dict]:
    with crm.connect(readonly=True) as conn:
        t = audit.table()
        return [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.id))]


def verify(crm, **kw) -> audit.Verification:
    with crm.connect(readonly=True) as conn:
        return audit.verify(conn, **kw)


def tamper(crm, statement) -> None:
    with crm.connect() as conn:
        conn.execute(statement)


def fill(crm) -> None:
    """A few sessions of changes and access decisions (entry #1 is the admin's creation)."""
    with crm.session() as s:
        s.users.add("anna", role="manager")
        acme = s.clients.create("Acme", email="buy@acme.example")
    with crm.session(as_user="anna") as s:
        s.audit("read", "client", ids=[acme.id])
        s.audit("export", "client", ids=[acme.id, 99], allowed=False, detail={"why": "quota"})
    with crm.session() as s:
        s.clients.update(acme.id, phone="+1 202 555 0100")


def test_sessions_append_one_chain_that_verifies(crm):
    fill(crm)
    entries = rows(crm)
    assert [e["id"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["prev_hash"] == GENESIS
    for before, entry in itertools.pairwise(entries):
        assert entry["prev_hash"] == before["hash"]
    created = [e for e in entries if e["action"] == "created" and e["resource"] == "client"]
    assert created[0]["kind"] == "change" and created[0]["login"] == "admin"
    denied = next(e for e in entries if not e["allowed"])
    assert (denied["login"], denied["kind"], denied["action"]) == ("anna", "access", "export")
    assert denied["record_ids"] == [created[0]["record_ids"][0], 99]
    assert denied["detail"] == {"why": "quota"}
    result = verify(crm)
    assert result.ok and result.checked == len(entries)
    assert (result.head_id, result.head) == (entries[-1]["id"], entries[-1]["hash"])


def test_what_is_hashed_is_what_reads_back(crm):
    """Key order, unicode and numbers as JSONB rewrites them still verify."""
    detail = {
        "zeta": 1,
        "alpha": {"b": [3, 2, 1], "a": "Ünïcödé ✓", "c": None},
        "floats": [0.1, 5.0, -0.0, 1e-07, 1e16, 1e20, 1.2345678901234567e25, 2.5e-300],
        "big": 2**70,
        "flags": (True, False),
        "nan": float("nan"),
        "nul": "a\x00b",
        7: "int key",
    }
    with crm.session() as s:
        s.audit("read", "client", ids=(1, 2), detail=detail)
    assert verify(crm).ok
    stored = rows(crm)[-1]["detail"]
    assert stored["alpha"] == {"a": "Ünïcödé ✓", "b": [3, 2, 1], "c": None}
    assert stored["7"] == "int key" and stored["big"] == 2**70


@pytest.mark.parametrize(
    "change",
    [
        {"detail": {"why": "nothing"}},
        {"allowed": True},
        {"login": "admin"},
        {"record_ids": [1]},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_changed_entry_is_named(crm, change):
    fill(crm)
    denied = next(e for e in rows(crm) if not e["allowed"])
    t = audit.table()
    tamper(crm, update(t).where(t.c.id == denied["id"]).values(change))
    result = verify(crm)
    assert not result.ok
    assert result.broken_id == denied["id"]
    assert result.reason == "its hash does not match its contents (the entry was changed)"
    assert result.head_id == denied["id"] - 1


def test_a_changed_entry_with_a_recomputed_hash_breaks_the_next(crm):
    fill(crm)
    entries = rows(crm)
    target = entries[2]
    forged = {**target, "detail": {"forged": True}}
    t = audit.table()
    tamper(
        crm,
        update(t)
        .where(t.c.id == target["id"])
        .values(detail=forged["detail"], hash=audit.entry_hash(forged)),
    )
    result = verify(crm)
    assert result.broken_id == target["id"] + 1
    assert result.reason == (
        f"its prev_hash does not match entry #{target['id']} "
        "(an entry before it was removed or changed)"
    )


def test_a_removed_entry_is_detected(crm):
    fill(crm)
    t = audit.table()
    tamper(crm, delete(t).where(t.c.id == 3))
    result = verify(crm)
    assert (result.ok, result.broken_id, result.checked) == (False, 4, 3)
    assert result.reason == "ids jump from 2 to 4 (entries were removed)"


def test_removed_newest_entries_show_only_against_a_kept_head(crm):
    fill(crm)
    kept = verify(crm)
    t = audit.table()
    tamper(crm, delete(t).where(t.c.id == kept.head_id))
    assert verify(crm).ok  # the chain alone cannot tell
    result = verify(crm, expect_head=kept.head)
    assert not result.ok and result.broken_id is None
    assert "no entry has the expected head hash" in result.reason
    with crm.session() as s:
        s.audit("read", "client")
    assert verify(crm, expect_head=verify(crm).head).ok


def test_a_failed_session_keeps_its_access_entries_not_its_changes(crm):
    error = RuntimeError("boom")
    with pytest.raises(RuntimeError) as raised, crm.session() as s:
        s.clients.create("Rolled Back")
        s.audit("read", "client", ids=[42], allowed=False, detail={"rule": "deny-all"})
        raise error
    assert raised.value is error  # the original exception, unchanged
    entries = rows(crm)
    assert [e["action"] for e in entries if e["kind"] == "change"] == ["created"]  # the admin
    kept = [e for e in entries if e["record_ids"] == [42]]
    assert [(e["kind"], e["action"], e["allowed"]) for e in kept] == [("access", "read", False)]
    assert kept[0]["detail"] == {"rule": "deny-all"}
    with crm.session() as s:
        assert s.clients.list() == []
    assert verify(crm).ok


def test_a_readonly_session_writes_its_entries(crm):
    with crm.session(readonly=True) as s:
        s.audit("read", "client", ids=[1, 2, 3])
    assert rows(crm)[-1]["record_ids"] == [1, 2, 3]
    assert verify(crm).ok


def test_no_entries_no_extra_transaction(crm):
    begins = []
    event.listen(crm.engine, "begin", begins.append)
    with crm.session(readonly=True) as s:
        s.connection.execute(select(1))
    assert len(begins) == 1
    with crm.session(readonly=True) as s:
        s.audit("read", "user")
    assert len(begins) == 3  # the session's, then the one that writes its entry
    with crm.session() as s:
        s.audit("read", "user")
    assert len(begins) == 4  # written in the session's own transaction


def test_concurrent_writers_make_one_chain(crm):
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for i in range(8):
                with crm.session() as s:
                    s.clients.create(f"{name} {i}")
                    s.audit("read", "client", detail={"by": name})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = verify(crm)
    assert result.ok and result.checked == 1 + 2 * 8 * 2


def test_an_import_batch_is_one_change_entry(crm, tmp_path):
    source = tmp_path / "clients.csv"
    source.write_text("name\n" + "".join(f"Client {i}\n" for i in range(7)), "utf-8")
    result = import_file(crm, "clients", source, batch_size=3)
    assert result.inserted == 7
    imported = [e for e in rows(crm) if e["action"] == "clients_imported"]
    assert [len(e["record_ids"]) for e in imported] == [3, 3, 1]
    assert all(e["kind"] == "change" for e in imported)
    assert sorted(i for e in imported for i in e["record_ids"]) == list(range(1, 8))
    assert verify(crm).ok


# -- the command line -----------------------------------------------------------------------
def test_cli_verify_prints_the_count_and_head(crm, invoke):
    fill(crm)
    result = invoke("audit", "verify")
    assert result.exit_code == 0, result.stderr
    head = verify(crm)
    assert result.output == f"audit log intact: {head.checked} entries; head {head.head}\n"
    data = invoke("audit", "verify", json=True).json
    assert data["ok"] is True and data["head"] == head.head and data["checked"] == head.checked
    assert invoke("audit", "verify", "--head", head.head).exit_code == 0


def test_cli_verify_names_the_first_broken_entry(crm, invoke):
    fill(crm)
    t = audit.table()
    tamper(crm, update(t).where(t.c.id == 3).values(login="mallory"))
    result = invoke("audit", "verify")
    assert result.exit_code == 8
    assert result.output == ""
    assert result.stderr == (
        "Error: audit log broken at entry #3: its hash does not match its contents "
        "(the entry was changed); entries intact before it: #1-#2\n"
    )
    assert "Traceback" not in result.stderr
    tamper(crm, delete(t).where(t.c.id == 3))
    result = invoke("audit", "verify")
    assert result.exit_code == 8
    assert "entry #4: ids jump from 2 to 4 (entries were removed)" in result.stderr


def test_cli_verify_with_a_lost_head(crm, invoke):
    fill(crm)
    head = verify(crm)
    t = audit.table()
    tamper(crm, delete(t).where(t.c.id == head.head_id))
    result = invoke("audit", "verify", "--head", head.head)
    assert result.exit_code == 8
    assert "no entry has the expected head hash" in result.stderr


def test_cli_show_filters(crm, invoke):
    fill(crm)
    everything = invoke("audit", "show", json=True).json
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    anna = invoke("audit", "show", "--user", "anna", json=True).json
    assert [(e["action"], e["allowed"]) for e in anna] == [("export", False), ("read", True)]
    assert {e["login"] for e in anna} == {"anna"}
    assert invoke("audit", "show", "--user", "gone", json=True).json == []
    users = invoke("audit", "show", "--resource", "user", json=True).json
    assert {e["resource"] for e in users} == {"user"} and len(users) == 2
    access = invoke("audit", "show", "--kind", "access", json=True).json
    assert {e["kind"] for e in access} == {"access"} and len(access) >= 2
    last = invoke("audit", "show", "--user", "anna", "--limit", "1", json=True).json
    assert [e["action"] for e in last] == ["export"]
    assert invoke("audit", "show", "--since", "+1h", json=True).json == []
    assert len(invoke("audit", "show", "--since", "-1h", json=True).json) == len(everything)
    table = invoke("audit", "show", "--user", "anna")
    assert table.exit_code == 0, table.stderr
    assert "DENIED" in table.output and "export" in table.output


def test_cli_show_bad_since_is_a_clear_error(crm, invoke):
    result = invoke("audit", "show", "--since", "yesterday-ish")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: since: ")


@pytest.mark.parametrize("command", ["verify", "show"])
def test_only_admins_may_use_the_audit_commands(crm, invoke, command):
    with crm.session() as s:
        s.users.add("anna", role="manager")
    result = invoke("audit", command, as_user="anna")
    assert result.exit_code == 5
    assert result.stderr.startswith("Error: user 'anna' (manager) may not do this")


def test_show_json_is_the_stored_entry(crm, invoke):
    fill(crm)
    shown = invoke("audit", "show", "--limit", "1", json=True).json[0]
    stored = rows(crm)[-1]
    assert shown["hash"] == stored["hash"] and shown["detail"] == stored["detail"]
    assert json.dumps(shown)  # plain JSON all through
