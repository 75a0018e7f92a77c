"""One test per hook (the meta-test in test_meta.py checks that none is missing)."""

from __future__ import annotations

import json
import textwrap

import click
import pytest
from sqlalchemy import Column, ForeignKey, Integer, String, Table, insert, inspect, select

import crmkit
from crmkit import ConfigError, Problem, Segment, ValidationError, hookimpl
from crmkit.core.plugins import load_plugins


def test_crmkit_segments(crm_factory):
    class Plugin:
        @hookimpl
        def crmkit_segments(self):
            return [
                Segment(
                    "retail",
                    "Retail",
                    {"type": "object", "properties": {"shops": {"type": "integer"}}},
                )
            ]

    crm = crm_factory(plugins=[Plugin()])
    assert crm.segment("retail").title == "Retail"
    with crm.session() as s:
        assert s.clients.create("R", segment="retail", params={"shops": 3}).segment == "retail"
        with pytest.raises(ValidationError):
            s.clients.create("R2", segment="retail", params={"shops": "many"})

    class Twice:
        @hookimpl
        def crmkit_segments(self):
            return [Segment("retail", "Again")]

    crm.plugins.register(Twice())
    crm.refresh()
    with pytest.raises(crmkit.CrmError, match="registered twice"):
        _ = crm.segments


def test_crmkit_segments_overridden_in_config(crm_factory):
    class Plugin:
        @hookimpl
        def crmkit_segments(self):
            return [Segment("retail", "Retail", {"type": "object"})]

    crm = crm_factory(plugins=[Plugin()])
    path = crm.config.root / "crmkit.toml"
    path.write_text(
        path.read_text()
        + textwrap.dedent(
            """
            [segments.retail]
            title = "Retail chains"
            schema = {type = "object", properties = {shops = {type = "integer", minimum = 1}}}
            """
        )
    )
    reopened = crmkit.CRM.open(crm.config.root, plugins=crm.plugins)
    assert reopened.segment("retail").title == "Retail chains"
    with reopened.session() as s, pytest.raises(ValidationError, match=r"params\.shops"):
        s.clients.create("R", segment="retail", params={"shops": 0})
    reopened.close()


def test_crmkit_source_channels(crm_factory):
    class Plugin:
        @hookimpl
        def crmkit_source_channels(self):
            return ["marketplace", {"name": "webinar", "title": "Webinars"}]

    crm = crm_factory(plugins=[Plugin()])
    assert crm.channel("webinar").title == "Webinars"
    with crm.session() as s:
        assert s.clients.create("M", source="marketplace").source == "marketplace"


def _notes_plugin(versions_dir):
    """A plugin that owns a table and an Alembic branch, as integrators write them."""
    versions_dir.mkdir()
    (versions_dir / "notes_0001.py").write_text(
        textwrap.dedent(
            """
            import sqlalchemy as sa
            from alembic import op

            revision = "notes_0001"
            down_revision = None
            branch_labels = ("notes",)
            depends_on = "crmkit_0001"

            def upgrade():
                op.create_table(
                    "notes",
                    sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.id"), nullable=False),
                    sa.Column("text", sa.String(500), nullable=False),
                )

            def downgrade():
                op.drop_table("notes")
            """
        )
    )

    class Notes:
        @hookimpl
        def crmkit_tables(self, metadata):
            Table(
                "notes",
                metadata,
                Column("id", Integer, primary_key=True),
                Column("client_id", Integer, ForeignKey("clients.id"), nullable=False),
                Column("text", String(500), nullable=False),
            )

        @hookimpl
        def crmkit_migrations(self):
            return [{"branch": "notes", "path": str(versions_dir)}]

    return Notes()


def test_crmkit_tables(crm_factory, tmp_path):
    crm = crm_factory(plugins=[_notes_plugin(tmp_path / "versions")])
    assert "notes" in crm.metadata.tables
    with crm.session() as s:
        client = s.clients.create("Acme")
        s.connection.execute(insert(s.table("notes")).values(client_id=client.id, text="hello"))
    with crm.session() as s:
        assert s.connection.execute(select(s.table("notes").c.text)).scalar_one() == "hello"


def test_crmkit_migrations(crm_factory, tmp_path):
    crm = crm_factory(plugins=[])  # made before the plugin was installed
    with crm.session() as s:
        s.clients.create("Kept", email="kept@example.com")
    plugins = load_plugins(entry_points=False)
    plugins.register(_notes_plugin(tmp_path / "versions"))
    upgraded = crmkit.CRM.open(crm.config.root, plugins=plugins)
    status = {row["branch"]: row for row in upgraded.schema_status()}
    assert status["notes"]["current"] is None and not status["notes"]["up_to_date"]
    upgraded.upgrade(branch="notes")
    assert all(row["up_to_date"] for row in upgraded.schema_status())
    with upgraded.session() as s:
        assert inspect(s.connection).has_table("notes")
        assert s.clients.find(email="kept@example.com").name == "Kept"
    upgraded.close()


