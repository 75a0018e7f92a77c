"""The ``crmkit`` command line.

Start-up stays light: this module imports click and the plugin manager only.
Database, Alembic, jsonschema and rich are imported inside the commands that
need them, and plugins add their commands through the ``crmkit_cli`` hook.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from crmkit import __version__
from crmkit.core.errors import CrmError
from crmkit.core.plugins import _truthy

if TYPE_CHECKING:  # pragma: no cover
    from crmkit.core.app import CRM
    from crmkit.core.plugins import Plugins

INTERNAL_ERROR_EXIT = 70


class CliError(click.ClickException):
    """A :class:`CrmError` on its way to the terminal: one line, a meaningful exit code."""

    def __init__(self, error: CrmError) -> None:
        super().__init__(str(error))
        self.error = error
        self.exit_code = error.exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class CrmkitGroup(click.Group):
    """The root group: turns crmkit errors into messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CrmError as exc:
            raise CliError(exc) from exc
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if _truthy(os.environ.get("CRMKIT_DEBUG")):
                raise
            click.echo(
                f"Error: internal error: {type(exc).__name__}: {exc} "
                "(set CRMKIT_DEBUG=1 to see the traceback)",
                err=True,
            )
            ctx.exit(INTERNAL_ERROR_EXIT)


class State:
    """What the root options select: the deployment folder, the acting user, plugins."""

    def __init__(self, directory: str | None, as_user: str | None, plugins: Plugins) -> None:
        self.directory = directory
        self.as_user = as_user
        self.plugins = plugins
        self._crm: CRM | None = None

    def crm(self) -> CRM:
        """The deployment, opened once per command."""
        if self._crm is None:
            from crmkit.core.app import CRM

            self._crm = CRM.open(self.directory, plugins=self.plugins)
        return self._crm

    def session(self, *, readonly: bool = False) -> Any:
        """A session as ``--as`` (default: the deployment's admin)."""
        return self.crm().session(as_user=self.as_user, readonly=readonly)


#: Decorator for commands (plugins' too) that need the deployment: passes the :class:`State`.
pass_state = click.make_pass_decorator(State)


# -- output -----------------------------------------------------------------------
def format_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--format table|json`` (passed as ``fmt``) to a command."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="Output format: a table for people, JSON for programs.",
    )(f)


def _plain(value: Any) -> Any:
    from crmkit.core.model import to_json

    return to_json(value)


