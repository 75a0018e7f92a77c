"""The documentation: every hook has a reference entry, the example plugin works, the site builds.

The plugin author guide includes ``docs/examples/crmkit_vip`` with
``literalinclude``; the tests below run that very file through the fixtures of
:mod:`crmkit.testing`, so the guide cannot show code that does not work.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import itertools
import re
import subprocess
import sys
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

import crmkit_sales_rules  # noqa: E402  (lives in docs/examples, added to sys.path above)
import crmkit_vip  # noqa: E402


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
#: Sections whose keys are names chosen by the deployment, and the heading they have.
NAMED_SECTIONS = {
    "segments": "[segments.NAME]",
    "interactions": "[interactions.KIND]",
    "pipelines": "[pipelines.NAME]",
    "plugin": "[plugin.NAME]",
}


def test_config_page_describes_every_key() -> None:
    from crmkit.core.config import CONFIG_SCHEMA

    text = (DOCS / "config.rst").read_text("utf-8")
    headings = _rst_headings(text)
    for section, schema in CONFIG_SCHEMA["properties"].items():
        heading = NAMED_SECTIONS.get(section, f"[{section}]")
        assert f"``{heading}``" in headings, f"config.rst has no section headed {heading}"
        for key in schema.get("properties", {}):
            assert f"``{key}``" in text, f"{section}.{key}"
        named = schema.get("additionalProperties")
        if section in NAMED_SECTIONS:
            assert isinstance(named, dict), f"{section} is no longer a table of named tables"
            for key in named.get("properties", {}):
                assert f"``{key}``" in text, f"{section}.NAME.{key}"


def test_pipelines_page_describes_every_field() -> None:
    from crmkit.core.pipeline import PIPELINE_SCHEMA

    text = (DOCS / "pipelines.rst").read_text("utf-8")
    props = PIPELINE_SCHEMA["properties"]
    fields = {
        "pipeline": props,
        "stage": props["stages"]["items"]["properties"],
        "rule": props["rules"]["items"]["properties"],
        "task": props["rules"]["items"]["properties"]["task"]["properties"],
    }
    missing = [f"{where}.{key}" for where, keys in fields.items() for key in keys]
    missing = [m for m in missing if f"``{m.split('.', 1)[1]}``" not in text]
    assert missing == []
    assert ".. crmkit-json:: crmkit.core.pipeline.PIPELINE_SCHEMA" in text


def test_pipelines_page_shows_every_built_in_definition() -> None:
    from crmkit.plugins import interactions, pipelines

    text = (DOCS / "pipelines.rst").read_text("utf-8")
    registered = pipelines.crmkit_pipelines()
    names = [n for n, v in vars(pipelines).items() if any(v is r for r in registered)]
    assert len(names) == len(registered)
    for name in names:
        assert f".. crmkit-pipeline:: crmkit.plugins.pipelines.{name}\n" in text, name
    assert interactions.crmkit_interaction_kinds() is interactions.KINDS
    assert ".. crmkit-kinds:: crmkit.plugins.interactions.KINDS\n" in text


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


# -- the lifecycle hooks' example (docs/examples/crmkit_sales_rules.py) --------------------
@pytest.fixture
def sales_crm(crm_factory: Any) -> Any:
    return crm_factory("sales", plugins=[("sales_rules", crmkit_sales_rules)])


def test_sales_rules_registers_kinds_and_a_pipeline(sales_crm: Any) -> None:
    letter = sales_crm.interaction_kind("letter")
    assert letter.topics["tender"] == "Tender documents"
    assert "proposal" in letter.topics  # the built-in topics stay
    assert sales_crm.interaction_kind("demo").topics == {"online": "Online", "on_site": "On site"}
    tender = sales_crm.pipelines["tender"]
    assert tender.stage_names == ["announced", "documents", "awarded"]
    assert tender.plugin == "sales_rules"


def test_sales_rules_gate_and_hook_are_refused_in_one_message(sales_crm: Any) -> None:
    with sales_crm.session() as s:
        client = s.clients.create("Vostok Trade")
        deal = s.deals.open(client.id, pipeline="tender", amount=5000)
        with pytest.raises(ValidationError) as info:
            s.deals.move(deal.id, "documents")
    shown = (DOCS / "hooks.rst").read_text("utf-8")
    assert f"   Error: {info.value}\n" in shown
    assert len(info.value.problems) == 2


def test_sales_rules_rule_with_kind_and_topic(sales_crm: Any) -> None:
    with sales_crm.session() as s:
        client = s.clients.create("Vostok Trade")
        s.contacts.add(client.id, "Ivan Petrov")
        deal = s.deals.open(client.id, pipeline="tender", amount=5000, expected_close="2026-12-31")
        other = s.interactions.log(client.id, "letter", topic="proposal", outcome="delivered")
        assert other.changes == []
        logged = s.interactions.log(
            client.id, "letter", topic="tender", outcome="delivered", deal_id=deal.id
        )
        assert logged.refused == []
        assert [(c.to_stage, c.cause) for c in logged.changes] == [("documents", "interaction")]


def test_sales_rules_unanswered_call_and_lost_deal(sales_crm: Any) -> None:
    with sales_crm.session() as s:
        client = s.clients.create("Vostok Trade")
        deal = s.deals.open(client.id, pipeline="b2b", amount=5000)
        logged = s.interactions.log(
            client.id, "call", topic="first_contact", outcome="no_answer", direction="outbound"
        )
        assert [t.title for t in logged.tasks] == ["Call again"]
        hours = (logged.tasks[0].due_at - logged.interaction.occurred_at).total_seconds() / 3600
        assert hours == 4
        logged = s.interactions.log(
            client.id, "demo", topic="online", outcome="not_interested", deal_id=deal.id
        )
        assert s.deals.get(deal.id).status == "lost"
        assert s.deals.get(deal.id).lost_reason == "no_need"
        [review] = s.tasks.list(deal_id=deal.id)
        assert review.title == "Review the lost deal"
        assert len(review.steps) == 3


def test_sales_rules_paid_invoice_moves_the_deal_on(crm_factory: Any) -> None:
    both = crm_factory("both", plugins=[crmkit_vip, ("sales_rules", crmkit_sales_rules)])
    with both.session() as s:
        client = s.clients.create("Vostok Trade", phone="+1 555 0100", segment="vip")
        s.contacts.add(client.id, "Ivan Petrov")
        deal = s.deals.open(client.id, pipeline="b2b", amount=5000)
        s.deals.move(deal.id, "presentation")
        s.deals.move(deal.id, "proposal")
        s.deals.move(deal.id, "contract_invoice")
        invoice = s.invoices.issue(deal.id, 5000)
        assert s.deals.get(deal.id).stage == "contract_invoice"
        s.invoices.pay(invoice.id)
        assert s.deals.get(deal.id).stage == "payment_shipment"
        assert s.deals.history(deal.id)[-1].cause == "automation"


# -- the configuration example (docs/examples/lifecycle.toml) -----------------------------
def test_lifecycle_toml_example_loads_and_works(crm: Any) -> None:
    config = crm.config.root / "crmkit.toml"
    example = (EXAMPLES / "lifecycle.toml").read_text("utf-8")
    config.write_text(config.read_text("utf-8") + "\n" + example, "utf-8")
    with CRM.open(crm.config.root, plugins=crm.plugins) as reopened:
        renewal = reopened.pipelines["renewal"]
        assert renewal.stage_names == ["reminder", "offer", "signed"]
        assert renewal.allow_skip and renewal.stage("offer").gate
        assert reopened.interaction_kind("call").topics["tender"] == "Tender"
        assert reopened.interaction_kind("call").outcomes["tender_invited"] == "Invited to a tender"
        assert reopened.interaction_kind("visit").direction_required is False
        with reopened.session() as s:
            client = s.clients.create("Acme")
            deal = s.deals.open(client.id, pipeline="renewal", amount=5000)
            logged = s.interactions.log(
                client.id, "visit", topic="training", outcome="renewal_requested", deal_id=deal.id
            )
            assert logged.changes == []
            [todo] = logged.tasks
            assert todo.title == "Complete what 'offer' needs, then: Send the renewal offer"
            assert len(todo.steps) == 2
            [refused] = logged.refused
            shown = (DOCS / "config.rst").read_text("utf-8")
            assert f"   {refused}\n" in shown
            assert " ".join(todo.title.split()[:4]) in " ".join(shown.split())
            s.deals.update(deal.id, amount=12000)
            logged = s.interactions.log(
                client.id,
                "meeting",
                topic="negotiation",
                outcome="contract_signed",
                deal_id=deal.id,
            )
            # allow_skip: the rule jumps over "offer"
            assert [c.to_stage for c in logged.changes] == ["signed"]


# -- the quickstart --------------------------------------------------------------------
def test_tutorial_covers_the_lifecycle() -> None:
    """The tutorial shows what issue #3 asks of it, not only some commands."""
    sessions = _console_sessions((DOCS / "tutorial.rst").read_text("utf-8"))
    commands = [c for c, _ in sessions]
    joined = "\n".join(commands)
    for needed in (
        "deal open 1 --pipeline b2b",
        "log call 1 --topic first_contact --outcome meeting_scheduled",
        "--outcome proposal_requested",
        "client set-params 1 --segment distributor",
        "needs set 1",
        "offer 1",
        "proposal render 1 --deal 1",
        "invoice issue 1",
        "invoice pay 1",
        "deal win 1",
        "deal show 1",
    ):
        assert needed in joined, needed
    outputs = "\n".join(out for _, out in sessions)
    assert "deal #1: qualification -> presentation" in outputs
    assert "Warning: deal #1 stays: stage: cannot move deal #1 to 'proposal'" in outputs
    assert "deal #1: presentation -> proposal" in outputs
    assert "Error: proposal refused: client #1 is a distributor" in outputs
    assert "  - needs.budget: " in outputs
    assert "Stage history" in outputs