def test_crmkit_migrations_bad_path(crm_factory, tmp_path):
    class Bad:
        @hookimpl
        def crmkit_migrations(self):
            return [{"branch": "bad", "path": str(tmp_path / "missing")}]

    with pytest.raises(crmkit.PluginError, match="must be an existing folder"):
        crm_factory(plugins=[Bad()])


def test_crmkit_cli(crm_factory):
    class Plugin:
        @hookimpl
        def crmkit_cli(self, cli):
            @cli.command()
            @click.pass_obj
            def hello(state):
                """Greet the acting user."""
                with state.session() as s:
                    click.echo(f"hello {s.user.login}")

    crm = crm_factory(plugins=[Plugin()])
    from click.testing import CliRunner

    from crmkit.cli import build_cli

    result = CliRunner().invoke(
        build_cli(crm.plugins), ["-C", str(crm.config.root), "hello"], obj=crm.plugins
    )
    assert result.output == "hello admin\n"
    assert "hello" not in build_cli(load_plugins(entry_points=False)).commands


def test_crmkit_startup(crm):
    seen = []

    class Plugin:
        @hookimpl
        def crmkit_startup(self, crm):
            seen.append(crm.config.root)
            if crm.config.plugin("strict").get("enabled") is not True:
                raise ConfigError("set [plugin.strict] enabled = true", field="plugin.strict")

    plugins = load_plugins(entry_points=False)
    plugins.register(Plugin())
    with pytest.raises(ConfigError, match="enabled = true"):
        crmkit.CRM.open(crm.config.root, plugins=plugins)
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text() + "\n[plugin.strict]\nenabled = true\n")
    crmkit.CRM.open(crm.config.root, plugins=plugins).close()
    assert seen == [crm.config.root, crm.config.root]


def test_crmkit_check_client(crm, register_plugin):
    class Plugin:
        @hookimpl
        def crmkit_check_client(self, session, client, changes):
            problems = []
            if client.kind == "company" and "tax_id" not in client.requisites:
                problems.append(Problem("requisites.tax_id", "a company needs a tax id"))
            if "name" in changes and client.name.isupper():
                problems.append("name: do not shout")
            return problems

    register_plugin(Plugin())
    with crm.session() as s:
        with pytest.raises(ValidationError) as err:
            s.clients.create("ACME")
        assert [str(p) for p in err.value.problems] == [
            "requisites.tax_id: a company needs a tax id",
            "name: do not shout",
        ]
        ok = s.clients.create("Acme", requisites={"tax_id": "1"})
        with pytest.raises(ValidationError, match="tax id"):
            s.clients.update(ok.id, requisites={})
        assert s.clients.create("Ivan", kind="person").kind == "person"


def test_crmkit_client_saved(crm, register_plugin):
    calls = []

    class Plugin:
        @hookimpl
        def crmkit_client_saved(self, session, client, created):
            calls.append((client.name, created))
            session.record("client", client.id, "audited", {"by": "plugin"})
            if client.name == "Fail":
                raise RuntimeError("refused by plugin")

    register_plugin(Plugin())
    with crm.session() as s:
        c = s.clients.create("Acme")
        s.clients.update(c.id, name="Acme Ltd")
    assert calls == [("Acme", True), ("Acme Ltd", False)]
    with pytest.raises(RuntimeError), crm.session() as s:
        s.clients.create("Fail")
    with crm.session() as s:
        assert s.clients.count() == 1  # the failing plugin rolled the save back
        actions = [e["action"] for e in s.events("client", c.id)]
        assert actions == ["created", "audited", "updated", "audited"]


# -- lifecycle hooks -------------------------------------------------------------------------
def test_crmkit_interaction_kinds(crm_factory):
    class Plugin:
        @hookimpl
        def crmkit_interaction_kinds(self):
            return [
                crmkit.InteractionKind(
                    name="demo",
                    title="Product demo",
                    topics={"online": "Online demo"},
                    outcomes={"impressed": "Impressed"},
                ),
                {"name": "call", "outcomes": ["voicemail"]},  # extends the built-in kind
            ]

    crm = crm_factory(plugins=[Plugin()])
    assert crm.interaction_kind("demo").title == "Product demo"
    assert {"voicemail", "no_answer"} <= set(crm.interaction_kind("call").outcomes)
    with crm.session() as s:
        client = s.clients.create("X")
        logged = s.interactions.log(client.id, "demo", topic="online", outcome="impressed")
        assert logged.interaction.kind == "demo"