def emit(
    data: Any, fmt: str, *, columns: Sequence[str] | None = None, title: str | None = None
) -> None:
    """Print ``data`` (a domain object, a dict, or a list of them) as a table or JSON."""
    plain = _plain(data)
    if fmt == "json":
        click.echo(json.dumps(plain, indent=2, ensure_ascii=False, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    if isinstance(plain, list):
        cols = list(columns or (plain[0].keys() if plain else []))
        table = Table(title=title, show_lines=False)
        for col in cols:
            table.add_column(col, overflow="fold")
        for item in plain:
            table.add_row(*(_cell(item.get(c)) for c in cols))
        console.print(table)
        if not plain:
            console.print("(none)")
        return
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in plain.items():
        if columns is None or key in columns:
            table.add_row(key, _cell(value))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False) if value else ""
    return str(value)


def created(obj: Any, fmt: str, what: str, label: str) -> None:
    """Report a created object: its id and its fields."""
    if fmt == "table":
        click.echo(f"Created {what} #{obj.id} {label}")
    emit(obj, fmt)


def parse_pairs(pairs: Iterable[str], *, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CrmError(f"expected KEY=VALUE, got {pair!r}", field=option)
        out[key.strip()] = value
    return out


# -- the root group ------------------------------------------------------------------
@click.group(cls=CrmkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "--dir",
    "directory",
    metavar="DIR",
    envvar="CRMKIT_DIR",
    help="The deployment folder (default: $CRMKIT_DIR or the current folder).",
)
@click.option(
    "--as",
    "as_user",
    metavar="LOGIN",
    envvar="CRMKIT_AS",
    help="Act as this user (default: the deployment's admin).",
)
@click.version_option(__version__, prog_name="crmkit")
@click.pass_context
def cli(ctx: click.Context, directory: str | None, as_user: str | None) -> None:
    """crmkit: a plugin-extensible CRM.

    Start with 'crmkit init DIR', then run commands inside DIR or with -C DIR.
    """
    plugins = ctx.obj
    if plugins is None:  # invoked without main(), e.g. from another click app
        from crmkit.core.plugins import load_plugins

        plugins = load_plugins()
    ctx.obj = State(directory, as_user, plugins)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--database", "database_url", metavar="URL", help="SQLAlchemy URL (default: SQLite in DIR)."
)
@click.option("--admin", default="admin", show_default=True, help="Login of the first admin user.")
@click.option("--admin-name", default="Administrator", show_default=True, help="Their full name.")
@format_option
@pass_state
def init(
    state: State, directory: Path, database_url: str | None, admin: str, admin_name: str, fmt: str
) -> None:
    """Create a deployment in DIRECTORY: crmkit.toml, the database, the admin user."""
    from crmkit.core.app import CRM

    crm = CRM.create(
        directory,
        database_url=database_url,
        admin=admin,
        admin_name=admin_name,
        plugins=state.plugins,
    )
    info = {
        "directory": str(crm.config.root),
        "database": _safe_url(crm.config.database_url),
        "admin": admin,
        "schema": crm.schema_status(),
    }
    crm.close()
    if fmt == "json":
        emit(info, fmt)
        return
    click.echo(f"Created a crmkit deployment in {info['directory']}")
    click.echo(f"  database: {info['database']}")
    click.echo(f"  admin user: {admin}")
    click.echo(f"Next: cd {directory} && crmkit client add 'Acme Ltd' --email buy@acme.example")


def _safe_url(url: str) -> str:
    from crmkit.core.app import _safe

    return _safe(url)


@cli.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--hook", metavar="NAME", help="Only plugins that implement this hook.")
@format_option
@pass_state
def plugins_command(state: State, show_all: bool, hook: str | None, fmt: str) -> None:
    """List installed plugins: name, version and the hooks they implement."""
    infos = state.plugins.infos(include_builtin=show_all)
    if hook:
        infos = [i for i in infos if hook in i["hooks"]]
    if fmt == "table":
        infos = [{**i, "hooks": ", ".join(i["hooks"])} for i in infos]
    emit(infos, fmt, columns=["name", "version", "builtin", "hooks"])


# -- db ---------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Database schema: migrations of the core and of plugins."""


@db.command("upgrade")
@click.option("--branch", metavar="NAME", help="Only this branch (the core's is 'crmkit').")
@format_option
@pass_state
def db_upgrade(state: State, branch: str | None, fmt: str) -> None:
    """Bring the database schema to the newest revision of every branch."""
    crm = state.crm()
    crm.upgrade(branch=branch)
    emit(crm.schema_status(), fmt, columns=["branch", "current", "head", "up_to_date"])


@db.command("current")
@format_option
@pass_state
def db_current(state: State, fmt: str) -> None:
    """Show each branch's current and head revision."""
    status = state.crm().schema_status()
    emit(status, fmt, columns=["branch", "current", "head", "up_to_date"])
    if not all(s["up_to_date"] for s in status) and fmt == "table":
        click.echo("The schema is behind: run 'crmkit db upgrade'.", err=True)


# -- users and teams -------------------------------------------------------------------
USER_COLUMNS = ["id", "login", "name", "role", "team", "active"]


def _user_rows(s: Any, users: Sequence[Any]) -> list[dict[str, Any]]:
    teams = {t.id: t.name for t in s.teams.list()}
    return [{**_plain(u), "team": teams.get(u.team_id)} for u in users]


@cli.group()
def user() -> None:
    """Users: the employees who work in the CRM."""


@user.command("add")
@click.argument("login")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["admin", "head", "manager", "marketer"]),
    help="What the user does.",
)
@click.option("--team", metavar="TEAM", help="Team name.")
@click.option("--name", metavar="NAME", help="Full name (default: the login).")
@format_option
@pass_state
def user_add(
    state: State, login: str, role: str, team: str | None, name: str | None, fmt: str
) -> None:
    """Add a user with LOGIN."""
    with state.session() as s:
        new = s.users.add(login, role=role, team=team, name=name)
        row = _user_rows(s, [new])[0]
    if fmt == "table":
        click.echo(f"Created user #{new.id} {new.login}")
    emit(row, fmt)


