"""The documentation: every hook has a reference entry, the example plugin works, the site builds.

The plugin author guide includes ``docs/examples/crmkit_vip`` with
``literalinclude``; the tests below run that very file through the fixtures of
:mod:`crmkit.testing`, so the guide cannot show code that does not work.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from crmkit import CRM, ConfigError, ValidationError
from crmkit.core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"

if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

import crmkit_vip  # noqa: E402  (lives in docs/examples, added to sys.path above)


# -- the hook reference ---------------------------------------------------------------
def _hookspec_signatures() -> dict[str, str]:
    """``name -> "name(arg1, arg2)"`` for every ``crmkit_*`` function in hookspecs.py."""
    tree = ast.parse(Path(hookspecs.__file__).read_text("utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("crmkit_"):
            args = ", ".join(a.arg for a in node.args.args)
            found[node.name] = f"{node.name}({args})"
    return found


def _rst_headings(text: str) -> list[str]:
    """The titles of the reST sections in ``text`` (a line underlined by = - ~ ^ ...)."""
    lines = text.splitlines()
    headings = []
    for title, underline in itertools.pairwise(lines):
        if (
            title.strip()
            and re.fullmatch(r"([=\-~^\"'`#*+])\1+", underline.strip())
            and len(underline.strip()) >= len(title.strip())
        ):
            headings.append(title.strip())
    return headings


def test_every_hookspec_is_found() -> None:
    signatures = _hookspec_signatures()
    assert "crmkit_tables" in signatures
    assert signatures["crmkit_check_client"] == "crmkit_check_client(session, client, changes)"
    assert set(signatures) == {n for n in dir(hookspecs) if n.startswith("crmkit_")}


def test_every_hookspec_has_a_reference_section() -> None:
    text = (DOCS / "hooks.rst").read_text("utf-8")
    headings = _rst_headings(text)
    missing = [sig for sig in _hookspec_signatures().values() if sig not in headings]
    assert not missing, f"docs/hooks.rst lacks a section headed exactly: {missing}"
    for name in _hookspec_signatures():
        assert f".. autofunction:: crmkit.core.hookspecs.{name}" in text, name


def test_hook_reference_names_no_unknown_hook() -> None:
    headings = _rst_headings((DOCS / "hooks.rst").read_text("utf-8"))
    documented = {h.split("(")[0] for h in headings if h.startswith("crmkit_")}
    assert documented == set(_hookspec_signatures())


# -- the API reference -------------------------------------------------------------------
def test_every_public_name_is_documented() -> None:
    import crmkit

    text = (DOCS / "api.rst").read_text("utf-8") + (DOCS / "hooks.rst").read_text("utf-8")
    documented = set(re.findall(r"^\.\. (?:auto)?\w+:: crmkit\.(\w+)$", text, re.MULTILINE))
    assert sorted(set(crmkit.__all__) - {"__version__"} - documented) == []


# -- the configuration page --------------------------------------------------------------
def test_config_page_describes_every_key() -> None:
    from crmkit.core.config import CONFIG_SCHEMA

    text = (DOCS / "config.rst").read_text("utf-8")
    for section, schema in CONFIG_SCHEMA["properties"].items():
        heading = "[segments.NAME]" if section == "segments" else f"[{section}]"
        heading = "[plugin.NAME]" if section == "plugin" else heading
        assert f"``{heading}``" in text, heading
        for key in schema.get("properties", {}):
            assert f"``{key}``" in text, f"{section}.{key}"
    for key in CONFIG_SCHEMA["properties"]["segments"]["additionalProperties"]["properties"]:
        assert f"``{key}``" in text, f"segments.NAME.{key}"


def test_config_page_describes_every_environment_variable() -> None:
    used = set()
    for path in (ROOT / "crmkit").rglob("*.py"):
        used |= set(re.findall(r"\bCRMKIT_[A-Z_]+\b", path.read_text("utf-8")))
    text = (DOCS / "config.rst").read_text("utf-8")
    assert used, "no CRMKIT_* variable found in crmkit/"
    assert sorted(v for v in used if f"``{v}``" not in text) == []


def test_default_config_shown_is_what_init_writes() -> None:
    from crmkit.core.config import render_config

    shown = (EXAMPLES / "crmkit.toml").read_text("utf-8")
    assert shown == render_config(database_url=None, admin="admin")


# -- the example plugin (docs/examples/crmkit_vip) -----------------------------------------
@pytest.fixture
def crmkit_plugins() -> list[Any]:
    """Register the example plugin on the ``crm`` fixture of crmkit.testing."""
    return [crmkit_vip]


def test_example_plugin_registers_the_vip_segment(crm: Any) -> None:
    seg = crm.segment("vip")
    assert seg.title == "VIP client"
    assert seg.primary_fields == ["tier", "annual_spend"]


def test_example_plugin_refuses_a_vip_without_phone(session: Any) -> None:
    with pytest.raises(ValidationError) as info:
        session.clients.create("Big Co", segment="vip", params={"tier": "gold"})
    assert str(info.value) == "phone: a VIP client needs a phone number"


def test_example_plugin_checks_params_against_its_schema(session: Any) -> None:
    with pytest.raises(ValidationError) as info:
        session.clients.create(
            "Big Co", phone="+1 555 0100", segment="vip", params={"tier": "silver"}
        )
    assert info.value.field == "params.tier"


def test_example_plugin_records_an_event_and_a_review(crm: Any) -> None:
    with crm.session() as s:
        client = s.clients.create("Big Co", phone="+1 555 0100", segment="vip", params={})
        s.clients.update(client.id, params={"tier": "gold", "annual_spend": 250000})
    with crm.session() as s:
        actions = [e["action"] for e in s.events("client", client.id)]
        assert actions == ["created", "vip_review_requested", "updated"]
        assert [r["name"] for r in crmkit_vip.pending_reviews(s)] == ["Big Co"]


def test_example_plugin_leaves_other_clients_alone(session: Any) -> None:
    client = session.clients.create("Small Co")
    assert [e["action"] for e in session.events("client", client.id)] == ["created"]
    assert crmkit_vip.pending_reviews(session) == []


def test_example_plugin_rolls_back_with_the_card(crm: Any) -> None:
    with pytest.raises(RuntimeError), crm.session() as s:
        s.clients.create("Big Co", phone="+1 555 0100", segment="vip")
        raise RuntimeError("something went wrong later in the same session")
    with crm.session() as s:
        assert s.clients.count() == 0
        assert crmkit_vip.pending_reviews(s) == []


def _set_vip_reviews(crm: Any, value: str) -> Path:
    config = crm.config.root / "crmkit.toml"
    config.write_text(config.read_text("utf-8") + f"\n[plugin.vip]\nreviews = {value}\n", "utf-8")
    return crm.config.root


def test_example_plugin_setting_turns_reviews_off(crm: Any) -> None:
    reopened = CRM.open(_set_vip_reviews(crm, "false"), plugins=crm.plugins)
    with reopened, reopened.session() as s:
        client = s.clients.create("Big Co", phone="+1 555 0100", segment="vip")
        assert crmkit_vip.pending_reviews(s) == []
        assert [e["action"] for e in s.events("client", client.id)] == ["created"]


def test_example_plugin_startup_refuses_a_bad_setting(crm: Any) -> None:
    with pytest.raises(ConfigError) as info:
        CRM.open(_set_vip_reviews(crm, '"no"'), plugins=crm.plugins)
    assert str(info.value) == "plugin.vip.reviews: must be true or false, not 'no'"


def test_example_plugin_migration_branch(crm: Any) -> None:
    status = {row["branch"]: row for row in crm.schema_status()}
    assert set(status) == {"crmkit", "vip"}
    assert status["vip"]["head"] == "vip_0001"
    assert all(row["up_to_date"] for row in status.values()), status
    with crm.session() as s:
        assert sqlalchemy.inspect(s.connection).has_table("vip_reviews")


def test_example_plugin_cli_command(crm: Any, invoke: Any) -> None:
    added = invoke("client", "add", "Big Co", "--phone", "+1 555 0100", "--segment", "vip")
    assert added.exit_code == 0, added
    result = invoke("vip", "reviews", json=True)
    assert result.exit_code == 0, result
    assert [row["name"] for row in result.json] == ["Big Co"]
    refused = invoke("client", "add", "Other Co", "--segment", "vip", "--param", "tier=gold")
    assert refused.exit_code == 2
    assert "phone: a VIP client needs a phone number" in refused.stderr


def test_example_plugin_with_crm_factory(crm_factory: Any) -> None:
    plain = crm_factory("plain", plugins=[])
    assert "vip" not in plain.segments
    with_vip = crm_factory("with_vip", plugins=[crmkit_vip])
    assert "vip" in with_vip.segments


def test_example_plugin_imports_no_heavy_module() -> None:
    heavy = ("sqlalchemy", "click", "alembic", "jsonschema", "attrs")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import crmkit_vip; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLES)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


# -- the quickstart --------------------------------------------------------------------
def _console_sessions(text: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` for every ``$`` line of the page's console blocks."""
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"\.\. code-block:: console\n\n((?:   .*\n|\n)+)", text):
        for line in textwrap.dedent(block).rstrip().splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif found:
                found[-1][1].append(line)
    return [(cmd, "\n".join(out).rstrip()) for cmd, out in found]