def test_crmkit_pipelines(crm_factory):
    class Plugin:
        @hookimpl
        def crmkit_pipelines(self):
            return [
                {
                    "name": "service",
                    "stages": [{"name": "request"}, {"name": "visit"}],
                    "rules": [{"outcome": "resolved", "move_to": "visit"}],
                },
                crmkit.Pipeline.from_dict(
                    {"name": "b2b", "title": "Ours", "stages": [{"name": "a"}]}
                ),
            ]

    crm = crm_factory(plugins=[Plugin()])
    assert crm.pipeline("service").stage_names == ["request", "visit"]
    assert crm.pipeline("b2b").title == "Ours"  # replaces the built-in template
    with crm.session() as s:
        client = s.clients.create("X")
        deal = s.deals.open(client.id, pipeline="service")
        s.interactions.log(
            client.id,
            "call",
            topic="service",
            outcome="resolved",
            direction="inbound",
            deal_id=deal.id,
        )
        assert s.deals.get(deal.id).stage == "visit"


def test_crmkit_check_stage_entry(crm, register_plugin):
    calls = []

    class Plugin:
        @hookimpl
        def crmkit_check_stage_entry(self, session, pipeline, stage, deal, client):
            calls.append((pipeline.name, stage.name, deal.id if deal else None))
            if stage.name == "presentation" and not client.phone:
                return [Problem("client.phone", "call the client before a presentation")]
            return None

    register_plugin(Plugin())
    with crm.session() as s:
        client = s.clients.create("X")
        deal = s.deals.open(client.id, pipeline="b2b")
        with pytest.raises(ValidationError, match="call the client before a presentation"):
            s.deals.move(deal.id, "presentation")
        s.clients.update(client.id, phone="+7 900 000 00 00")
        s.deals.move(deal.id, "presentation")
        s.deals.lose(deal.id, "price")  # losing has no gate
    assert ("b2b", "qualification", deal.id) in calls  # a deal's first stage has its gate
    assert calls.count(("b2b", "presentation", deal.id)) == 2
    assert ("b2b", "lost", deal.id) not in calls


def test_crmkit_interaction_logged(crm, register_plugin):
    class Plugin:
        @hookimpl
        def crmkit_interaction_logged(self, session, interaction):
            if interaction.outcome == "not_interested" and interaction.deal_id:
                return [
                    crmkit.MoveTo("lost", reason="no_need"),
                    crmkit.FollowUp("Ask again in spring", due_in_hours=24 * 90),
                ]
            return []

    register_plugin(Plugin())
    with crm.session() as s:
        client = s.clients.create("X")
        deal = s.deals.open(client.id, pipeline="b2b")
        logged = s.interactions.log(
            client.id,
            "call",
            topic="first_contact",
            outcome="not_interested",
            direction="outbound",
            deal_id=deal.id,
        )
        assert [(c.to_stage, c.cause) for c in logged.changes] == [("lost", "interaction")]
        assert s.deals.get(deal.id).lost_reason == "no_need"
        assert logged.tasks[0].title == "Ask again in spring"


def test_crmkit_stage_changed(crm, register_plugin):
    seen = []

    class Plugin:
        @hookimpl
        def crmkit_stage_changed(self, session, change):
            seen.append((change.entity, change.from_stage, change.to_stage, change.cause))
            if change.to_stage == "proposal":
                raise RuntimeError("veto")

    register_plugin(Plugin())
    with crm.session() as s:
        client = s.clients.create("X", segment=None)
        deal = s.deals.open(client.id, pipeline="webshop")
        s.deals.move(deal.id, "cart")
    assert seen == [  # a new client's first lifecycle stage is implied, not a move
        ("deal", None, "ad", "opened"),
        ("deal", "ad", "cart", "manual"),
    ]


def test_crmkit_invoice_status_changed(crm, register_plugin):
    seen = []

    class ThankYou:
        @hookimpl
        def crmkit_invoice_status_changed(self, session, invoice, old_status):
            if (old_status, invoice.status) == ("issued", "paid"):
                deal = session.deals.get(invoice.deal_id)
                session.tasks.add(
                    f"Thank the client for {invoice.number}", due="+1d", deal_id=deal.id
                )
            seen.append((old_status, invoice.status.value))

    register_plugin(ThankYou())
    with crm.session() as s:
        client = s.clients.create("X")
        deal = s.deals.open(client.id, pipeline="webshop", amount=10)
        invoice = s.invoices.issue(deal.id, 10)
        s.invoices.pay(invoice.id)
        assert [t.title for t in s.tasks.list(deal_id=deal.id)] == [
            f"Thank the client for {invoice.number}"
        ]
    assert seen == [(None, "issued"), ("issued", "paid")]


