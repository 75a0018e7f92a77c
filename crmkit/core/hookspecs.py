"""The plugin contract: every hook crmkit calls.

A plugin is any module or object with functions named like these hooks and
marked with :data:`crmkit.hookimpl`. Conventions:

* **Registration hooks** (``crmkit_segments``, ``crmkit_source_channels`` ...)
  return a list (or ``None``), and the core merges the lists of all plugins;
  ``crmkit_tables`` and ``crmkit_cli`` add to what they are given instead.
* **Event hooks** (``crmkit_client_saved``) are told about a change inside
  the change's transaction; an exception raised there rolls the change back.
* **Check hooks** (``crmkit_check_client``) return a list of
  :class:`~crmkit.core.errors.Problem` (or strings); every problem from every
  plugin is reported at once.

All hooks are called with keyword arguments, so an implementation may accept
only the arguments it needs. Hooks are never called at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click
    from sqlalchemy import MetaData

    from .access import Quota, Resource
    from .app import CRM
    from .automation import Action, Rule, TimeTrigger
    from .kpis import KPI
    from .model import (
        Client,
        Deal,
        Document,
        Interaction,
        InteractionKind,
        Invoice,
        Segment,
        StageChange,
        User,
    )
    from .motivation import Scheme
    from .pipeline import Pipeline, Stage
    from .reports import Report
    from .store import Session

hookspec = pluggy.HookspecMarker("crmkit")
hookimpl = pluggy.HookimplMarker("crmkit")


@hookspec
def crmkit_segments() -> list[Segment] | None:
    """Register client segments.

    Return a list of :class:`crmkit.Segment`: a name, a title and the JSON
    Schema of the segment's parameters. A client whose ``segment`` is set has
    its ``params`` validated against that schema on every save: the values
    present are checked (types, ranges, formats), while the schema's top-level
    ``required`` list states which primary fields make the card *complete*
    (see :meth:`crmkit.Segment.validate`). Two plugins may not register the
    same name; a deployment can override a segment's schema in
    ``crmkit.toml`` (``[segments.NAME] schema = {...}``).
    """


@hookspec
def crmkit_source_channels() -> list[str | dict[str, Any]] | None:
    """Register marketing channels, the formal list of a client's ``source``.

    Return names (``"website"``) or dicts with ``name`` and ``title``.
    A deployment may add its own under ``[clients] channels`` in
    ``crmkit.toml``. A client whose ``source`` is not a known channel is
    refused, so that reports per channel stay clean.
    """


@hookspec
def crmkit_tables(metadata: MetaData) -> None:
    """Add a plugin's own SQLAlchemy tables to ``metadata``.

    Define ``sqlalchemy.Table`` objects on the given ``metadata`` (the core's
    tables are already on it, so foreign keys to ``clients.id`` work). Pair
    this hook with :func:`crmkit_migrations`, which creates the tables.
    """


@hookspec
def crmkit_migrations() -> list[dict[str, str]] | None:
    """Register a plugin's Alembic version branch.

    Return ``[{"branch": "my_plugin", "path": "/abs/path/to/versions"}]``.
    The folder holds ordinary Alembic revision files; the plugin's first
    revision has ``branch_labels = ("my_plugin",)``, ``down_revision = None``
    and ``depends_on = "crmkit_0001"`` (or a later core revision) when its
    tables reference the core's. ``crmkit db upgrade`` brings every branch to
    its head; ``crmkit db upgrade --branch my_plugin`` only that one.
    """


@hookspec
def crmkit_cli(cli: click.Group) -> None:
    """Add commands to the ``crmkit`` command line.

    Called once on the root :class:`click.Group` at start-up. Import heavy
    modules inside the command functions, never at module level: every
    ``crmkit`` call, ``--help`` included, loads every plugin module.

    A command reaches the deployment through :data:`crmkit.cli.pass_state`,
    which passes the :class:`crmkit.cli.State` of the root options
    (``-C``, ``--as``): ``state.crm()`` opens the deployment and
    ``state.session()`` starts a session as the acting user. Raise
    :class:`crmkit.CrmError` subclasses for bad input; the CLI prints them
    as one line with the right exit code.
    """


@hookspec
def crmkit_startup(crm: CRM) -> None:
    """Called once when a deployment is opened (:meth:`crmkit.CRM.open`).

    Use it to check the plugin's configuration (``crm.config.plugin("name")``)
    and fail early with :class:`crmkit.ConfigError`.
    """


@hookspec
def crmkit_check_client(
    session: Session, client: Client, changes: dict[str, Any]
) -> list[Any] | None:
    """Check a client card before it is saved.

    ``client`` is the card as it will be stored; ``changes`` holds the fields
    being set, by their API names (``owner`` is the owner's user id), all of
    them on create. Return a list of problems
    (:class:`crmkit.Problem` or strings); any problem refuses the save, and
    every problem of every plugin is reported in one message.
    """


@hookspec
def crmkit_client_saved(session: Session, client: Client, created: bool) -> None:
    """Called after a client card was inserted (``created``) or updated.

    Runs inside the session's transaction: writes made through ``session``
    commit or roll back together with the card.
    """


@hookspec
def crmkit_interaction_kinds() -> list[InteractionKind | dict[str, Any]] | None:
    """Register kinds of communication with their formal topics and outcomes.

    Return :class:`crmkit.InteractionKind` objects or dicts with ``name``,
    ``title``, ``topics`` and ``outcomes`` (each a list of names or a dict of
    name to title) and ``direction_required``. When two plugins register the
    same kind, their topic and outcome lists are merged, and a deployment
    extends them under ``[interactions.KIND]`` in ``crmkit.toml``. Only the
    listed topics and outcomes are accepted: free text goes into the note.
    """


@hookspec
def crmkit_pipelines() -> list[Pipeline | dict[str, Any]] | None:
    """Register pipeline templates.

    Return :class:`crmkit.Pipeline` objects or definitions (dicts) that
    :data:`crmkit.core.pipeline.PIPELINE_SCHEMA` validates: stages with
    probability, allotted ``days`` (the SLA), an entry ``gate`` (JSON Schema
    over ``{"deal": ..., "client": ...}``) and ``marks``; ``lost_reasons``;
    outcome ``rules``. A pipeline with ``"entity": "client"`` describes the
    client lifecycle. A definition in ``crmkit.toml`` (``[pipelines.NAME]``)
    replaces a plugin's pipeline of the same name.
    """


@hookspec
def crmkit_check_stage_entry(
    session: Session, pipeline: Pipeline, stage: Stage, deal: Deal | None, client: Client
) -> list[Any] | None:
    """The gate hook: problems that keep a deal (or a client) out of ``stage``.

    Called for every move that the pipeline's order allows, including the
    first stage when a deal is opened (not when a client is created: a new
    client simply starts at the lifecycle's first stage), after the
    stage's own JSON Schema gate, and never for a move to ``lost``; ``deal``
    is None when a client's lifecycle moves. Return problems
    (:class:`crmkit.Problem` or strings); the move is refused with every
    problem of the gate and of every plugin listed in one message.
    """


@hookspec
def crmkit_interaction_logged(session: Session, interaction: Interaction) -> list[Any] | None:
    """Called when an interaction is logged; may answer with effects.

    Return :class:`crmkit.MoveTo` (move the interaction's deal, or with
    ``client=True`` the client's lifecycle) and :class:`crmkit.FollowUp`
    (create a task) objects. They are applied in the same transaction,
    together with the pipeline's outcome rules; a move that a gate refuses
    is reported, and the interaction is still recorded.
    """


@hookspec
def crmkit_stage_changed(session: Session, change: StageChange) -> None:
    """Called after a deal or a client lifecycle moved (``change.entity``).

    ``change`` is the stored :class:`crmkit.StageChange`: pipeline, from and
    to stage, time, acting user and cause. Runs in the same transaction.
    """


@hookspec
def crmkit_invoice_status_changed(
    session: Session, invoice: Invoice, old_status: str | None
) -> None:
    """Called after an invoice was issued (``old_status`` None), paid or cancelled."""


@hookspec
def crmkit_records_imported(
    session: Session, kind: str, inserted_ids: list[int], updated_ids: list[int]
) -> None:
    """Called once per batch of a bulk import (``crmkit import``), never once per row.

    ``kind`` is ``"clients"``, ``"deals"`` or ``"interactions"``;
    the ids are those the batch inserted and updated. Runs in the batch's
    transaction: raising rolls the batch back. A bulk import does not call
    the per-record hooks (``crmkit_check_client``, ``crmkit_client_saved``);
    a plugin that needs to look at imported records reads them here, in bulk.
    """


@hookspec
def crmkit_reports() -> list[Report] | None:
    """Register reports.

    Return :class:`crmkit.Report` objects: a name, a title, the common
    filters the report understands (``period``, ``pipeline``, ``team``,
    ``user``, ``segment``), its own options as JSON Schema properties, and
    ``run(session, query) -> ReportResult``. Every report is then available as
    :meth:`crmkit.Session.report` and as ``crmkit report NAME`` with
    ``--format table|json|csv``. Two plugins may not register the same name.
    """


@hookspec
def crmkit_kpis() -> list[KPI] | None:
    """Register KPIs.

    Return :class:`crmkit.KPI` objects: an id in snake case, a title, a unit
    (``count``, ``money``, ``ratio``, ``number``, ``days``), a direction
    (``higher`` or ``lower`` is better), a kind (``result`` or ``process``)
    and the computation: an aggregate SQL expression over the rows of a
    :class:`crmkit.KPISource` (a SELECT with a ``user_id`` column), optionally
    divided by another aggregate or KPI (``per``), or a Python fallback
    ``compute(session, window)``. KPIs of one source are computed for a
    whole team in one statement. Two plugins may not register the same id.
    """


@hookspec
def crmkit_motivation_schemes() -> list[Scheme] | None:
    """Register motivation schemes.

    Return :class:`crmkit.Scheme` objects: a name, a title and
    ``compute(session, standing) -> Bonus``, which turns a person's
    :class:`crmkit.Standing` for a period (KPI facts, plans, overdue tasks,
    unattributed won deals, the ``[plugin.motivation]`` settings) into a
    :class:`crmkit.Bonus` with its breakdown; optionally ``check(settings,
    crm)``, which raises :class:`crmkit.ConfigError` on bad settings before
    anything is computed. The deployment picks one with ``[plugin.motivation]
    scheme``. Two plugins may not register the same name.
    """


@hookspec
def crmkit_client_details(session: Session, client: Client) -> dict[str, Any] | None:
    """Add a plugin's own facts about a client to ``crmkit client show``.

    Return a dict of plain JSON values (or None); it is shown under the
    plugin's name, in the table and in ``--format json`` (``"plugins":
    {"NAME": {...}}``). Called for one client at a time, never in listings.
    """


@hookspec
def crmkit_sample_client(session: Session, client: Client, random: Any) -> None:
    """Add a plugin's own sample data for a client of ``crmkit init --sample``.

    Called after each sample client card is created and after its segment
    and parameters are filled in, before any of its deals move, so that a
    plugin's gates can be met (the segment plugin fills the needs card here).
    ``random`` is the sample's seeded :class:`random.Random`: use it, and the
    sample stays the same from run to run.
    """


@hookspec
def crmkit_routes(crm: CRM) -> list[Any] | None:
    """Register HTTP routes of ``crmkit serve``.

    Return Starlette routes (``starlette.routing.Route``, ``Mount`` ...;
    import Starlette inside the hook, so that the command line does not pay
    for it). A handler finds the deployment as ``request.app.state.crm`` and
    reads and writes through its sessions, like any other caller:
    :func:`crmkit.server.session_for` opens one as the user of the request's
    API token. Paths must not collide with the core's (``/health``,
    ``/api/me``) nor with another plugin's; a collision is a
    :class:`~crmkit.PluginError` when the application is built.
    """


@hookspec(firstresult=True)
def crmkit_render_document(
    session: Session, name: str, client_id: int, deal_id: int | None
) -> Document | None:
    """Render the document ``name`` (``"proposal"`` ...) for a client, and a deal.

    The first plugin that knows the name answers with a
    :class:`crmkit.Document`; the others return ``None``. A plugin that
    refuses (the client's card is incomplete ...) raises a
    :class:`~crmkit.ValidationError` naming what is missing. This is how a
    plugin uses another's documents without importing it: the email
    tracking plugin sends the segment plugin's proposal as a hosted link.
    """


@hookspec
def crmkit_email_opened(
    session: Session, message: dict[str, Any], first: bool, document: bool
) -> None:
    """Called when a client opens a tracked email (or its hosted document).

    Called by the email tracking plugin (``crmkit-email-tracking``) on the
    first open that counts (a person's, not a mail proxy's or a link
    scanner's) and on a re-open after its ``reopen_gap_hours``; ``first``
    tells which. ``document`` is true when the open was of the hosted
    document (the proposal's pages). ``message`` is the row of
    ``email_outbox`` (``id``, ``client_id``, ``deal_id``, ``user_id``,
    ``template``, ``subject`` ...). ``session`` acts as the deal's owner (or
    the message's sender), in the transaction that marks the message
    notified: what the hook writes is kept only if it succeeds, and happens
    once however many servers saw the open. The plugin's own handler gives
    the owner a task ("call now") and logs an ``email`` interaction with the
    outcome ``opened`` (or ``proposal_read``).
    """


@hookspec
def crmkit_automation_rules() -> list[Rule | dict[str, Any]] | None:
    """Register automation rules (:class:`crmkit.core.automation.Rule` or dicts).

    A dict has the keys of ``[automation.rules.NAME]`` in ``crmkit.toml``
    and a ``name``; a deployment's rule of the same name replaces a
    plugin's. See :doc:`/automation`.
    """


@hookspec
def crmkit_automation_actions() -> list[Action] | None:
    """Register kinds of automation action (:class:`crmkit.core.automation.Action`).

    An action has a name (what a rule's ``do`` says), a JSON Schema of its
    parameters, checked when the deployment opens, and a function
    ``run(context, params)`` that makes the change in ``context.session``
    and returns a summary (``{"task": 12}``). Two plugins may not register
    the same name.
    """


@hookspec
def crmkit_automation_triggers() -> list[TimeTrigger] | None:
    """Register time triggers (:class:`crmkit.core.automation.TimeTrigger`) for the scheduler.

    ``find(session, now, params)`` yields ``(key, payload)`` for every
    record that meets the condition now; the key names the occasion, so a
    rule fires once per occasion however often the scheduler runs.
    """


@hookspec
def crmkit_automation_events() -> list[str] | None:
    """Declare the events a plugin raises (``crm.automation.fire(session, EVENT, ...)``).

    Rules may name them in ``event``; the core's own are
    :data:`crmkit.core.automation.EVENTS`.
    """


@hookspec
def crmkit_access_policies() -> list[dict[str, Any]] | None:
    """Register access policy documents (JSON, as dicts or JSON text).

    Each document is checked against the policy meta-schema
    (:data:`crmkit.core.access.POLICY_SCHEMA`) when the deployment opens:
    ``{"version": 1, "default": "deny", "rules": [...], "quotas": [...]}``.
    A rule allows or denies ``actions`` on a ``resource`` to ``roles`` when
    its ``when`` (JSON Schema over ``{"subject", "action", "resource"}``)
    holds; see :doc:`/access`. Two plugins may not register the same rule id;
    a deployment's policy file replaces a plugin's rule of the same id.
    """


@hookspec
def crmkit_access_resources() -> list[Resource] | None:
    """Declare resources that policies protect, or more actions and attributes on one.

    Return :class:`crmkit.core.access.Resource` objects: a name, the table
    its records live in, their attributes (each a JSON type and a column, or
    a column reached through a foreign key) and the actions on it. A resource
    with the name of an existing one adds its actions, attributes and
    hideable fields to it.
    """


@hookspec
def crmkit_read_quota_exceeded(crm: CRM, user: User, quota: Quota, heads: list[User]) -> None:
    """Called when ``user`` is refused a client card past a daily read quota.

    ``heads`` are the heads of the user's team and of the teams above it
    (the deployment's admin when there is none). Called after the refused
    session ended, outside any transaction: open a session of your own to
    write anything. The built-in access plugin gives each head a task.
    """
