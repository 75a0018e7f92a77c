"""The crmkit command line: output, JSON, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crmkit import Segment, hookimpl


class ShopSegment:
    @hookimpl
    def crmkit_segments(self) -> list[Segment]:
        return [
            Segment(
                name="shop",
                title="Shop",
                schema={
                    "type": "object",
                    "properties": {
                        "area": {"type": "number", "minimum": 0, "title": "Sales area"},
                        "code": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["area"],
                },
            )
        ]


@pytest.fixture
def crmkit_plugins() -> list[object]:
    return [ShopSegment()]


def run_crmkit(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    """The real console script in a subprocess (as a user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "crmkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "CRMKIT_LOAD_PLUGINS": "", **(env or {})},
        timeout=120,
    )


def test_init_creates_a_working_deployment(tmp_path, crmkit_database_url):
    """On the test database: SQLite in the folder, or a fresh PostgreSQL database."""
    database = ["--database", crmkit_database_url] if crmkit_database_url else []
    result = run_crmkit(
        "init", str(tmp_path / "mycrm"), "--admin", "boss", *database, "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["admin"] == "boss"
    assert info["schema"][0]["up_to_date"] is True
    assert (tmp_path / "mycrm" / "crmkit.toml").is_file()
    assert (tmp_path / "mycrm" / "crmkit.db").is_file() is (crmkit_database_url is None)
    if crmkit_database_url:
        assert info["database"].startswith("postgresql+psycopg://")
    listed = run_crmkit("user", "list", "--format", "json", cwd=tmp_path / "mycrm")
    assert [u["login"] for u in json.loads(listed.stdout)] == ["boss"]
    assert json.loads(listed.stdout)[0]["role"] == "admin"


def test_init_refuses_to_overwrite(tmp_path):
    assert run_crmkit("init", str(tmp_path / "c")).returncode == 0
    again = run_crmkit("init", str(tmp_path / "c"))
    assert again.returncode == 6
    assert "refusing to overwrite" in again.stderr
    assert "Traceback" not in again.stderr


def test_init_with_unreachable_database_leaves_nothing(tmp_path):
    target = tmp_path / "c"
    url = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"
    result = run_crmkit("init", str(target), "--database", url)
    assert result.returncode == 6
    assert result.stderr.startswith("Error: database: cannot reach the database")
    assert "Traceback" not in result.stderr
    assert not target.exists()


def test_missing_deployment(tmp_path):
    result = run_crmkit("-C", str(tmp_path), "client", "list")
    assert result.returncode == 6
    assert "no crmkit deployment" in result.stderr and "crmkit init" in result.stderr
    env_result = run_crmkit("client", "list", env={"CRMKIT_DIR": str(tmp_path / "x")})
    assert env_result.returncode == 6


def test_unreachable_sqlite_database(tmp_path):
    (tmp_path / "crmkit.toml").write_text(
        '[database]\nurl = "sqlite:///missing-folder/crm.db"\n', "utf-8"
    )
    result = run_crmkit("-C", str(tmp_path), "client", "list")
    assert result.returncode == 6
    assert result.stderr.startswith("Error: database: cannot reach the database")


def test_broken_config_is_named(tmp_path):
    (tmp_path / "crmkit.toml").write_text("[database]\nulr = 'x'\n", "utf-8")
    result = run_crmkit("-C", str(tmp_path), "client", "list")
    assert result.returncode == 6
    assert "database" in result.stderr and "ulr" in result.stderr


def test_client_add_prints_what_it_created(invoke):
    result = invoke("client", "add", "Acme", "--email", "buy@acme.example", "--source", "website")
    assert result.exit_code == 0, result
    assert result.output.startswith("Created client #1 Acme")
    data = invoke("client", "add", "Beta", "--kind", "person", json=True).json
    assert data["id"] == 2 and data["kind"] == "person" and data["owner"] == "admin"


def test_client_params_are_parsed_with_the_schema(invoke):
    data = invoke(
        "client",
        "add",
        "Shop",
        "--segment",
        "shop",
        "--param",
        "area=120.5",
        "--param",
        "code=007",
        "--param",
        'tags=["a","b"]',
        "--requisite",
        "tax_id=0123",
        json=True,
    ).json
    assert data["params"] == {"area": 120.5, "code": "007", "tags": ["a", "b"]}
    assert data["requisites"] == {"tax_id": "0123"}
    assert data["missing_primary_fields"] == []


def test_client_update_merges_params(invoke):
    invoke("client", "add", "Shop", "--segment", "shop", "--param", "code=1")
    data = invoke("client", "update", "1", "--param", "area=5", "--param", "code=", json=True).json
    assert data["params"] == {"area": 5}
    shown = invoke("client", "show", "1", json=True).json
    assert shown["params"] == {"area": 5}
    nothing = invoke("client", "update", "1")
    assert nothing.exit_code == 1 and "nothing to change" in nothing.stderr


def test_list_show_and_contacts(invoke):
    invoke("user", "add", "anna", "--role", "manager", "--name", "Anna K")
    invoke("client", "add", "Acme", "--owner", "anna")
    invoke("client", "add", "Other")
    contact = invoke("contact", "add", "1", "Ivan", "--position", "CEO", json=True).json
    assert contact["client_id"] == 1 and contact["name"] == "Ivan"
    listed = invoke("client", "list", "--owner", "anna", json=True).json
    assert [c["name"] for c in listed] == ["Acme"]
    shown = invoke("client", "show", "1", json=True).json
    assert shown["contacts"][0]["position"] == "CEO"
    table = invoke("client", "show", "1")
    assert "Acme" in table.output and "Ivan" in table.output
    assert [c["name"] for c in invoke("contact", "list", "1", json=True).json] == ["Ivan"]


def test_users_and_teams(invoke):
    assert invoke("team", "add", "Sales").output.startswith("Created team #1 Sales")
    invoke("team", "add", "North", "--parent", "Sales")
    teams = invoke("team", "list", json=True).json
    assert {t["name"]: t["parent"] for t in teams} == {"North": "Sales", "Sales": None}
    user = invoke("user", "add", "anna", "--role", "manager", "--team", "North", json=True).json
    assert user["team"] == "North" and user["role"] == "manager"
    assert [u["login"] for u in invoke("user", "list", "--team", "Sales", json=True).json] == [
        "anna"
    ]
    denied = invoke("user", "add", "eve", "--role", "admin", as_user="anna")
    assert denied.exit_code == 5 and "may not" in denied.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["client", "add", "X", "--email", "nope"], 2, "Error: email: 'nope' is not a valid email"),
        (["client", "add", "X", "--segment", "zzz"], 2, "Error: segment: unknown segment 'zzz'"),
        (["client", "add", "X", "--segment", "shop", "--param", "area=-1"], 2, "params.area"),
        (["client", "add", "X", "--owner", "ghost"], 2, "Error: owner: no user 'ghost'"),
        (["client", "add", "X", "--source", "tv"], 2, "Error: source: unknown channel 'tv'"),
        (["client", "add", "X", "--param", "novalue"], 1, "Error: param: expected KEY=VALUE"),
        (["client", "show", "99"], 3, "Error: client: no client with id 99"),
        (["contact", "add", "99", "Ivan"], 3, "Error: client: no client with id 99"),
        (["user", "add", "Bad Login", "--role", "manager"], 2, "Error: login:"),
        (["user", "add", "x", "--role", "manager", "--team", "nope"], 2, "Error: team: no team"),
        (["team", "add", "T", "--parent", "nope"], 3, "Error: parent: no team 'nope'"),
    ],
)
def test_bad_input_gives_one_clear_line(invoke, args, code, message):
    result = invoke(*args)
    assert result.exit_code == code, result
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.output


