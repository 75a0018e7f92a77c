"""Building the plugin manager.

Every :class:`crmkit.CRM` and every CLI run gets a fresh manager from
:func:`load_plugins`; there is no module-global manager. Plugins come
from three places, in this order:

1. the built-in plugins in :data:`DEFAULT_PLUGINS` (``crmkit/plugins/``),
   registered exactly like external ones;
2. installed distributions that declare an entry point in the ``crmkit``
   group (``[project.entry-points.crmkit]``);
3. modules named in the deployment's ``crmkit.toml``
   (``[plugins] modules = ["mycompany.crm_rules"]``).

Environment switches:

``CRMKIT_LOAD_PLUGINS``
    Comma-separated allow-list of entry-point names to load; set but empty
    loads no external plugin.
``CRMKIT_STRICT_PLUGINS``
    ``1`` turns a plugin that fails to load from a warning into an error.
``CRMKIT_TRACE_PLUGINS``
    ``1`` prints every hook call and its result to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import pluggy
from pluggy import HookImpl, Result

from . import hookspecs
from .errors import NotFound, PluginError, Problem

if TYPE_CHECKING:  # pragma: no cover
    import click
    from sqlalchemy import MetaData

    from .access import Quota
    from .app import CRM
    from .model import Client, Deal, Document, Interaction, Invoice, Segment, StageChange, User
    from .pipeline import Pipeline, Stage
    from .store import Session

#: Dotted names of the built-in plugins, registered before any other.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "crmkit.plugins.access",
    "crmkit.plugins.analytics",
    "crmkit.plugins.automation",
    "crmkit.plugins.channels",
    "crmkit.plugins.interactions",
    "crmkit.plugins.kpis",
    "crmkit.plugins.leads",
    "crmkit.plugins.motivation",
    "crmkit.plugins.pipelines",
    "crmkit.plugins.plans",
)
#: The entry-point group that installed plugins declare.
ENTRY_POINT_GROUP = "crmkit"


class PluginLoadWarning(UserWarning):
    """A plugin failed to load and was skipped."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def load_plugins(
    *,
    entry_points: bool = True,
    modules: Iterable[str] = (),
    disable: Iterable[str] = (),
    strict: bool | None = None,
) -> Plugins:
    """A new :class:`Plugins` with the built-ins, entry points and ``modules`` loaded.

    ``disable`` names plugins (entry-point or module names) to block.
    ``strict`` defaults to the ``CRMKIT_STRICT_PLUGINS`` switch.
    """
    if strict is None:
        strict = _truthy(os.environ.get("CRMKIT_STRICT_PLUGINS"))
    plugins = Plugins()
    pm = plugins.pm
    for name in disable:
        pm.set_blocked(name)
    for dotted in DEFAULT_PLUGINS:
        if not pm.is_blocked(dotted):
            pm.register(importlib.import_module(dotted), name=dotted)
    if entry_points:
        _load_entry_points(plugins, strict=strict)
    for dotted in modules:
        _guarded(plugins, dotted, lambda d=dotted: importlib.import_module(d), strict=strict)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    if _truthy(os.environ.get("CRMKIT_TRACE_PLUGINS")):
        _trace(pm)
    return plugins


def _load_entry_points(plugins: Plugins, *, strict: bool) -> None:
    from importlib.metadata import entry_points

    allow = os.environ.get("CRMKIT_LOAD_PLUGINS")
    allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
    seen: set[str] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.name)
        if allowed is not None and ep.name not in allowed:
            continue
        _guarded(plugins, ep.name, ep.load, strict=strict, dist=ep.dist)


def _guarded(plugins: Plugins, name: str, load: Any, *, strict: bool, dist: Any = None) -> None:
    pm = plugins.pm
    if pm.is_blocked(name) or pm.has_plugin(name):
        return
    try:
        pm.register(load(), name=name)
        if dist is not None:
            plugins.distributions[name] = dist
    except Exception as exc:
        message = f"plugin {name!r} failed to load: {type(exc).__name__}: {exc}"
        if strict:
            raise PluginError(message) from exc
        warnings.warn(message, PluginLoadWarning, stacklevel=2)