def test_crmkit_records_imported(crm, register_plugin, tmp_path):
    from crmkit.transfer.importer import import_file

    batches = []

    class Plugin:
        @hookimpl
        def crmkit_records_imported(self, session, kind, inserted_ids, updated_ids):
            batches.append((kind, len(inserted_ids), list(updated_ids)))
            if session.clients.get(inserted_ids[0]).name == "Veto":
                raise RuntimeError("refused by plugin")

    register_plugin(Plugin())
    source = tmp_path / "clients.csv"
    source.write_text("name,email\n" + "".join(f"C{i},c{i}@x.example\n" for i in range(5)))
    result = import_file(crm, "clients", source, batch_size=2)
    assert result.inserted == 5
    assert batches == [("clients", 2, []), ("clients", 2, []), ("clients", 1, [])]
    (tmp_path / "veto.csv").write_text("name\nVeto\n")
    with pytest.raises(RuntimeError):
        import_file(crm, "clients", tmp_path / "veto.csv")
    with crm.session() as s:
        assert s.clients.count(search="Veto") == 0  # the batch was rolled back


# -- KPIs ------------------------------------------------------------------------------------
def test_crmkit_kpis(crm, register_plugin):
    """A plugin's KPI over a source of its own, per user, as a ratio of another KPI."""
    import datetime as dt

    from sqlalchemy import func, select

    from crmkit import KPI, KPISource, Window
    from crmkit.core.kpis import run

    def rows(session, window):
        t = session.table("clients")
        return select(t.c.owner_id.label("user_id"), t.c.email).where(
            t.c.owner_id.in_(window.user_ids), t.c.created_at < window.end
        )

    class Plugin:
        @hookimpl
        def crmkit_kpis(self):
            emails = KPISource("client_emails", rows)
            return [
                KPI(
                    "clients_with_email",
                    "Clients with an email",
                    emails,
                    lambda r: func.count(r.c.email),
                    per="clients_in_work",
                    unit="ratio",
                )
            ]

    register_plugin(Plugin())
    with crm.session() as s:
        s.clients.create("A", email="a@x.example")
        s.clients.create("B")
        me = s.user.id
    assert crm.kpi("clients_with_email").describe()["per"] == "clients_in_work"
    with crm.session(readonly=True) as s:
        end = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        facts = run(s, [crm.kpi("clients_with_email")], Window(end - dt.timedelta(30), end, (me,)))
    assert facts["clients_with_email"][me].value == 0.5


def test_crmkit_motivation_schemes(crm, register_plugin):
    """A scheme of a plugin: 100 per outbound call, selected in crmkit.toml."""
    from decimal import Decimal

    from crmkit import Bonus, Scheme

    def per_call(session, standing):
        calls = standing.facts["calls_outbound"].value
        amount = Decimal(100 * calls).quantize(Decimal("0.01"))
        return Bonus(base=Decimal(100), gross=amount, total=amount, notes=(f"{calls} calls",))

    class Plugin:
        @hookimpl
        def crmkit_motivation_schemes(self):
            return [Scheme("per_call", "100 per outbound call", per_call)]

    register_plugin(Plugin())
    config = crm.config.root / "crmkit.toml"
    config.write_text(config.read_text() + '\n[plugin.motivation]\nscheme = "per_call"\n')
    with crm.session() as s:
        s.users.add("anna", role="manager")
        client = s.clients.create("A", owner="anna")
    with crm.session(as_user="anna") as s:
        for _ in range(3):
            s.interactions.log(client.id, "call", topic="first_contact",
                               outcome="no_answer", direction="outbound")  # fmt: skip
    reopened = crmkit.CRM.open(crm.config.root, plugins=crm.plugins)
    with reopened, reopened.session(as_user="anna", readonly=True) as s:
        result = s.report("bonus")  # the current month
    assert [(r["user"], r["bonus"]) for r in result.rows] == [("anna", Decimal("300.00"))]
    assert result.summary["scheme"] == "per_call"


# -- reports, client details, sample data --------------------------------------------------
def test_crmkit_reports(crm_factory):
    from crmkit import Column, Report, ReportResult

    seen = []

    def run(session, query):
        seen.append((session.user.login, query.period.label, query.options))
        count = session.clients.count()
        return ReportResult(
            report="ignored: the core names the result",
            columns=[Column("clients", "Clients", "integer")],
            rows=[{"clients": count}],
            period=query.period,
        )

    class Plugin:
        @hookimpl
        def crmkit_reports(self):
            return [
                Report(
                    "count",
                    "Client count",
                    run=run,
                    options={"round": {"type": "boolean", "default": False}},
                )
            ]

    crm = crm_factory(plugins=[("counting", Plugin())])
    assert crm.report("count").title == "Client count"
    with crm.session() as s:
        s.clients.create("Acme")
        result = s.report("count", period="2026-Q3")
    assert result.report == "count"
    assert result.rows == [{"clients": 1}]
    assert seen == [("admin", "2026-Q3", {"round": False})]

    class Twice:
        @hookimpl
        def crmkit_reports(self):
            return [Report("count", "Again", run=run)]

    crm.plugins.register(Twice())
    crm.refresh()
    with pytest.raises(crmkit.PluginError, match="registered twice"):
        _ = crm.reports