def test_duplicate_names_the_existing_client_and_writes_nothing(invoke, crm):
    invoke("client", "add", "Acme", "--email", "buy@acme.example")
    result = invoke("client", "add", "Acme 2", "--email", "BUY@acme.example")
    assert result.exit_code == 4
    assert "client #1 'Acme' already has the email" in result.stderr
    with crm.session() as s:
        assert s.clients.count() == 1
        assert [e["action"] for e in s.events("client", 1)] == ["created"]


def test_unknown_acting_user(invoke):
    result = invoke("client", "list", as_user="ghost")
    assert result.exit_code == 3 and "no user 'ghost'" in result.stderr


def test_segment_and_channel_registries(invoke):
    segments = invoke("segment", "list", json=True).json
    assert segments == [
        {
            "name": "shop",
            "title": "Shop",
            "plugin": None,
            "primary_fields": ["area"],
            "parameters": ["area", "code", "tags"],
        }
    ]
    shown = invoke("segment", "show", "shop")
    assert "Sales area" in shown.output and ">= 0" in shown.output
    assert invoke("segment", "show", "nope").exit_code == 2
    channels = {c["name"] for c in invoke("channel", "list", json=True).json}
    assert {"website", "referral", "cold_call"} <= channels


def test_config_channels_extend_the_list(crm, invoke):
    path = crm.config.root / "crmkit.toml"
    path.write_text(
        path.read_text().replace(
            "channels = []", 'channels = ["yandex_direct", {name = "tv", title = "TV"}]'
        )
    )
    assert invoke("client", "add", "X", "--source", "tv").exit_code == 0
    assert invoke("client", "add", "Y", "--source", "yandex_direct").exit_code == 0


def test_internal_errors_are_one_line(invoke, register_plugin):
    class Broken:
        @hookimpl
        def crmkit_client_saved(self, session, client, created):
            raise ZeroDivisionError("plugin bug")

    register_plugin(Broken())
    result = invoke("client", "add", "X")
    assert result.exit_code == 70
    assert "internal error: ZeroDivisionError: plugin bug" in result.stderr
    assert "CRMKIT_DEBUG" in result.stderr


def test_db_commands(invoke):
    current = invoke("db", "current", json=True).json
    assert current == [
        {"branch": "crmkit", "current": "crmkit_0013", "head": "crmkit_0013", "up_to_date": True}
    ]
    assert invoke("db", "upgrade", json=True).json == current


def test_version_and_help():
    result = run_crmkit("--version")
    assert result.returncode == 0 and result.stdout.startswith("crmkit, version ")
    helped = run_crmkit("--help")
    for command in ("init", "plugins", "client", "user", "team", "contact", "db", "plugin"):
        assert f"  {command} " in helped.stdout


def test_a_reader_that_stops_early_is_no_error(crm, tmp_path):
    """`crmkit client list --format json | head -1` ends quietly, without a traceback."""
    from crmkit.transfer.importer import import_file

    source = tmp_path / "many.csv"
    source.write_text("name,email\n" + "".join(f"C{i},c{i}@x.example\n" for i in range(3000)))
    import_file(crm, "clients", source)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crmkit",
            "-C",
            str(crm.config.root),
            "client",
            "list",
            "--limit",
            "3000",
            "--format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CRMKIT_LOAD_PLUGINS": ""},
    )
    assert child.stdout.read(10)
    child.stdout.close()  # the reader leaves, as `head` does
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