# -- the segment_b2b guide (docs/segments.rst) --------------------------------------------
def _load_docs_console() -> Any:
    """``docs/_tools/console.py``: the walker that ``docs/_tools/regen_console.py`` uses too."""
    name = "crmkit_docs_console"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DOCS / "_tools" / "console.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


docs_console = _load_docs_console()


def _console_sessions(text: str) -> list[tuple[str, str]]:
    """``(command, shown output)`` of every ``$`` line of a page, in order."""
    return [
        session
        for block in docs_console.parse(text)
        if getattr(block, "lang", None) == "console"
        for session in docs_console.console_sessions(block.text)
    ]


def _walk_and_compare(page: str, tmp_path: Path) -> Any:
    """Walk ``page`` in ``tmp_path``; fail with a diff of every output that changed."""
    text = (DOCS / page).read_text("utf-8")
    assert docs_console.literal_blocks(text) == [], "a '::' block would show what nothing runs"
    walked = docs_console.walk(text, tmp_path)
    differences = []
    for shown in walked.mismatches:
        diff = difflib.unified_diff(
            docs_console.normalized(shown.expected).splitlines(),
            docs_console.normalized(shown.actual).splitlines(),
            "page",
            "now",
            lineterm="",
        )
        differences.append(f"line {shown.block.line}: {shown.source}\n" + "\n".join(diff))
    assert not differences, (
        "\n\n".join(differences)
        + f"\n\nRegenerate with: python docs/_tools/regen_console.py docs/{page}"
    )
    return walked