def test_crmkit_client_details(crm, register_plugin, invoke):
    class Orders:
        @hookimpl
        def crmkit_client_details(self, session, client):
            return {"orders": session.clients.count(), "name": client.name}

    class Quiet:
        @hookimpl
        def crmkit_client_details(self, client):  # only what it needs; nothing to say
            return None

    register_plugin(Orders(), name="orders")
    register_plugin(Quiet(), name="quiet")
    with crm.session() as s:
        acme = s.clients.create("Acme")
        assert crm.plugins.client_details(session=s, client=acme) == {
            "orders": {"orders": 1, "name": "Acme"}
        }
    shown = invoke("client", "show", str(acme.id), json=True)
    assert shown.exit_code == 0, shown
    assert shown.json["plugins"] == {"orders": {"orders": 1, "name": "Acme"}}
    table = invoke("client", "show", str(acme.id))
    assert table.exit_code == 0, table
    assert "orders" in table.output and "quiet" not in table.output
    listed = invoke("client", "list", json=True)
    assert "plugins" not in listed.json[0]  # never in listings

    class Broken:
        @hookimpl
        def crmkit_client_details(self):
            return ["not", "a", "dict"]

    register_plugin(Broken(), name="broken")
    refused = invoke("client", "show", str(acme.id))
    assert refused.exit_code == 7
    assert "broken: crmkit_client_details must return a dict or None" in refused.stderr


def test_crmkit_sample_client(crm, register_plugin):
    import inspect
    import random

    from crmkit.core import hookspecs

    # the contract the sample data generator calls (crmkit init --sample)
    params = inspect.signature(hookspecs.crmkit_sample_client).parameters
    assert list(params) == ["session", "client", "random"]
    calls = []

    class Sample:
        @hookimpl
        def crmkit_sample_client(self, session, client, random):
            calls.append((session.user.login, client.name, random.random()))
            session.record("client", client.id, "sample_filled", {"plugin": "sample"})

    class Partial:
        @hookimpl
        def crmkit_sample_client(self, client):  # a plugin may take only what it needs
            calls.append(("partial", client.name, None))

    register_plugin(Sample(), name="sample")
    register_plugin(Partial(), name="partial")
    with crm.session() as s:
        acme = s.clients.create("Acme")
        assert crm.plugins.sample_client(session=s, client=acme, random=random.Random(1)) is None
        crm.plugins.sample_client(session=s, client=acme, random=random.Random(1))
        assert [e["action"] for e in s.events("client", acme.id)][-1] == "sample_filled"
    assert sorted(c[0] for c in calls) == ["admin", "admin", "partial", "partial"]
    drawn = [c[2] for c in calls if c[0] == "admin"]
    assert drawn[0] == drawn[1] == random.Random(1).random()  # the seeded generator is used


def test_crmkit_access_policies(crm, register_plugin):
    """A plugin's policy lets marketers update the source of client cards that have none."""
    with crm.session() as s:
        s.users.add("mark", role="marketer")
        blank = s.clients.create("No source yet")
        sourced = s.clients.create("Sourced", source="website")

    class Plugin:
        @hookimpl
        def crmkit_access_policies(self):
            return [
                json.dumps(  # a document may be given as JSON text too
                    {
                        "version": 1,
                        "default": "deny",
                        "rules": [
                            {
                                "id": "marketers-fill-sources",
                                "effect": "allow",
                                "roles": ["marketer"],
                                "actions": ["update"],
                                "resource": "client",
                                "when": {
                                    "properties": {
                                        "resource": {"properties": {"source": {"type": "null"}}}
                                    }
                                },
                            }
                        ],
                    }
                )
            ]

    register_plugin(Plugin())
    with crm.session(as_user="mark") as s:
        assert s.clients.update(blank.id, source="event").source == "event"
        with pytest.raises(crmkit.PermissionDenied, match="no rule allows it"):
            s.clients.update(sourced.id, source="event")


