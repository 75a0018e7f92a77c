"""The application object: :class:`CRM` opens a deployment and hands out sessions."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import Engine, MetaData, create_engine, event, inspect, select
from sqlalchemy.exc import DatabaseError as SADatabaseError
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from .config import CONFIG_NAME, Config, find_root, render_config
from .errors import (
    ConfigError,
    CrmError,
    DatabaseError,
    DeploymentError,
    NotFound,
    PluginError,
    ValidationError,
)
from .model import Channel, InteractionKind, Role, Segment, User, best_segment, to_json
from .pipeline import Pipeline
from .plugins import Plugins, load_plugins
from .reports import Report
from .store import AuditEntry, Session, _user

if TYPE_CHECKING:  # pragma: no cover
    from .access import Policies
    from .automation import Automation
    from .kpis import KPI
    from .motivation import Scheme


class CRM:
    """A crmkit deployment: its configuration, plugins and database.

    Open an existing deployment with :meth:`open`, make a new one with
    :meth:`create`, then work in sessions::

        crm = CRM.open("mycrm")
        with crm.session(as_user="anna") as s:
            acme = s.clients.create(name="Acme", email="buy@acme.example")
    """

    def __init__(self, config: Config, plugins: Plugins) -> None:
        self.config = config
        self.plugins = plugins
        self._initialised = False
        self._indexes_checked = False

    # -- opening ---------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        plugins: Plugins | None = None,
        entry_points: bool = True,
    ) -> CRM:
        """Open the deployment in ``path`` (default: ``CRMKIT_DIR`` or the current folder).

        ``plugins`` replaces plugin loading (tests pass a ready
        :class:`~crmkit.core.plugins.Plugins`); ``entry_points=False`` loads
        only the built-in plugins and the modules named in ``crmkit.toml``.
        """
        config = Config.load(find_root(path))
        if plugins is None:
            plugins = load_plugins(
                entry_points=entry_points,
                modules=config.plugin_modules,
                disable=config.plugin_disable,
            )
        crm = cls(config, plugins)
        plugins.startup(crm=crm)
        return crm

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        database_url: str | None = None,
        admin: str = "admin",
        admin_name: str | None = None,
        plugins: Plugins | None = None,
        entry_points: bool = True,
        extra_config: str = "",
    ) -> CRM:
        """Make a new deployment: write ``crmkit.toml``, migrate the database, add the admin.

        ``extra_config`` is TOML appended to the new ``crmkit.toml`` (``crmkit
        init --rules examples`` adds the example automation rules), checked
        when the deployment opens like the rest of it. Refuses a folder that
        already holds a deployment. When anything fails, the files it wrote
        are removed again.
        """
        root = Path(path).expanduser().resolve()
        config_path = root / CONFIG_NAME
        if config_path.exists():
            raise DeploymentError(
                f"{root} already holds a crmkit deployment; refusing to overwrite it",
                field="path",
            )
        if root.exists() and not root.is_dir():
            raise DeploymentError(f"{root} is not a folder", field="path")
        from .store import _LOGIN

        if not _LOGIN.match(admin):
            raise ValidationError("must be lowercase letters, digits or . _ @ -", field="admin")
        made_dir = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        text = render_config(database_url=database_url, admin=admin)
        config_path.write_text(text + extra_config, "utf-8")
        crm = None
        try:
            crm = cls.open(root, plugins=plugins, entry_points=entry_points)
            crm.upgrade()
            crm._add_admin(admin, admin_name or "Administrator")
        except BaseException:
            if crm is not None:
                crm.close()
            _remove_new_files(root, made_dir, database_url)
            raise
        return crm

    # -- plugin registries -------------------------------------------------------
    @cached_property
    def segments(self) -> dict[str, Segment]:
        """Segments registered by plugins, with ``crmkit.toml`` overrides applied.

        ``[segments.NAME]`` may replace the schema (``schema``), extend it
        (``extend``: more ``properties`` and ``required`` fields), retitle the
        segment (``title``); every other key is a setting merged over the
        plugin's :attr:`Segment.settings` (tables key by key).
        """
        from .validation import check_schema, schema_problems

        found: dict[str, Segment] = {}
        for seg in self.plugins.segments():
            if seg.name in found:
                raise CrmError(f"segment {seg.name!r} is registered twice", field="segments")
            found[seg.name] = seg
        for name, override in self.config.segments.items():
            if name not in found:
                raise ConfigError(
                    f"crmkit.toml overrides segment {name!r}, which no plugin registers "
                    f"(known: {', '.join(sorted(found)) or 'none'})",
                    field=f"segments.{name}",
                )
            seg = found[name]
            schema = override.get("schema", seg.schema)
            if "schema" in override:  # the deployment's schema: its fault is the file's
                _check_config_schema(schema, field=f"segments.{name}.schema")
            else:
                check_schema(schema, field=f"segments.{name}.schema")
            if "extend" in override:
                where = f"segments.{name}.extend"
                schema = _extend_schema(schema, override["extend"], field=where)
                _check_config_schema(schema, field=where)
            settings = _deep_merge(
                seg.settings,
                {k: v for k, v in override.items() if k not in ("title", "schema", "extend")},
            )
            if seg.settings_schema is not None:
                problems = schema_problems(seg.settings_schema, settings, prefix=f"segments.{name}")
                if len(problems) == 1:
                    raise ConfigError(problems[0].reason, field=problems[0].field)
                if problems:
                    raise ConfigError("; ".join(str(p) for p in problems))
            found[name] = attrs.evolve(
                seg, title=override.get("title", seg.title), schema=schema, settings=settings
            )
        for seg in found.values():
            check_schema(seg.schema, field=f"segments.{seg.name}.schema")
        return found

    def classify(self, params: dict[str, Any]) -> str | None:
        """The segment that fits a card's ``params`` best, or None.

        Every segment's :meth:`Segment.classify` scores the parameters; the
        highest score above 0 wins. A tie between the best (two segments fit
        equally well) or no fit at all leaves the card without a segment.
        """
        if not params:
            return None
        return best_segment((seg.classify(params), seg.name) for seg in self.segments.values())

    def segment(self, name: str) -> Segment:
        """The segment called ``name``; raises :class:`ValidationError` naming the known ones."""
        try:
            return self.segments[name]
        except KeyError:
            known = ", ".join(sorted(self.segments)) or "none; install a segment plugin"
            raise ValidationError(
                f"unknown segment {name!r} (known: {known})", field="segment"
            ) from None

    @cached_property
    def channels(self) -> dict[str, Channel]:
        """Marketing channels from plugins and ``[clients] channels``."""
        found: dict[str, Channel] = {}
        for item in [*self.plugins.source_channels(), *self.config.channels]:
            if isinstance(item, str):
                item = {"name": item}
            name = item["name"]
            found[name] = Channel(name=name, title=item.get("title") or name.replace("_", " "))
        return found

    def channel(self, name: str) -> Channel:
        """The channel called ``name``; raises :class:`ValidationError` naming the known ones."""
        try:
            return self.channels[name]
        except KeyError:
            known = ", ".join(sorted(self.channels)) or "none"
            raise ValidationError(
                f"unknown channel {name!r} (known: {known}; add one under [clients] channels)",
                field="source",
            ) from None

    @cached_property
    def interaction_kinds(self) -> dict[str, InteractionKind]:
        """Kinds of communication from plugins, with ``[interactions.KIND]`` merged in."""
        merged: dict[str, dict[str, Any]] = {}
        sources = [*self.plugins.interaction_kinds()]
        sources += [({"name": k, **v}, None) for k, v in self.config.interactions.items()]
        for item, plugin in sources:
            data = item if isinstance(item, dict) else to_json(item)
            name = data.get("name")
            if not isinstance(name, str) or not name:
                raise PluginError(f"{plugin}: an interaction kind needs a name", field="kinds")
            kind = merged.setdefault(
                name, {"name": name, "title": name, "topics": {}, "outcomes": {}, "plugin": plugin}
            )
            kind["title"] = data.get("title") or kind["title"]
            kind["direction_required"] = data.get(
                "direction_required", kind.get("direction_required", False)
            )
            for key in ("topics", "outcomes"):
                kind[key].update(_titled(data.get(key) or {}))
        return {name: InteractionKind(**data) for name, data in merged.items()}

    def interaction_kind(self, name: str) -> InteractionKind:
        """The kind called ``name``; the error lists the allowed ones."""
        try:
            return self.interaction_kinds[name]
        except KeyError:
            allowed = ", ".join(sorted(self.interaction_kinds)) or "none"
            raise ValidationError(
                f"unknown interaction kind {name!r} (allowed: {allowed})", field="kind"
            ) from None

    @cached_property
    def pipelines(self) -> dict[str, Pipeline]:
        """Pipelines from plugins, replaced or added by ``[pipelines.NAME]``."""
        from .pipeline import merge_pipelines

        try:
            from_plugins = merge_pipelines(self.plugins.pipelines())
        except ValidationError as exc:
            raise PluginError(f"a plugin's pipeline is invalid: {exc}", field=exc.field) from None
        try:
            from_config = merge_pipelines(
                ({"name": k, **v}, None) for k, v in self.config.pipelines.items()
            )
        except ValidationError as exc:
            raise ConfigError(f"{exc.message} (in crmkit.toml)", field=exc.field) from None
        return {**from_plugins, **from_config}

    def pipeline(self, name: str, *, field: str = "pipeline") -> Pipeline:
        """The pipeline called ``name``; the error lists the allowed ones."""
        pipeline = self.pipelines.get(name)
        if pipeline is None or pipeline.entity != "deal":
            allowed = ", ".join(p.name for p in self.pipelines.values() if p.entity == "deal")
            raise ValidationError(
                f"unknown pipeline {name!r} (allowed: {allowed or 'none'})", field=field
            )
        return pipeline

    @cached_property
    def lifecycle(self) -> Pipeline | None:
        """The client lifecycle: the pipeline with ``entity = "client"`` (None if there is none)."""
        found = [p for p in self.pipelines.values() if p.entity == "client"]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ConfigError(
                f"more than one client lifecycle pipeline: {names}", field="pipelines"
            )
        return found[0] if found else None

    @cached_property
    def reports(self) -> dict[str, Report]:
        """Reports registered by plugins (``crmkit_reports``), by name."""
        from .reports import merge_reports

        found: dict[str, Report] = {}
        merge_reports(found, self.plugins.reports())
        return found

    def report(self, name: str) -> Report:
        """The report called ``name``; the error lists the known ones."""
        try:
            return self.reports[name]
        except KeyError:
            known = ", ".join(sorted(self.reports)) or "none"
            raise NotFound(f"no report {name!r} (known: {known})", field="report") from None

    @cached_property
    def kpis(self) -> dict[str, KPI]:
        """KPIs registered by plugins (``crmkit_kpis``), by id."""
        from .kpis import collect

        return collect(self.plugins.kpis())

    def kpi(self, kpi_id: str) -> KPI:
        """The KPI ``kpi_id``; the error lists the known ones."""
        try:
            return self.kpis[kpi_id]
        except KeyError:
            known = ", ".join(sorted(self.kpis)) or "none"
            raise NotFound(f"no KPI {kpi_id!r} (known: {known})", field="kpi") from None

    @cached_property
    def motivation_schemes(self) -> dict[str, Scheme]:
        """Motivation schemes registered by plugins (``crmkit_motivation_schemes``), by name."""
        from .motivation import collect

        return collect(self.plugins.motivation_schemes())

    @cached_property
    def automation(self) -> Automation:
        """The automation rules, actions and time triggers (:mod:`crmkit.core.automation`)."""
        from .automation import Automation

        return Automation(self)

    @cached_property
    def access(self) -> Policies:
        """The access policies: plugins' (``crmkit_access_policies``), then ``[access] policies``.

        Every document is checked when the deployment's policies are first
        used; a bad one is a :class:`PluginError` or :class:`ConfigError` that
        names the rule and the problem.
        """
        from .access import load_policies

        return load_policies(self)

    @property
    def tz(self) -> Any:
        """The deployment's time zone (``[crmkit] timezone``)."""
        import zoneinfo

        return zoneinfo.ZoneInfo(self.config.timezone)

    def refresh(self) -> None:
        """Forget what was read from plugins (after registering or unregistering one)."""
        names = (
            "segments",
            "channels",
            "interaction_kinds",
            "pipelines",
            "lifecycle",
            "reports",
            "kpis",
            "motivation_schemes",
            "access",
            "automation",
        )
        for name in names:
            self.__dict__.pop(name, None)

    # -- database ---------------------------------------------------------------
    @cached_property
    def metadata(self) -> MetaData:
        """The core's tables plus every plugin's."""
        from .schema import build_metadata

        return build_metadata(self.plugins)

    @cached_property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (SQLite: WAL, foreign keys, real transactions)."""
        return make_engine(self.config.database_url, echo=self.config.echo)

    @contextlib.contextmanager
    def connect(self, *, readonly: bool = False) -> Iterator[Any]:
        """A connection in a transaction, with database errors made readable.

        On SQLite a transaction that may write starts with ``BEGIN IMMEDIATE``,
        so writers queue up (``busy_timeout``) instead of failing when they
        find their snapshot stale; ``readonly`` ones start a plain ``BEGIN``.
        A ``readonly`` transaction reads one consistent snapshot on both
        databases (PostgreSQL: ``REPEATABLE READ READ ONLY``), so a report or
        an export read in many queries is not torn by concurrent writes.
        """
        try:
            with self.engine.connect() as conn:
                if readonly:
                    conn.execution_options(crmkit_readonly=True)
                    if conn.dialect.name == "postgresql":
                        conn.execution_options(
                            isolation_level="REPEATABLE READ", postgresql_readonly=True
                        )
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise _database_error(exc, self.config.database_url) from None

    @contextlib.contextmanager
    def session(
        self,
        as_user: str | int | None = None,
        *,
        readonly: bool = False,
        token: str | None = None,
    ) -> Iterator[Session]:
        """A unit of work acting as ``as_user`` (login or id; default: the deployment's admin).

        Everything done in the ``with`` block commits at its end, or rolls
        back if it raises. ``readonly`` sessions (reports, listings) do not
        queue behind writers on SQLite. With ``token``, the session acts as
        the token's user, checked by :meth:`authenticate` when it opens.
        """
        if token is not None:
            as_user = self.authenticate(token).id
        login = self.config.admin if as_user is None else as_user
        session: Session | None = None
        try:
            with self.connect(readonly=readonly) as conn:
                session = Session(self, conn, self._session_user(conn, login))
                if not self._indexes_checked:
                    self._check_indexes(conn, session)
                try:
                    yield session
                    if not readonly:  # in the transaction, last
                        _write_reads(conn, session)
                        if session.audit_buffer:
                            from . import audit

                            audit.append(conn, session.user, session.audit_buffer)
                except (ProgrammingError, OperationalError) as exc:
                    if _missing_table(exc):
                        raise DatabaseError(
                            f"the database lacks a table ({exc.orig}); run 'crmkit db upgrade'"
                        ) from exc
                    raise
        except BaseException:
            # rolled back: the access decisions (denials above all) are kept, the changes not
            if session is not None:
                kept = [e for e in session.audit_buffer if e.kind == "access"]
                if kept or session.pending_reads:
                    try:  # the cards were opened (and seen) even if the work then failed
                        self._write_audit(session.user, kept, session)
                    except Exception as exc:  # the original error matters more; say what was lost
                        warnings.warn(
                            f"{len(kept)} audit entries could not be written: {exc}", stacklevel=3
                        )
                self._after_end(session)
            raise
        if readonly and session is not None and (session.audit_buffer or session.pending_reads):
            # a read-only transaction could not write them: a write transaction of their own
            self._write_audit(session.user, session.audit_buffer, session)
        if session is not None:
            self._after_end(session)

    def _check_indexes(self, conn: Any, session: Session) -> None:
        """Once per CRM: indexes that an import killed midway left dropped come back.

        One query in the first session's transaction; the indexes are created
        after it ends (:func:`crmkit.core.indexes.check`), in a transaction of
        their own.
        """
        from .indexes import check, stale_rows

        self._indexes_checked = True
        if stale_rows(self, conn):
            session.after_end.append(check)

    def _after_end(self, session: Session) -> None:
        """Run the work a session left for after its transaction (``Session.after_end``)."""
        for task in session.after_end:
            task(self)

    def _session_user(self, conn: Any, login: str | int) -> User:
        """The active user a session acts as (:class:`NotFound`, :class:`DeploymentError`)."""
        self._require_initialised(conn)
        users = self.metadata.tables["users"]
        col = users.c.id if isinstance(login, int) else users.c.login
        row = conn.execute(select(users).where(col == login)).first()
        if row is None:
            raise NotFound(f"no user {login!r} in this deployment", field="as_user")
        user = _user(row)
        if not user.active:
            raise DeploymentError(f"user {user.login!r} is deactivated", field="as_user")
        return user

    def _write_audit(
        self, user: User, entries: list[AuditEntry], session: Session | None = None
    ) -> None:
        """Append ``entries`` to the audit log in a transaction of their own.

        The session's opened client cards (read quotas) are counted in it too.
        """
        from . import audit

        with self.connect() as conn:
            try:
                if session is not None:
                    _write_reads(conn, session)
                if entries:
                    audit.append(conn, user, entries)
            except (ProgrammingError, OperationalError) as exc:
                if _missing_table(exc):
                    raise DatabaseError(
                        f"the database lacks a table ({exc.orig}); run 'crmkit db upgrade'"
                    ) from exc
                raise

    def _require_initialised(self, conn: Any) -> None:
        if self._initialised:
            return
        if not inspect(conn).has_table("alembic_version"):
            raise DatabaseError(
                "the database has no crmkit schema; run 'crmkit db upgrade' "
                "(or 'crmkit init' for a new deployment)",
                field="database",
            )
        self._initialised = True

    def _add_admin(self, login: str, name: str) -> User:
        from .schema import utcnow

        users = self.metadata.tables["users"]
        with self.connect() as conn:
            conn.execute(
                users.insert().values(
                    login=login, name=name, role=Role.ADMIN.value, active=True, created_at=utcnow()
                )
            )
        with self.session(as_user=login) as s:
            user = s.user
            s.record("user", user.id, "created", {"login": login, "role": "admin"})
        return user

    # -- API tokens ----------------------------------------------------------------
    def authenticate(self, token: str) -> User:
        """The user an API token (see :class:`~crmkit.core.tokens.Tokens`) acts as.

        The token is checked on every call, in its own transaction, which
        also records when it was last used: a revoked or expired token, or
        one whose user was deactivated, is refused from the next call on.
        Every refusal is the same :class:`~crmkit.PermissionDenied`, which does not
        say what is wrong, so that it tells nothing about which tokens exist.
        """
        from .tokens import authenticate

        with self.connect() as conn:
            self._require_initialised(conn)
            return authenticate(self.metadata, conn, token)

    # -- migrations --------------------------------------------------------------
    def upgrade(self, branch: str | None = None, revision: str = "head") -> None:
        """Bring the database to ``revision`` (every branch, or only ``branch``)."""
        from . import migrate

        migrate.upgrade(self, branch=branch, revision=revision)

    def schema_status(self) -> list[dict[str, Any]]:
        """Per branch: current revision, head revision, and whether it is up to date."""
        from . import migrate

        return migrate.status(self)

    def close(self) -> None:
        """Release the database connections."""
        if "engine" in self.__dict__:
            self.engine.dispose()
            del self.__dict__["engine"]

    def __enter__(self) -> CRM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CRM {self.config.root}>"


def _write_reads(conn: Any, session: Session) -> None:
    """Count the client cards the session opened toward today's read quota (see Access)."""
    if not session.pending_reads:
        return
    import datetime as dt

    from sqlalchemy import insert

    reads = session.tables["access_reads"]
    day = dt.datetime.now(session.crm.tz).date()
    known = set(
        conn.execute(
            select(reads.c.client_id).where(
                reads.c.user_id == session.user.id,
                reads.c.day == day,
                reads.c.client_id.in_(sorted(session.pending_reads)),
            )
        ).scalars()
    )
    new = sorted(session.pending_reads - known)
    if new:
        conn.execute(
            insert(reads), [{"user_id": session.user.id, "day": day, "client_id": c} for c in new]
        )
    session.pending_reads.clear()


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, tables key by key (other values replace)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _check_config_schema(schema: Any, *, field: str) -> None:
    """Raise :class:`ConfigError` unless ``schema``, from ``crmkit.toml``, is a JSON Schema."""
    from .validation import check_schema

    if not isinstance(schema, dict):
        raise ConfigError("must be a table (a JSON Schema)", field=field)
    try:
        check_schema(schema, field=field)
    except ValidationError as exc:
        raise ConfigError(exc.message, field=exc.field) from None


def _extend_schema(schema: dict[str, Any], extend: Any, *, field: str) -> dict[str, Any]:
    """A segment's schema with more properties and primary fields (``[segments.NAME.extend]``)."""
    if not isinstance(extend, dict) or set(extend) - {"properties", "required"}:
        raise ConfigError("may hold only 'properties' and 'required'", field=field)
    out = dict(schema)
    out["properties"] = {**schema.get("properties", {}), **extend.get("properties", {})}
    required = list(schema.get("required", []))
    for name in extend.get("required", []):
        if name not in out["properties"]:
            raise ConfigError(
                f"{name!r} is not a parameter of the segment", field=f"{field}.required"
            )
        if name not in required:
            required.append(name)
    if required:
        out["required"] = required
    return out


def _titled(items: Any) -> dict[str, str]:
    """A formal list as name -> title, from a list of names or a dict."""
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    return {str(n): str(n).replace("_", " ").capitalize() for n in items}


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and real BEGIN/COMMIT."""
    try:
        engine = create_engine(url, echo=echo, future=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise DatabaseError(
            f"cannot use database URL {_safe(url)}: {exc}", field="database.url"
        ) from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below drive transactions
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            readonly = conn.get_execution_options().get("crmkit_readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


def _database_error(exc: SADatabaseError, url: str) -> DatabaseError:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    return DatabaseError(f"cannot reach the database {_safe(url)}: {reason}", field="database")


def _missing_table(exc: SADatabaseError) -> bool:
    text = str(exc.orig).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _remove_new_files(root: Path, made_dir: bool, database_url: str | None) -> None:
    (root / CONFIG_NAME).unlink(missing_ok=True)
    if database_url is None:
        for suffix in ("", "-wal", "-shm"):
            (root / f"crmkit.db{suffix}").unlink(missing_ok=True)
    if made_dir:
        with contextlib.suppress(OSError):
            root.rmdir()
