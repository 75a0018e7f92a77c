"""``crmkit.testing``: pytest fixtures for crmkit and for plugin authors.

Installed as a pytest plugin (entry point ``pytest11``), so any project that
has crmkit installed can use these fixtures without importing anything:

``crm``
    A new deployment in ``tmp_path``, created with the built-in plugins plus
    those named by the ``crmkit_plugins`` fixture (override it in your
    ``conftest.py`` to return your plugin module). Entry points are not
    loaded, so tests do not depend on what happens to be installed.
``session``
    A session on ``crm`` acting as its admin; committed after the test.
``session_as``
    ``session_as("anna")``: a context manager for a session as another user.
``invoke``
    Runs the ``crmkit`` CLI against ``crm``: ``invoke("client", "list")``
    returns a :class:`CliResult` (``exit_code``, ``output`` (stdout),
    ``stderr``, ``json``); ``invoke(..., json=True)`` adds ``--format json``
    and parses stdout.
``register_plugin``
    ``register_plugin(obj)`` registers a plugin on ``crm`` for the rest of
    the test and unregisters it afterwards.
``crmkit_plugins``
    The plugins the ``crm`` fixture registers (default: none); override it.
``crm_factory``
    ``crm_factory(name="crm", plugins=None, admin="admin")`` makes more
    deployments in the same test.
``crmkit_database_url``
    A fresh, empty database for a test that makes a deployment itself
    (``crmkit init --database URL``): None for SQLite (the default: the
    deployment's own file), or a new database on a throwaway PostgreSQL
    server with ``--crmkit-database=postgresql`` or
    ``CRMKIT_TEST_DATABASE=postgresql``. ``crm`` and ``crm_factory`` use the
    same kind of database.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

DATABASES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``slow`` marker, so that a plugin's suite can use it as crmkit's does."""
    config.addinivalue_line(
        "markers", "slow: builds virtual environments or starts servers (-m 'not slow' skips)"
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crmkit")
    group.addoption(
        "--crmkit-database",
        choices=DATABASES,
        default=None,
        help="Database for crmkit's test deployments (default: $CRMKIT_TEST_DATABASE or sqlite).",
    )


def database_kind(config: pytest.Config) -> str:
    """``sqlite`` or ``postgresql``: where this run's test deployments live."""
    chosen = config.getoption("--crmkit-database") or os.environ.get("CRMKIT_TEST_DATABASE")
    chosen = (chosen or "sqlite").lower()
    if chosen in ("postgres", "pg"):
        chosen = "postgresql"
    if chosen not in DATABASES:
        raise pytest.UsageError(f"CRMKIT_TEST_DATABASE must be one of {', '.join(DATABASES)}")
    return chosen


def pytest_report_header(config: pytest.Config) -> str:
    return f"crmkit test database: {database_kind(config)}"


@pytest.fixture(scope="session")
def crmkit_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A throwaway PostgreSQL server for the whole test session."""
    from crmkit.testing_postgres import PostgresServer

    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def crmkit_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """A fresh, empty database of the session's kind (None: SQLite in the deployment)."""
    if database_kind(request.config) == "sqlite":
        return None
    server = request.getfixturevalue("crmkit_postgres")
    name = f"t_{uuid.uuid4().hex[:16]}"
    url: str = server.create_database(name)
    return url


@pytest.fixture
def crmkit_plugins() -> list[Any]:
    """Plugins to register on the ``crm`` fixture; override it in your conftest.py.

    Items are plugin objects (modules, instances) or ``(name, plugin)`` pairs;
    use the pair to register a plugin under its entry-point name, as an
    installed plugin is.
    """
    return []


@pytest.fixture(scope="session")
def _crmkit_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[Any, Any]:
    """Migrated, empty deployments made once per session, by plugin set and admin."""
    return {"dir": tmp_path_factory.mktemp("crmkit-templates")}


@pytest.fixture
def crm_factory(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    crmkit_plugins: list[Any],
    _crmkit_templates: dict[Any, Any],
) -> Iterator[Callable[..., Any]]:
    """``crm_factory(name="crm", plugins=None, admin="admin")`` makes a deployment.

    The database is the session's kind (SQLite in the deployment's folder, or
    a new database on the test PostgreSQL server). Creating a deployment
    migrates every branch, which is most of a short test's time, so the first
    deployment of each set of migrations and admin login is made with
    :meth:`crmkit.CRM.create` and kept as a template: the next ones are copies
    of its database (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE``
    on PostgreSQL), the same rows and schema as a fresh ``CRM.create`` gives.
    With ``database_url=``, the deployment is created from scratch there.
    """
    from crmkit.core.app import CRM
    from crmkit.core.plugins import load_plugins

    made: list[Any] = []

    def make(
        name: str = "crm",
        *,
        plugins: list[Any] | None = None,
        admin: str = "admin",
        database_url: str | None = None,
    ) -> CRM:
        loaded = load_plugins(entry_points=False)
        for plugin in crmkit_plugins if plugins is None else plugins:
            if isinstance(plugin, tuple):  # (name, plugin): registered under that name
                loaded.register(plugin[1], name=plugin[0])
            else:
                loaded.register(plugin)
        loaded.pm.check_pending()
        root = tmp_path / name
        if database_url is not None:
            crm = CRM.create(root, database_url=database_url, admin=admin, plugins=loaded)
        else:
            crm = _from_template(request, _crmkit_templates, root, loaded, admin)
        made.append(crm)
        return crm

    yield make
    for crm in made:
        crm.close()


def _from_template(
    request: pytest.FixtureRequest,
    templates: dict[Any, Any],
    root: Path,
    plugins: Any,
    admin: str,
) -> Any:
    """A new deployment in ``root``: a copy of the template for these migrations and admin."""
    import shutil
    import sqlite3

    from crmkit.core.app import CRM
    from crmkit.core.config import CONFIG_NAME, DEFAULT_DB_NAME, render_config

    kind = database_kind(request.config)
    branches = tuple(
        sorted((str(m.get("branch")), str(m.get("path"))) for m in plugins.migrations())
    )
    key = (kind, admin, branches)
    template = templates.get(key)
    server = request.getfixturevalue("crmkit_postgres") if kind == "postgresql" else None
    if template is None:
        folder = templates["dir"] / f"template{len(templates)}"
        url = None
        if server is not None:
            name = f"tpl_{uuid.uuid4().hex[:16]}"
            url = server.create_database(name)
        made = CRM.create(folder, database_url=url, admin=admin, plugins=plugins)
        made.close()  # PostgreSQL copies a template only while nobody is connected to it
        if server is not None:
            template = templates[key] = name
        else:  # a consistent copy of the database, WAL included
            template = templates[key] = folder / "template.db"
            with sqlite3.connect(folder / DEFAULT_DB_NAME) as src, sqlite3.connect(template) as dst:
                src.backup(dst)
    if (root / CONFIG_NAME).exists():  # as CRM.create refuses it
        from crmkit.core.errors import DeploymentError

        raise DeploymentError(f"{root} already holds a crmkit deployment", field="path")
    root.mkdir(parents=True, exist_ok=True)
    url = None
    if server is not None:
        url = server.create_database(f"t_{uuid.uuid4().hex[:16]}", template=template)
    else:
        shutil.copyfile(template, root / DEFAULT_DB_NAME)
    (root / CONFIG_NAME).write_text(render_config(database_url=url, admin=admin), "utf-8")
    return CRM.open(root, plugins=plugins)


@pytest.fixture
def crm(crm_factory: Callable[..., Any]) -> Any:
    """A new deployment in tmp_path with the admin user ``admin``."""
    return crm_factory()


@pytest.fixture
def session(crm: Any) -> Iterator[Any]:
    """A session on ``crm`` as its admin, committed at the end of the test."""
    with crm.session() as s:
        yield s


@pytest.fixture
def session_as(crm: Any) -> Callable[[str], contextlib.AbstractContextManager[Any]]:
    """``with session_as("anna") as s: ...``: a session as another user."""
    return lambda login: crm.session(as_user=login)


@pytest.fixture
def register_plugin(crm: Any) -> Iterator[Callable[..., Any]]:
    """Register a plugin on ``crm`` until the end of the test."""
    registered: list[Any] = []

    def register(plugin: Any, name: str | None = None) -> Any:
        crm.plugins.register(plugin, name=name)
        crm.plugins.pm.check_pending()
        registered.append(plugin)
        crm.refresh()
        return plugin

    yield register
    for plugin in registered:
        crm.plugins.unregister(plugin)
    crm.refresh()


class CliResult:
    """What a CLI run gave: exit code, output, and parsed JSON when asked for."""

    def __init__(self, result: Any, parse_json: bool) -> None:
        self.result = result
        self.exit_code: int = result.exit_code
        self.output: str = result.stdout
        self.stderr: str = result.stderr
        self.exception = result.exception
        self.json: Any = None
        if parse_json and result.exit_code == 0:
            self.json = jsonlib.loads(result.stdout)

    def __repr__(self) -> str:
        return f"<CliResult exit={self.exit_code} stdout={self.output!r} stderr={self.stderr!r}>"


@pytest.fixture
def invoke(crm: Any) -> Callable[..., CliResult]:
    """Run the crmkit CLI against ``crm`` (click's runner, in this process)."""
    from click.testing import CliRunner

    from crmkit.cli import build_cli

    def run(
        *args: str, as_user: str | None = None, json: bool = False, input: str | None = None
    ) -> CliResult:
        argv = ["-C", str(crm.config.root)]
        if as_user:
            argv += ["--as", as_user]
        argv += [str(a) for a in args]
        if json:
            argv += ["--format", "json"]
        runner = CliRunner()
        result = runner.invoke(build_cli(crm.plugins), argv, obj=crm.plugins, input=input)
        crm.refresh()  # the CLI may have changed what the deployment registers
        return CliResult(result, json)

    return run


def builtins_with(hook: str) -> list[Any]:
    """The built-in plugin modules (``DEFAULT_PLUGINS``) that implement ``hook``.

    For tests that take the built-ins away, e.g. every built-in report::

        for module in builtins_with("crmkit_reports"):
            crm.plugins.unregister(name=module.__name__)
        crm.refresh()
    """
    import importlib

    from crmkit.core.plugins import DEFAULT_PLUGINS

    modules = [importlib.import_module(name) for name in DEFAULT_PLUGINS]
    return [m for m in modules if hasattr(m, hook)]