def test_crmkit_access_resources(crm, register_plugin):
    """A plugin adds an action and an attribute to clients, and a resource of its own table."""
    from crmkit.core.access import Attribute, Col, Resource, Via

    class Plugin:
        @hookimpl
        def crmkit_access_resources(self):
            return [
                Resource("client", "clients", actions=("merge",)),
                Resource(
                    "contact_mail",
                    "contacts",
                    {
                        "id": Attribute("id", "integer", Col("id"), False),
                        "owner_id": Attribute(
                            "owner_id", "integer", Via("client_id", "clients", Col("owner_id"))
                        ),
                    },
                    actions=("read", "send"),
                ),
            ]

        @hookimpl
        def crmkit_access_policies(self):
            return [
                {
                    "version": 1,
                    "rules": [
                        {
                            "id": "owners-send-mail",
                            "effect": "allow",
                            "roles": ["manager"],
                            "actions": ["send", "read"],
                            "resource": "contact_mail",
                            "when": {
                                "properties": {
                                    "resource": {
                                        "properties": {"owner_id": {"const": {"$subject": "id"}}}
                                    }
                                }
                            },
                        }
                    ],
                }
            ]

    register_plugin(Plugin())
    assert "merge" in crm.access.resource("client").actions
    with crm.session() as s:
        s.users.add("anna", role="manager")
        s.users.add("boris", role="manager")
        mine = s.clients.create("Mine", owner="anna")
        theirs = s.clients.create("Theirs", owner="boris")
        a = s.contacts.add(mine.id, "A")
        b = s.contacts.add(theirs.id, "B")
    with crm.session(as_user="anna", readonly=True) as s:
        assert s.access.allows("send", "contact_mail", s.access.view("contact_mail", a.id))
        assert not s.access.allows("send", "contact_mail", s.access.view("contact_mail", b.id))
        t = s.tables["contacts"]
        ids = s.connection.execute(s.access.filter(select(t.c.id), "read", "contact_mail"))
        assert list(ids.scalars()) == [a.id]
        assert not s.access.may("merge", "client")  # declared, but no rule gives it

    class Bad:
        @hookimpl
        def crmkit_access_resources(self):
            return [Resource("x", None, {"a": Attribute("a", "date", Col("a"))})]

    register_plugin(Bad())
    with pytest.raises(crmkit.PluginError, match="has type 'date'"):
        crm.access  # noqa: B018


def test_crmkit_read_quota_exceeded(crm, register_plugin, tmp_path):
    """Called once per user and day, after the refused session, with the heads to tell."""
    calls = []

    class Plugin:
        @hookimpl
        def crmkit_access_policies(self):
            return [
                {
                    "version": 1,
                    "rules": [],
                    "quotas": [
                        {"id": "tight", "roles": ["manager"], "resource": "client", "per_day": 1}
                    ],
                }
            ]

        @hookimpl
        def crmkit_read_quota_exceeded(self, crm, user, quota, heads):
            calls.append((user.login, quota.id, quota.per_day, [h.login for h in heads]))

    with crm.session() as s:
        s.teams.add("sales")
        s.teams.add("sales-1", parent="sales")
        s.users.add("hanna", role="head", team="sales")
        s.users.add("anna", role="manager", team="sales-1")
        one = s.clients.create("One", owner="anna")
        two = s.clients.create("Two", owner="anna")
    register_plugin(Plugin())
    with crm.session(as_user="anna", readonly=True) as s:
        s.clients.get(one.id)
    for _ in range(2):
        with (
            pytest.raises(crmkit.PermissionDenied, match="the head has been told"),
            crm.session(as_user="anna", readonly=True) as s,
        ):
            s.clients.get(two.id)
    assert calls == [("anna", "tight", 1, ["hanna"])]


def test_crmkit_routes(crm, register_plugin):
    """Routes are collected with the plugin's name; tests/test_server.py serves them."""
    pytest.importorskip("starlette", reason="pip install -e '.[server]'")
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from crmkit.server import create_app

    seen = []

    class Plugin:
        @hookimpl
        def crmkit_routes(self, crm):
            seen.append(crm)
            return [Route("/ping", lambda request: PlainTextResponse("pong"))]

    register_plugin(Plugin(), name="ping")
    # the built-in plugins serve theirs too (leads: /api/leads)
    [(route, plugin)] = [(r, p) for r, p in crm.plugins.routes(crm) if p == "ping"]
    assert (route.path, plugin) == ("/ping", "ping")
    assert seen == [crm]
    app = create_app(crm)
    assert "/ping" in [getattr(r, "path", None) for r in app.routes]

    class Again:
        @hookimpl
        def crmkit_routes(self):
            return [Route("/ping", lambda request: PlainTextResponse("pong"))]

    register_plugin(Again(), name="again")
    with pytest.raises(crmkit.PluginError, match="'/ping' is already served by ping"):
        create_app(crm)