@user.command("list")
@click.option("--team", metavar="TEAM", help="Only this team and the teams inside it.")
@click.option(
    "--role",
    type=click.Choice(["admin", "head", "manager", "marketer"]),
    help="Only users with this role.",
)
@format_option
@pass_state
def user_list(state: State, team: str | None, role: str | None, fmt: str) -> None:
    """List users."""
    with state.session(readonly=True) as s:
        rows = _user_rows(s, s.users.list(team=team, role=role))
    emit(rows, fmt, columns=USER_COLUMNS)


@cli.group()
def team() -> None:
    """Teams: departments and the groups inside them."""


@team.command("add")
@click.argument("name")
@click.option("--parent", metavar="TEAM", help="The team this one belongs to.")
@format_option
@pass_state
def team_add(state: State, name: str, parent: str | None, fmt: str) -> None:
    """Add a team called NAME."""
    with state.session() as s:
        new = s.teams.add(name, parent=parent)
    created(new, fmt, "team", new.name)


@team.command("list")
@format_option
@pass_state
def team_list(state: State, fmt: str) -> None:
    """List teams."""
    with state.session(readonly=True) as s:
        teams = s.teams.list()
    names = {t.id: t.name for t in teams}
    rows = [{**_plain(t), "parent": names.get(t.parent_id)} for t in teams]
    emit(rows, fmt, columns=["id", "name", "parent"])


# -- clients and contacts ---------------------------------------------------------------
CLIENT_COLUMNS = ["id", "name", "kind", "email", "phone", "segment", "owner", "source"]


def client_options(*, adding: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options shared by ``client add`` and ``client update``."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        opts = [
            click.option("--name", help="The client's name.") if not adding else None,
            click.option("--email", help="Email address (unique, case-insensitive)."),
            click.option("--phone", help="Phone number."),
            click.option(
                "--kind",
                type=click.Choice(["company", "person"]),
                default="company" if adding else None,
                show_default=adding,
                help="A company or a private person.",
            ),
            click.option("--segment", help="Segment name (see 'crmkit segment list')."),
            click.option(
                "--param",
                "params",
                multiple=True,
                metavar="KEY=VALUE",
                help="A segment parameter; repeat for several. VALUE is JSON or text; "
                "on update an empty VALUE removes the parameter.",
            ),
            click.option(
                "--requisite",
                "requisites",
                multiple=True,
                metavar="KEY=VALUE",
                help="A requisite such as tax_id=7701234567; repeat for several.",
            ),
            click.option("--owner", metavar="LOGIN", help="The responsible user (default: you)."),
            click.option(
                "--source", metavar="CHANNEL", help="Marketing channel (see 'crmkit channel list')."
            ),
            click.option("--external-id", help="The client's id in another system (unique)."),
        ]
        for opt in reversed([o for o in opts if o is not None]):
            f = opt(f)
        return f

    return decorate


def _params(crm: CRM, segment: str | None, pairs: Sequence[str]) -> dict[str, Any]:
    from crmkit.core.validation import parse_value

    raw = parse_pairs(pairs, option="param")
    props: dict[str, Any] = {}
    if segment and segment in crm.segments:
        props = crm.segments[segment].schema.get("properties", {})
    return {k: (None if v == "" else parse_value(v, props.get(k))) for k, v in raw.items()}


def _client_view(s: Any, client: Any) -> dict[str, Any]:
    view = _plain(client)
    view["contacts"] = [_plain(c) for c in s.contacts.list(client.id)]
    if client.segment:
        seg = s.crm.segments.get(client.segment)
        if seg is not None:
            view["missing_primary_fields"] = seg.missing(client.params)
    return view


@cli.group()
def client() -> None:
    """Clients: one card per client."""


@client.command("add")
@click.argument("name")
@client_options(adding=True)
@format_option
@pass_state
def client_add(state: State, name: str, fmt: str, **opts: Any) -> None:
    """Add a client called NAME."""
    crm = state.crm()
    params = _params(crm, opts["segment"], opts.pop("params"))
    requisites = parse_pairs(opts.pop("requisites"), option="requisite")
    with state.session() as s:
        new = s.clients.create(
            name,
            params={k: v for k, v in params.items() if v is not None},
            requisites=requisites,
            **opts,
        )
        view = _client_view(s, new)
    if fmt == "table":
        click.echo(f"Created client #{new.id} {new.name}")
    emit(view, fmt)