@pytest.mark.slow
def test_quickstart_shows_what_the_commands_print(tmp_path: Path) -> None:
    """The quickstart, walked top to bottom (``docs/_tools/console.py``), prints what it shows."""
    pytest.importorskip("crmkit_segment_b2b", reason="pip install -e plugins/segment_b2b")
    walked = _walk_and_compare("quickstart.rst", tmp_path)
    assert [b.lang for b in walked.unchecked] == []


@pytest.mark.slow
def test_tutorial_shows_what_the_commands_print(tmp_path: Path) -> None:
    """The tutorial, walked top to bottom, prints what it shows; its script runs in ``mycrm``."""
    pytest.importorskip("crmkit_segment_b2b", reason="pip install -e plugins/segment_b2b")
    walked = _walk_and_compare("tutorial.rst", tmp_path)
    assert [b.lang for b in walked.unchecked] == []


@pytest.mark.slow
def test_segments_page_shows_what_the_commands_print(tmp_path: Path) -> None:
    """``docs/segments.rst``, walked top to bottom in one deployment, prints what it shows.

    The walker (``docs/_tools/console.py``) runs every ``$`` line of the console
    blocks and every ``>>>`` example of the pycon blocks, in the page's order,
    and performs the page's hidden ``.. crmkit-test:`` steps where they are:
    the TOML blocks it appends to (or sets in) ``crmkit.toml``, the template it
    writes, the shell steps (backups of ``crmkit.toml``, the invoices of the
    ABC/XYZ example, deleting the ``[segments.*]`` tables in "Removing the
    plugin") and the script of "From Python", whose output is the ``text``
    block after it. Every output must equal the page's once the folder,
    timestamps, dates and times are normalized.

    Nothing the page shows as output goes unchecked, and there are no
    excerpts. The only lines not run are the ``pip install`` of "Installing"
    (the test runs in an environment with the plugin installed), and the only
    code block neither run nor used by a step is the formula of "The
    formula", which is no output. The two ``crmkit-json`` directives at the
    end are rendered from the code itself. ``crmkit db current`` lists the
    branch of ``email_tracking`` too, as the page says: the test needs both
    plugins of this repository installed, as tox installs them.
    """
    pytest.importorskip("crmkit_segment_b2b", reason="pip install -e plugins/segment_b2b")
    pytest.importorskip("crmkit_email_tracking", reason="pip install -e plugins/email_tracking")
    walked = _walk_and_compare("segments.rst", tmp_path)
    assert [c.split()[:2] for c in walked.skipped] == [["pip", "install"]]
    assert [(b.lang, b.text.split()[:2]) for b in walked.unchecked] == [("text", ["scaled", "="])]