def test_crmkit_render_document(crm, register_plugin):
    """The first plugin that knows the name answers; no plugin knowing it is NotFound."""
    calls = []

    class Letters:
        @hookimpl
        def crmkit_render_document(self, name, client_id):
            calls.append(("letters", name))
            if name != "letter":
                return None
            return crmkit.Document(
                name="letter", title="A letter", html="<p>Hi</p>", client_id=client_id
            )

    class Fallback:
        @hookimpl(trylast=True)
        def crmkit_render_document(self, session, name, client_id, deal_id):
            calls.append(("fallback", name))
            return None

    register_plugin(Letters())
    register_plugin(Fallback())
    with crm.session() as s:
        client = s.clients.create("Acme")
        document = crm.plugins.render_document(s, "letter", client.id)
        assert (document.name, document.title) == ("letter", "A letter")
        assert document.client_id == client.id
        assert document.text is None and document.deal_id is None
        assert calls == [("letters", "letter")]  # firstresult: the fallback is not asked
        with pytest.raises(crmkit.NotFound) as info:
            crm.plugins.render_document(s, "invoice", client.id, None)
    assert info.value.field == "document"
    assert calls[1:] == [("letters", "invoice"), ("fallback", "invoice")]


def test_crmkit_email_opened(crm, register_plugin):
    """The email tracking plugin's event: called with every argument, taken by name."""
    seen = []

    class Chat:
        @hookimpl
        def crmkit_email_opened(self, message, document):
            seen.append(("chat", message["id"], document))

    class Journal:
        @hookimpl
        def crmkit_email_opened(self, session, message, first, document):
            seen.append(("journal", session.user.login, first))

    register_plugin(Chat())
    register_plugin(Journal())
    with crm.session() as s:
        crm.plugins.pm.hook.crmkit_email_opened(
            session=s, message={"id": 7, "client_id": 1}, first=True, document=False
        )
    assert sorted(seen) == [("chat", 7, False), ("journal", "admin", True)]


# -- automation (docs/automation.rst) ------------------------------------------------------------
def _with_rules(crm, text):
    """The deployment reopened with ``text`` appended to its crmkit.toml."""
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8") + "\n" + textwrap.dedent(text), "utf-8")
    return crmkit.CRM.open(crm.config.root, plugins=crm.plugins)


def test_crmkit_automation_rules(crm, register_plugin):
    from crmkit.core.automation import Rule

    class Onboarding:
        @hookimpl
        def crmkit_automation_rules(self):
            return [
                {
                    "name": "welcome_call",
                    "title": "Call every new client",
                    "event": "client.created",
                    "actions": [{"do": "create_task", "title": "Call {client.name}"}],
                },
                Rule(
                    "no_contact",
                    ({"do": "create_task", "title": "Nobody talked to {client.name}"},),
                    schedule="client.no_contact",
                    params={"days": 30},
                    enabled=False,
                ),
            ]

    register_plugin(Onboarding(), name="onboarding")
    rules = crm.automation.rules
    assert {n: (r.plugin, r.enabled) for n, r in rules.items()} == {
        "welcome_call": ("onboarding", True),
        "no_contact": ("onboarding", False),
    }
    assert rules["no_contact"].trigger == "schedule client.no_contact"
    with crm.session() as s:
        s.clients.create("Acme", owner="admin")
        assert [t.title for t in s.tasks.list()] == ["Call Acme"]
    # a deployment's rule of the same name replaces the plugin's
    replaced = _with_rules(
        crm,
        """
        [automation.rules.welcome_call]
        event = "client.created"
        enabled = false
        actions = [{ do = "create_task", title = "Not today" }]
        """,
    )
    try:
        assert replaced.automation.rule("welcome_call").plugin is None
        assert replaced.automation.rule("welcome_call").enabled is False
    finally:
        replaced.close()

    class Broken:
        @hookimpl
        def crmkit_automation_rules(self):
            return [{"name": "broken", "event": "client.created", "actions": [{"do": "fly"}]}]

    register_plugin(Broken())
    with pytest.raises(ConfigError) as info:
        _ = crm.automation
    assert info.value.field == "automation.rules.broken.actions.0"
    assert "unknown action 'fly'" in str(info.value)