@client.command("update")
@click.argument("client_id", type=int)
@client_options(adding=False)
@format_option
@pass_state
def client_update(state: State, client_id: int, fmt: str, **opts: Any) -> None:
    """Change fields of client CLIENT_ID; parameters are merged into the current ones."""
    crm = state.crm()
    pairs, req_pairs = opts.pop("params"), opts.pop("requisites")
    changes = {k: v for k, v in opts.items() if v is not None}
    with state.session() as s:
        current = s.clients.get(client_id)
        if pairs:
            params = dict(current.params)
            for key, value in _params(crm, changes.get("segment", current.segment), pairs).items():
                if value is None:
                    params.pop(key, None)
                else:
                    params[key] = value
            changes["params"] = params
        if req_pairs:
            requisites = dict(current.requisites)
            for key, value in parse_pairs(req_pairs, option="requisite").items():
                if value == "":
                    requisites.pop(key, None)
                else:
                    requisites[key] = value
            changes["requisites"] = requisites
        if not changes:
            raise CrmError("nothing to change: give at least one option", field="options")
        updated = s.clients.update(client_id, **changes)
        view = _client_view(s, updated)
    if fmt == "table":
        click.echo(f"Updated client #{updated.id} {updated.name}")
    emit(view, fmt)


@client.command("list")
@click.option("--owner", metavar="LOGIN", help="Only this user's clients.")
@click.option("--segment", help="Only this segment.")
@click.option("--source", metavar="CHANNEL", help="Only clients from this channel.")
@click.option("--search", metavar="TEXT", help="Only names containing TEXT.")
@click.option(
    "--limit",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="At most this many clients.",
)
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many clients first.")
@format_option
@pass_state
def client_list(state: State, fmt: str, **filters: Any) -> None:
    """List clients, newest first."""
    with state.session(readonly=True) as s:
        clients = s.clients.list(**filters)
    emit(clients, fmt, columns=CLIENT_COLUMNS)


@client.command("show")
@click.argument("client_id", type=int)
@format_option
@pass_state
def client_show(state: State, client_id: int, fmt: str) -> None:
    """Show the card of client CLIENT_ID, with its contacts."""
    with state.session(readonly=True) as s:
        view = _client_view(s, s.clients.get(client_id))
    if fmt == "json":
        emit(view, fmt)
        return
    contacts = view.pop("contacts")
    emit(view, fmt, title=f"Client #{client_id}")
    if contacts:
        emit(contacts, fmt, columns=["id", "name", "position", "email", "phone"], title="Contacts")


@cli.group()
def contact() -> None:
    """Contact persons of clients."""


@contact.command("add")
@click.argument("client_id", type=int)
@click.argument("name")
@click.option("--position", help="Their position, e.g. 'Purchasing manager'.")
@click.option("--email", help="Email address.")
@click.option("--phone", help="Phone number.")
@format_option
@pass_state
def contact_add(state: State, client_id: int, name: str, fmt: str, **opts: Any) -> None:
    """Add a contact person NAME to client CLIENT_ID."""
    with state.session() as s:
        new = s.contacts.add(client_id, name, **opts)
    created(new, fmt, "contact", new.name)


@contact.command("list")
@click.argument("client_id", type=int)
@format_option
@pass_state
def contact_list(state: State, client_id: int, fmt: str) -> None:
    """List the contact persons of client CLIENT_ID."""
    with state.session(readonly=True) as s:
        contacts = s.contacts.list(client_id)
    emit(contacts, fmt, columns=["id", "name", "position", "email", "phone"])


# -- registries: segments and channels -------------------------------------------------------
@cli.group()
def segment() -> None:
    """Client segments registered by plugins."""