def _normalized(output: str) -> str:
    output = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", "<time>", output)
    output = re.sub(r"/\S*?/mycrm\b", "<dir>/mycrm", output)
    return "\n".join(line.rstrip() for line in output.splitlines()).strip()


@pytest.mark.slow
def test_quickstart_shows_what_the_commands_print(tmp_path: Path) -> None:
    pytest.importorskip("crmkit_segment_b2b", reason="pip install -e plugins/segment_b2b")
    text = (DOCS / "quickstart.rst").read_text("utf-8")
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    for key in ("CRMKIT_DIR", "CRMKIT_AS", "CRMKIT_DATABASE_URL", "CRMKIT_LOAD_PLUGINS"):
        env.pop(key, None)
    cwd = tmp_path
    for command, expected in _console_sessions(text):
        if command.startswith(("python -m venv", "pip install")):
            continue
        if command.startswith("cd "):
            cwd = cwd / command[3:]
            continue
        run = subprocess.run(
            command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        assert _normalized(run.stdout + run.stderr) == _normalized(expected), command
    [script] = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text)
    [printed] = re.findall(r"it prints:\n\n\.\. code-block:: text\n\n((?:   .*\n|\n)+)", text)
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == textwrap.dedent(printed).strip()


# -- the site ---------------------------------------------------------------------------
@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    if importlib.util.find_spec("sphinx") is None:
        pytest.skip("sphinx is not installed (pip install -e '.[docs]')")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "html" / "hooks.html").is_file()