def test_segments_page_shows_the_start_up_checks() -> None:
    """The guide shows every start-up check of the plugin failing, and a stale potential."""
    text = (DOCS / "segments.rst").read_text("utf-8")
    outputs = "\n".join(
        output
        for block in docs_console.parse(text)
        if getattr(block, "lang", None) == "console"
        for _, output in docs_console.console_sessions(block.text)
    )
    for shown in (
        "Error: segments.distributor.potential.weights.warehouse: 'warehouse' is not a parameter",
        "Error: segments.distributor.potential.scale: the weighted parameter 'trucks' has no ",
        "Error: segments.distributor.offers.A: 'CRT-BULK' is not in the product catalogue",
        "Error: plugin.segment_b2b.templates: ",
        "distributor.md.j2, line ",
        "Error: segments.distributor.needs.required: 'delivery' is not one of the needs card",
        "potential_now",
    ):
        assert shown in outputs, shown
    steps = [(d.action, d.argument) for d in docs_console.parse(text) if hasattr(d, "action")]
    assert ("write-file", "proposal-templates/distributor.md.j2") in steps


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


@pytest.mark.slow
def test_access_page_shows_what_the_commands_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``docs/access.rst``, walked top to bottom: every policy check, SQL clause and refusal.

    The page loads two example plugins from ``docs/examples`` (``crmkit_vip``
    and ``crmkit_vip_access``), so the commands it runs get that folder on
    their ``PYTHONPATH``. The JSON and TOML blocks not run are the policy
    documents and settings the page explains before its hidden steps write them.
    """
    import os

    pytest.importorskip("crmkit_segment_b2b", reason="pip install -e plugins/segment_b2b")
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{EXAMPLES}{os.pathsep}{path}" if path else str(EXAMPLES))
    walked = _walk_and_compare("access.rst", tmp_path)
    assert {b.lang for b in walked.unchecked} <= {"json", "toml"}


@pytest.mark.slow
def test_analytics_page_shows_what_the_commands_print(tmp_path: Path) -> None:
    """``docs/analytics.rst``, walked in a new deployment: the channel costs it records and lists.

    The page assumes a deployment (it makes none), so the test makes one with
    ``crmkit init`` first, as a reader would have. Its only code block not run
    is the Python excerpt of ``Report.draw``. The pages of the reports
    (``docs/analytics/*.rst``) are not walked: their outputs come from
    ``crmkit init --sample`` on a given day, and the sample data set and the
    reports' default periods follow today's date.
    """
    made = docs_console.run_line("crmkit init .", tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    walked = _walk_and_compare("analytics.rst", tmp_path)
    assert [s.source.split()[:3] for s in walked.shown] == [["$", "crmkit", "channel"]] * 3
    assert [b.lang for b in walked.unchecked] == ["python"]