def _trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, impls: Sequence[HookImpl], kwargs: Mapping[str, Any]) -> None:
        names = [i.plugin_name for i in impls]
        print(f"crmkit: {hook_name}({', '.join(kwargs)}) -> {names}", file=sys.stderr)

    def after(
        outcome: Result[Any], hook_name: str, impls: Sequence[HookImpl], kwargs: Mapping[str, Any]
    ) -> None:
        print(f"crmkit: {hook_name} returned {outcome.get_result()!r}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


class Plugins:
    """A typed face of the pluggy manager: one method per hook.

    The core calls ``crm.plugins.segments()`` rather than ``pm.hook...`` so
    that the merge rules of each hook live in one place and mypy checks them.
    ``pm`` is the underlying :class:`pluggy.PluginManager`, for tests and
    tools that register plugins by hand.
    """

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("crmkit")
        self.pm.add_hookspecs(hookspecs)
        self.distributions: dict[str, Any] = {}

    # -- registration hooks -------------------------------------------------
    def segments(self) -> list[Segment]:
        """Every plugin's ``crmkit_segments``, merged."""
        return _flatten(self.pm.hook.crmkit_segments())

    def source_channels(self) -> list[str | dict[str, Any]]:
        """Every plugin's ``crmkit_source_channels``, merged."""
        return _flatten(self.pm.hook.crmkit_source_channels())

    def tables(self, metadata: MetaData) -> None:
        """Let every plugin add its tables to ``metadata``."""
        self.pm.hook.crmkit_tables(metadata=metadata)

    def migrations(self) -> list[dict[str, str]]:
        """Every plugin's Alembic branch (``crmkit_migrations``)."""
        return _flatten(self.pm.hook.crmkit_migrations())

    def cli(self, cli: click.Group) -> None:
        """Let every plugin add commands to ``cli``."""
        self.pm.hook.crmkit_cli(cli=cli)

    # -- lifecycle and event hooks -----------------------------------------
    def startup(self, crm: CRM) -> None:
        """Tell every plugin that ``crm`` was opened."""
        self.pm.hook.crmkit_startup(crm=crm)

    def check_client(
        self, session: Session, client: Client, changes: dict[str, Any]
    ) -> list[Problem]:
        """Every plugin's problems with a client card, as :class:`Problem` objects."""
        found = _flatten(
            self.pm.hook.crmkit_check_client(session=session, client=client, changes=changes)
        )
        return [p if isinstance(p, Problem) else Problem(None, str(p)) for p in found]

    def client_saved(self, session: Session, client: Client, created: bool) -> None:
        """Tell every plugin that a client card was saved."""
        self.pm.hook.crmkit_client_saved(session=session, client=client, created=created)

    def interaction_kinds(self) -> list[tuple[Any, str | None]]:
        """``(definition, plugin name)`` pairs, built-ins first."""
        return self._with_names(self.pm.hook.crmkit_interaction_kinds)

    def pipelines(self) -> list[tuple[Any, str | None]]:
        """``(definition, plugin name)`` pairs, built-ins first."""
        return self._with_names(self.pm.hook.crmkit_pipelines)

    def check_stage_entry(
        self, session: Session, pipeline: Pipeline, stage: Stage, deal: Deal | None, client: Client
    ) -> list[Problem]:
        found = _flatten(
            self.pm.hook.crmkit_check_stage_entry(
                session=session, pipeline=pipeline, stage=stage, deal=deal, client=client
            )
        )
        return [p if isinstance(p, Problem) else Problem(None, str(p)) for p in found]

    def interaction_logged(self, session: Session, interaction: Interaction) -> list[Any]:
        return _flatten(
            self.pm.hook.crmkit_interaction_logged(session=session, interaction=interaction)
        )

    def stage_changed(self, session: Session, change: StageChange) -> None:
        self.pm.hook.crmkit_stage_changed(session=session, change=change)

    def invoice_status_changed(
        self, session: Session, invoice: Invoice, old_status: str | None
    ) -> None:
        self.pm.hook.crmkit_invoice_status_changed(
            session=session, invoice=invoice, old_status=old_status
        )

    def reports(self) -> list[tuple[Any, str | None]]:
        """``(report, plugin name)`` pairs (``crmkit_reports``), built-ins first."""
        return self._with_names(self.pm.hook.crmkit_reports)

    def kpis(self) -> list[Any]:
        """Every plugin's ``crmkit_kpis``, merged (built-ins first)."""
        return _flatten(self.pm.hook.crmkit_kpis())

    def motivation_schemes(self) -> list[Any]:
        """Every plugin's ``crmkit_motivation_schemes``, merged (built-ins first)."""
        return _flatten(self.pm.hook.crmkit_motivation_schemes())

    def access_policies(self) -> list[tuple[Any, str | None]]:
        """``(policy document, plugin name)`` pairs (``crmkit_access_policies``)."""
        return self._with_names(self.pm.hook.crmkit_access_policies)

    def access_resources(self) -> list[tuple[Any, str | None]]:
        """``(resource, plugin name)`` pairs (``crmkit_access_resources``)."""
        return self._with_names(self.pm.hook.crmkit_access_resources)

    def read_quota_exceeded(self, crm: CRM, user: User, quota: Quota, heads: list[User]) -> None:
        """Tell every plugin that ``user`` was refused past a read quota."""
        self.pm.hook.crmkit_read_quota_exceeded(crm=crm, user=user, quota=quota, heads=heads)

    def client_details(self, session: Session, client: Client) -> dict[str, dict[str, Any]]:
        """Each plugin's facts about ``client`` (``crmkit_client_details``), by plugin name.

        A plugin that returns anything else than a dict or None is a :class:`PluginError`.
        """
        found: dict[str, dict[str, Any]] = {}
        for impl in reversed(self.pm.hook.crmkit_client_details.get_hookimpls()):
            result: Any = impl.function(
                **{
                    k: v
                    for k, v in (("session", session), ("client", client))
                    if k in impl.argnames
                }
            )
            if result is None:
                continue
            if not isinstance(result, Mapping):
                raise PluginError(
                    f"{impl.plugin_name}: crmkit_client_details must return a dict or None, "
                    f"not {result!r}",
                    field="client_details",
                )
            if result:
                found[impl.plugin_name] = dict(result)
        return found

    def sample_client(self, session: Session, client: Client, random: Any) -> None:
        """Let every plugin add sample data for ``client``."""
        self.pm.hook.crmkit_sample_client(session=session, client=client, random=random)

    def records_imported(
        self, session: Session, kind: str, inserted_ids: list[int], updated_ids: list[int]
    ) -> None:
        """Tell every plugin about one imported batch."""
        self.pm.hook.crmkit_records_imported(
            session=session, kind=kind, inserted_ids=inserted_ids, updated_ids=updated_ids
        )

    def automation_rules(self) -> list[tuple[Any, str | None]]:
        """``(rule, plugin name)`` pairs (``crmkit_automation_rules``)."""
        return self._with_names(self.pm.hook.crmkit_automation_rules)

    def automation_actions(self) -> list[Any]:
        """Every plugin's ``crmkit_automation_actions``, with the plugin's name set."""
        return self._named(self.pm.hook.crmkit_automation_actions)

    def automation_triggers(self) -> list[Any]:
        """Every plugin's ``crmkit_automation_triggers``, with the plugin's name set."""
        return self._named(self.pm.hook.crmkit_automation_triggers)

    def automation_events(self) -> list[str]:
        """The events plugins declare (``crmkit_automation_events``)."""
        return [str(e) for e in _flatten(self.pm.hook.crmkit_automation_events())]

    def _named(self, hook: Any) -> list[Any]:
        import attrs

        found = []
        for item, plugin in self._with_names(hook):
            if attrs.has(type(item)) and getattr(item, "plugin", "") is None:
                item = attrs.evolve(item, plugin=plugin)
            found.append(item)
        return found

    def routes(self, crm: CRM) -> list[tuple[Any, str]]:
        """``(route, plugin name)`` pairs of every plugin's ``crmkit_routes``."""
        pairs: list[tuple[Any, str]] = []
        for impl in self.pm.hook.crmkit_routes.get_hookimpls():
            result: Any = impl.function(**({"crm": crm} if "crm" in impl.argnames else {}))
            pairs.extend((route, impl.plugin_name) for route in result or ())
        return pairs

    def render_document(
        self, session: Session, name: str, client_id: int, deal_id: int | None = None
    ) -> Document:
        """The document ``name`` for a client, from the first plugin that knows it.

        :class:`NotFound` when no plugin renders documents of that name.
        """
        document = self.pm.hook.crmkit_render_document(
            session=session, name=name, client_id=client_id, deal_id=deal_id
        )
        if document is None:
            raise NotFound(f"no plugin renders a document called {name!r}", field="document")
        return cast("Document", document)

    def _with_names(self, hook: Any) -> list[tuple[Any, str | None]]:
        """Call a registration hook plugin by plugin, keeping who returned what."""
        pairs: list[tuple[Any, str | None]] = []
        for impl in hook.get_hookimpls():  # registration order, built-ins (trylast) first
            result = impl.function()
            for item in result or ():
                pairs.append((item, impl.plugin_name))
        return pairs

    # -- introspection ------------------------------------------------------
    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin`` (a module, class or instance with hook implementations)."""
        return self.pm.register(plugin, name=name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> None:
        """Unregister ``plugin`` (or the plugin called ``name``)."""
        self.pm.unregister(plugin, name=name)

    def infos(self, *, include_builtin: bool = False) -> list[dict[str, Any]]:
        """Name, version, distribution and hooks of every registered plugin."""
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            builtin = name in DEFAULT_PLUGINS
            if builtin and not include_builtin:
                continue
            dist = self.distributions.get(name)
            if dist is not None:
                version = dist.version
            elif builtin:
                from crmkit import __version__ as version
            else:
                version = getattr(plugin, "__version__", None)
            hooks = sorted(h.name for h in (self.pm.get_hookcallers(plugin) or []))
            infos.append(
                {
                    "name": name,
                    "version": version,
                    "distribution": dist.metadata["Name"] if dist is not None else None,
                    "builtin": builtin,
                    "hooks": hooks,
                }
            )
        return sorted(infos, key=lambda i: (not i["builtin"], i["name"]))


def _flatten(results: Iterable[Any]) -> list[Any]:
    """Merge the lists returned by a registration hook, in registration order."""
    merged: list[Any] = []
    for result in reversed(list(results)):  # pluggy calls last-registered first
        if result:
            merged.extend(result)
    return merged