@segment.command("list")
@format_option
@pass_state
def segment_list(state: State, fmt: str) -> None:
    """List segments and their primary fields."""
    rows = [
        {
            "name": seg.name,
            "title": seg.title,
            "plugin": seg.plugin,
            "primary_fields": seg.primary_fields,
            "parameters": sorted(seg.schema.get("properties", {})),
        }
        for seg in state.crm().segments.values()
    ]
    emit(rows, fmt, columns=["name", "title", "primary_fields", "parameters"])


@segment.command("show")
@click.argument("name")
@format_option
@pass_state
def segment_show(state: State, name: str, fmt: str) -> None:
    """Show the parameters of segment NAME: type, unit, range, description."""
    seg = state.crm().segment(name)
    if fmt == "json":
        emit({"name": seg.name, "title": seg.title, "schema": seg.schema}, fmt)
        return
    click.echo(f"{seg.title} ({seg.name})")
    if seg.description:
        click.echo(seg.description)
    required = set(seg.primary_fields)
    rows = []
    for key, prop in seg.schema.get("properties", {}).items():
        bounds = [
            f"{op} {prop[k]}" for k, op in (("minimum", ">="), ("maximum", "<=")) if k in prop
        ]
        rows.append(
            {
                "parameter": key,
                "title": prop.get("title", ""),
                "type": prop.get("type", ""),
                "unit": prop.get("unit", prop.get("x-unit", "")),
                "range": ", ".join(bounds),
                "primary": "yes" if key in required else "",
            }
        )
    emit(rows, fmt)


@cli.group()
def channel() -> None:
    """Marketing channels: where clients come from."""


@channel.command("list")
@format_option
@pass_state
def channel_list(state: State, fmt: str) -> None:
    """List the known marketing channels."""
    emit(list(state.crm().channels.values()), fmt, columns=["name", "title"])


# -- plugin scaffolding ------------------------------------------------------------------------
@cli.group("plugin")
def plugin_group() -> None:
    """Tools for plugin authors."""


@plugin_group.command("new")
@click.argument("name")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--description", default="", help="One line about what the plugin does.")
@format_option
def plugin_new(name: str, directory: Path | None, description: str, fmt: str) -> None:
    """Write a new plugin distribution called NAME (into DIRECTORY, default ./crmkit-NAME)."""
    from crmkit.scaffold import create_plugin

    result = create_plugin(name, directory, description=description)
    if fmt == "json":
        emit(result, fmt)
        return
    click.echo(f"Created plugin {result['distribution']} in {result['directory']}")
    for path in result["files"]:
        click.echo(f"  {path}")
    click.echo(f"Next: pip install -e {result['directory']} && pytest {result['directory']}")


# -- entry point ---------------------------------------------------------------------------------
def _early_plugin_settings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Plugin modules and disabled plugins from crmkit.toml, read before click parses argv."""
    import tomllib

    directory = os.environ.get("CRMKIT_DIR")
    for i, arg in enumerate(argv):
        if arg in ("-C", "--dir") and i + 1 < len(argv):
            directory = argv[i + 1]
        elif arg.startswith("--dir="):
            directory = arg.split("=", 1)[1]
        elif not arg.startswith("-"):
            break
    path = Path(directory or ".") / "crmkit.toml"
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return [], []
    section = data.get("plugins", {}) if isinstance(data, dict) else {}
    modules = section.get("modules", []) if isinstance(section, dict) else []
    disable = section.get("disable", []) if isinstance(section, dict) else []
    return [m for m in modules if isinstance(m, str)], [d for d in disable if isinstance(d, str)]


def _show_warning(
    message: Any, category: Any, filename: Any, lineno: Any, file: Any = None, line: Any = None
) -> None:
    click.echo(f"Warning: {message}", err=True)


def build_cli(plugins: Plugins) -> click.Group:
    """A copy of the root group with every plugin's commands added (``crmkit_cli``).

    Each call makes a new root group, so that commands added by one set of
    plugins never leak into a CLI built for another (tests build many).
    """
    group = copy.copy(cli)
    group.commands = dict(cli.commands)
    plugins.cli(cli=group)
    return group


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    from crmkit.core.plugins import load_plugins

    try:
        modules, disable = _early_plugin_settings(args)
        plugins = load_plugins(modules=modules, disable=disable)
    except CrmError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    build_cli(plugins).main(args=args, prog_name="crmkit", obj=plugins)


if __name__ == "__main__":  # pragma: no cover
    main()