def test_crmkit_automation_actions(crm, register_plugin):
    from crmkit.core.automation import Action

    seen = []

    def tag(context, params):
        seen.append((context.event, context.rule.name, context.dry_run))
        client = context.payload["client"]
        context.session.record("client", client["id"], "tagged", {"tag": params["tag"]})
        return {"client": client["id"], "tag": context.render(params["tag"])}

    class Tags:
        @hookimpl
        def crmkit_automation_actions(self):
            schema = {
                "type": "object",
                "additionalProperties": False,
                "required": ["tag"],
                "properties": {"tag": {"type": "string"}},
            }
            return [Action("tag", tag, schema, "Tag the client")]

    register_plugin(Tags(), name="tags")
    assert crm.automation.actions["tag"].plugin == "tags"
    tagged = _with_rules(
        crm,
        """
        [automation.rules.tag_new]
        event = "client.created"
        actions = [{ do = "tag", tag = "new: {client.name}" }]
        """,
    )
    try:
        with tagged.session() as s:
            client = s.clients.create("Acme")
        assert seen == [("client.created", "tag_new", False)]
        with tagged.session() as s:
            [event] = [e for e in s.events("client", client.id) if e["action"] == "tagged"]
            assert event["data"] == {"tag": "new: {client.name}"}
            [run] = tagged.automation.runs(s, rule="tag_new")
        assert run.results == [{"do": "tag", "client": client.id, "tag": "new: Acme"}]
    finally:
        tagged.close()
    # parameters are checked against the action's schema when the deployment opens
    with pytest.raises(ConfigError) as info:
        _with_rules(
            crm,
            """
            [automation.rules.tag_bad]
            event = "client.created"
            actions = [{ do = "tag", colour = "red" }]
            """,
        )
    assert info.value.field.startswith("automation.rules.tag_bad.actions.0")

    class Again:
        @hookimpl
        def crmkit_automation_actions(self):
            return [Action("tag", tag)]

    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8").split("[automation.rules.tag_new]")[0], "utf-8")
    register_plugin(Again())
    with pytest.raises(ConfigError, match="two plugins register the automation action 'tag'"):
        _ = crm.automation


def test_crmkit_automation_triggers(crm, register_plugin):
    import datetime as dt

    from crmkit.core.automation import TimeTrigger, payload_of

    def vip_clients(session, now, params):
        for client in session.clients.list():
            if client.name.startswith(params["prefix"]):
                yield f"vip:{client.id}:{now.date().isoformat()}", payload_of(client=client)

    class Daily:
        @hookimpl
        def crmkit_automation_triggers(self):
            schema = {
                "type": "object",
                "required": ["prefix"],
                "properties": {"prefix": {"type": "string"}},
            }
            return [TimeTrigger("client.daily_vip", vip_clients, schema, "Every VIP, daily")]

    register_plugin(Daily(), name="daily")
    assert crm.automation.triggers["client.daily_vip"].plugin == "daily"
    with crm.session() as s:
        s.clients.create("VIP Acme", owner="admin")
        s.clients.create("Beta", owner="admin")
    daily = _with_rules(
        crm,
        """
        [automation.rules.vip_call]
        schedule = "client.daily_vip"
        params = { prefix = "VIP" }
        actions = [{ do = "create_task", title = "Call {client.name} today" }]
        """,
    )
    try:
        monday = dt.datetime(2026, 11, 23, 9, tzinfo=dt.UTC)
        assert [r.key for r in daily.automation.run_schedule(monday)] == ["vip:1:2026-11-23"]
        assert daily.automation.run_schedule(monday + dt.timedelta(hours=1)) == []  # same day
        assert len(daily.automation.run_schedule(monday + dt.timedelta(days=1))) == 1
        with daily.session() as s:
            assert [t.title for t in s.tasks.list()] == ["Call VIP Acme today"] * 2
    finally:
        daily.close()
    with pytest.raises(ConfigError, match="prefix"):
        _with_rules(
            crm,
            """
            [automation.rules.vip_bad]
            schedule = "client.daily_vip"
            actions = [{ do = "create_task", title = "x" }]
            """,
        )


def test_crmkit_automation_events(crm, register_plugin):
    from crmkit.core.automation import payload_of

    class Loyalty:
        @hookimpl
        def crmkit_automation_events(self):
            return ["loyalty.level_changed"]

    text = """
        [automation.rules.gold]
        event = "loyalty.level_changed"
        when = { properties = { level = { const = "gold" } } }
        actions = [{ do = "create_task", title = "Send {client.name} a gift" }]
        """
    with pytest.raises(ConfigError, match=r"unknown event 'loyalty\.level_changed'"):
        _with_rules(crm, text)
    path = crm.config.root / "crmkit.toml"
    path.write_text(path.read_text("utf-8").split("[automation.rules.gold]")[0], "utf-8")
    register_plugin(Loyalty())
    assert "loyalty.level_changed" in crm.automation.extra_events
    gold = _with_rules(crm, text)
    try:
        with gold.session() as s:
            client = s.clients.create("Acme", owner="admin")
            payload = payload_of(client=client, level="gold")
            key = f"loyalty:{client.id}:gold"
            [run] = gold.automation.fire(s, "loyalty.level_changed", payload, key)
            assert run.status == "fired"
            assert gold.automation.fire(s, "loyalty.level_changed", payload, key) == []  # once
            silver = payload_of(client=client, level="silver")
            assert gold.automation.fire(s, "loyalty.level_changed", silver, "l:2") == []
        with gold.session() as s:
            assert [t.title for t in s.tasks.list()] == ["Send Acme a gift"]
    finally:
        gold.close()
