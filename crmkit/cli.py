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
from crmkit.core.errors import CrmError, ValidationError
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
        except BrokenPipeError:  # `crmkit client list --format json | head`: the reader left
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)
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

    def __init__(
        self,
        directory: str | None,
        as_user: str | None,
        plugins: Plugins,
        token: str | None = None,
    ) -> None:
        self.directory = directory
        self.as_user = as_user
        self.plugins = plugins
        self.token = token
        self._crm: CRM | None = None

    def crm(self) -> CRM:
        """The deployment, opened once per command."""
        if self._crm is None:
            from crmkit.core.app import CRM

            self._crm = CRM.open(self.directory, plugins=self.plugins)
        return self._crm

    def session(self, *, readonly: bool = False) -> Any:
        """A session as ``--as`` or ``--token``'s user (default: the deployment's admin).

        A token is checked again for every session, so one revoked (or whose
        user is deactivated) meanwhile is refused.
        """
        return self.crm().session(as_user=self.as_user, token=self.token, readonly=readonly)


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


def limit_option(what: str, default: int = 50) -> Callable[[Callable[..., Any]], Any]:
    """Add ``--limit N`` (at most N of ``what``) to a listing command."""
    return click.option(
        "--limit",
        type=click.IntRange(1, 100_000),
        default=default,
        show_default=True,
        help=f"At most this many {what}.",
    )


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
    from rich.text import Text  # cells as Text: data such as "[vip] Acme" is not rich markup

    console = Console(soft_wrap=False)
    if isinstance(plain, list):
        cols = list(columns or (plain[0].keys() if plain else []))
        table = Table(title=title, show_lines=False)
        for col in cols:
            table.add_column(col, overflow="fold")
        for item in plain:
            table.add_row(*(Text(_cell(item.get(c))) for c in cols))
        console.print(table)
        if not plain:
            console.print("(none)")
        return
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in plain.items():
        if columns is None or key in columns:
            table.add_row(key, Text(_cell(value)))
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


# -- lifecycle output: times, changes, views ----------------------------------------------
WHEN_HELP = (
    "ISO 8601 (2026-11-22T15:30, 2026-11-22, with or without an offset; "
    "naive times are in the deployment's time zone), or now, today, -2h, -3d (default: now)."
)


def _is_time_key(key: str) -> bool:
    return key in ("at", "since") or key.endswith("_at")


def _short_time(value: Any, tz: Any) -> Any:
    """An ISO datetime as ``YYYY-MM-DD HH:MM`` in the deployment's time zone (tables only)."""
    import datetime as dt

    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(tz)
        return value.strftime("%Y-%m-%d %H:%M")
    return value


def _local(row: dict[str, Any], tz: Any) -> dict[str, Any]:
    """``row`` with its datetimes (keys ``at``, ``since``, ``*_at``) shortened for a table."""
    return {k: _short_time(v, tz) if v and _is_time_key(k) else v for k, v in row.items()}


def show(
    data: Any,
    fmt: str,
    tz: Any,
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """Like :func:`emit`, with datetimes shortened to local time in tables (JSON keeps ISO)."""
    plain = _plain(data)
    if fmt == "table":
        plain = [_local(r, tz) for r in plain] if isinstance(plain, list) else _local(plain, tz)
    emit(plain, fmt, columns=columns, title=title)


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _change_line(change: Any) -> str:
    """``deal #3: qualification -> presentation`` (a stored stage change, for people)."""
    line = f"{change.entity} #{change.entity_id}: {change.from_stage or '(new)'} -> "
    line += change.to_stage
    return line + (f" ({change.note})" if change.note else "")


def _utcnow() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


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
@click.option(
    "--token",
    metavar="TOKEN",
    envvar="CRMKIT_TOKEN",
    help="Act as the user of this API token ('crmkit user token create'); not with --as.",
)
@click.version_option(__version__, prog_name="crmkit")
@click.pass_context
def cli(ctx: click.Context, directory: str | None, as_user: str | None, token: str | None) -> None:
    """crmkit: a plugin-extensible CRM.

    Start with 'crmkit init DIR', then run commands inside DIR or with -C DIR.
    """
    plugins = ctx.obj
    if plugins is None:  # invoked without main(), e.g. from another click app
        from crmkit.core.plugins import load_plugins

        plugins = load_plugins()
    if as_user and token:
        raise ValidationError(
            "give --as (CRMKIT_AS) or --token (CRMKIT_TOKEN), not both: "
            "a token acts as its own user",
            field="token",
        )
    ctx.obj = State(directory, as_user, plugins, token=token or None)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--database", "database_url", metavar="URL", help="SQLAlchemy URL (default: SQLite in DIR)."
)
@click.option("--admin", default="admin", show_default=True, help="Login of the first admin user.")
@click.option("--admin-name", default="Administrator", show_default=True, help="Their full name.")
@click.option(
    "--sample",
    is_flag=True,
    help="Fill the new deployment with a realistic, seeded sample data set "
    "(teams, clients, a year of interactions, deals, tasks).",
)
@click.option(
    "--seed",
    type=int,
    metavar="N",
    help="Random seed of the sample data (with --sample; the same seed gives the same data).",
)
@click.option(
    "--sample-clients",
    type=click.IntRange(1, 100_000),
    metavar="N",
    help="How many sample clients to make (with --sample; default: the sample's own).",
)
@click.option(
    "--rules",
    "rule_set",
    metavar="SET",
    help="Add a ready set of automation rules to crmkit.toml: 'examples' (the source's "
    "examples; those that send email only with the email tracking plugin).",
)
@format_option
@pass_state
def init(
    state: State,
    directory: Path,
    database_url: str | None,
    admin: str,
    admin_name: str,
    sample: bool,
    seed: int | None,
    sample_clients: int | None,
    rule_set: str | None,
    fmt: str,
) -> None:
    """Create a deployment in DIRECTORY: crmkit.toml, the database, the admin user.

    With --sample, also fill it with sample data to explore; with --rules
    examples, add the example automation rules to its crmkit.toml.
    """
    from crmkit.core.app import CRM

    rules_text, rules, left_out = "", [], []
    if rule_set is not None:
        rules_text, rules, left_out = _rule_set(rule_set, state.plugins)
    populate = None
    if not sample and (seed is not None or sample_clients is not None):
        raise CrmError("--seed and --sample-clients apply only with --sample", field="sample")
    if sample:  # before anything is written: a missing module must not leave a half deployment
        try:
            from crmkit.sample import populate
        except ImportError as exc:
            raise CrmError(f"sample data is not available: {exc}", field="sample") from None
    crm = CRM.create(
        directory,
        database_url=database_url,
        admin=admin,
        admin_name=admin_name,
        plugins=state.plugins,
        extra_config=rules_text,
    )
    try:
        info: dict[str, Any] = {
            "directory": str(crm.config.root),
            "database": _safe_url(crm.config.database_url),
            "admin": admin,
            "schema": crm.schema_status(),
        }
        if rule_set is not None:
            info["rules"] = rules
            info["rules_left_out"] = left_out
        if populate is not None:
            kwargs: dict[str, Any] = {}
            if seed is not None:
                kwargs["seed"] = seed
            if sample_clients is not None:
                kwargs["clients"] = sample_clients
            info["sample"] = populate(crm, **kwargs)
    finally:
        crm.close()
    if fmt == "json":
        emit(info, fmt)
        return
    click.echo(f"Created a crmkit deployment in {info['directory']}")
    click.echo(f"  database: {info['database']}")
    click.echo(f"  admin user: {admin}")
    if rule_set is not None:
        click.echo(f"  automation rules ({rule_set}): {', '.join(rules)}")
        if left_out:
            click.echo(
                f"  not added: {', '.join(left_out)} (they send email: install the email "
                "tracking plugin, crmkit-email-tracking, and add them from the docs)"
            )
    if "sample" in info:
        counts = ", ".join(
            f"{what.replace('_', ' ')} {count}" for what, count in info["sample"].items()
        )
        click.echo(f"  sample data: {counts}")
        click.echo(f"Next: cd {directory} && crmkit deal list --stalled && crmkit overdue")
        return
    click.echo(f"Next: cd {directory} && crmkit client add 'Acme Ltd' --email buy@acme.example")


#: The rule sets ``crmkit init --rules`` knows: the files (in the crmkit package) of each,
#: with the action a file needs (None: none beyond the core's).
RULE_SETS: dict[str, list[tuple[str, str | None]]] = {
    "examples": [
        ("automation_examples.toml", None),
        ("automation_examples_email.toml", "send_email"),
    ],
}


def _rule_set(name: str, plugins: Any) -> tuple[str, list[str], list[str]]:
    """The TOML of rule set ``name`` for these plugins, its rules, and the rules left out.

    A file whose rules need an action no installed plugin registers (the
    email examples' ``send_email``) is left out: its rules would be refused
    when the deployment opens.
    """
    import tomllib
    from importlib.resources import files

    if name not in RULE_SETS:
        known = ", ".join(sorted(RULE_SETS))
        raise CrmError(f"unknown rule set {name!r} (known: {known})", field="rules")
    actions = {action.name for action in plugins.automation_actions()}
    parts, rules, left_out = [], [], []
    for filename, needs in RULE_SETS[name]:
        text = files("crmkit").joinpath(filename).read_text("utf-8")
        names = list(tomllib.loads(text)["automation"]["rules"])
        if needs is not None and needs not in actions:
            left_out += names
            continue
        parts.append(text)
        rules += names
    header = (
        f"\n# -- automation rules: crmkit's {name!r} set (crmkit init --rules {name}) "
        "-----------\n# What each does: the 'Automation examples' page "
        "(docs/automation_examples.rst).\n# Edit them, or switch one off with enabled = false.\n\n"
    )
    return header + "\n".join(parts), rules, left_out


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
    if fmt == "table" and any(s["up_to_date"] is False for s in status):
        click.echo("The schema is behind: run 'crmkit db upgrade'.", err=True)
    if fmt == "table" and any(s["up_to_date"] is None for s in status):
        click.echo(
            "Revisions marked (not installed) belong to plugins that are not loaded; "
            "their tables are kept and come back into use when the plugin is.",
            err=True,
        )


# -- the HTTP server ---------------------------------------------------------------------
@cli.command("serve")
@click.option(
    "--host", metavar="ADDRESS", help="Listen on this address ([server] host; 127.0.0.1)."
)
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Listen on this port ([server] port; 8000)."
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="uvicorn's log level; the access log is one JSON line per request at info.",
)
@pass_state
def serve_command(state: State, host: str | None, port: int | None, log_level: str) -> None:
    """Run the HTTP server: the core's routes (/health, /api/me) and every plugin's.

    The server shares the deployment's database with the command line. It
    needs the server extra: pip install 'crmkit[server]'.
    """
    try:
        from crmkit import server
    except ImportError as exc:
        from crmkit.core.errors import DeploymentError

        raise DeploymentError(
            f"the HTTP server needs the server extra ({exc.name} is not installed): "
            "pip install 'crmkit[server]'",
            field="serve",
        ) from None
    crm = state.crm()
    settings = crm.config.server
    server.serve(
        crm,
        host=host or settings.get("host", "127.0.0.1"),
        port=settings.get("port", 8000) if port is None else port,
        log_level=log_level,
    )


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
CLIENT_COLUMNS = ["id", "name", "kind", "email", "phone", "segment", "stage", "owner", "source"]


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


def parse_values(
    pairs: Iterable[str], properties: dict[str, Any], *, option: str
) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as JSON values typed by a schema's ``properties``.

    VALUE is JSON or text (text where the property is a string); an empty
    VALUE gives None, which the commands read as "remove this key".
    """
    from crmkit.core.validation import parse_value

    raw = parse_pairs(pairs, option=option)
    return {k: (None if v == "" else parse_value(v, properties.get(k))) for k, v in raw.items()}


def _params(crm: CRM, segment: str | None, pairs: Sequence[str]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if segment and segment in crm.segments:
        props = crm.segments[segment].properties
    return parse_values(pairs, props, option="param")


def _merged_params(
    crm: CRM, current: dict[str, Any], segment: str | None, pairs: Sequence[str]
) -> dict[str, Any]:
    """``current`` with ``KEY=VALUE`` pairs set (an empty VALUE removes the key)."""
    params = dict(current)
    for key, value in _params(crm, segment, pairs).items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params


#: what a table or JSON shows for a field an access policy hides from the user
HIDDEN = "(hidden)"


def _client_view(s: Any, client: Any) -> dict[str, Any]:
    view = _plain(client)
    may_see_contacts = s.access.may("read", "contact")
    view["contacts"] = [_plain(c) for c in s.contacts.list(client.id)] if may_see_contacts else []
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
            segment = changes.get("segment", current.segment)
            changes["params"] = _merged_params(crm, current.params, segment, pairs)
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
@click.option("--stage", help="Only clients at this lifecycle stage (lead, customer ...).")
@limit_option("clients")
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many clients first.")
@format_option
@pass_state
def client_list(state: State, fmt: str, **filters: Any) -> None:
    """List clients, newest first."""
    with state.session(readonly=True) as s:
        clients = s.clients.list(**filters)
    if fmt == "table":
        rows = [_plain(c) for c in clients]
        for row in rows:
            row.update(dict.fromkeys(row.pop("hidden", None) or [], HIDDEN))
        emit(rows, fmt, columns=CLIENT_COLUMNS)
        return
    emit(clients, fmt, columns=CLIENT_COLUMNS)


@client.command("show")
@click.argument("client_id", type=int)
@format_option
@pass_state
def client_show(state: State, client_id: int, fmt: str) -> None:
    """Show the card of client CLIENT_ID, with its contacts."""
    with state.session(readonly=True) as s:
        card = s.clients.get(client_id)
        view = _client_view(s, card)
        view["plugins"] = s.crm.plugins.client_details(session=s, client=card)
    if fmt == "json":
        emit(view, fmt)
        return
    contacts, details = view.pop("contacts"), view.pop("plugins")
    for name in view.pop("hidden", None) or []:  # a policy keeps it from this user: say so
        view[name] = HIDDEN
    emit(view, fmt, title=f"Client #{client_id}")
    if contacts:
        emit(contacts, fmt, columns=["id", "name", "position", "email", "phone"], title="Contacts")
    for plugin, facts in details.items():
        emit(facts, fmt, title=plugin)


@client.command("set-params")
@click.argument("client_id", type=int)
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--segment", help="Also set the segment (default: keep it, or classify the card).")
@click.option("--replace", is_flag=True, help="Replace all parameters instead of merging.")
@format_option
@pass_state
def client_set_params(
    state: State,
    client_id: int,
    pairs: tuple[str, ...],
    segment: str | None,
    replace: bool,
    fmt: str,
) -> None:
    """Set segment parameters of client CLIENT_ID: KEY=VALUE, VALUE as JSON or text.

    Parameters are merged into the card's (an empty VALUE removes one); the
    segment's schema checks them, and the client's potential is recomputed.
    A card without a segment gets the segment its parameters fit.
    """
    crm = state.crm()
    with state.session() as s:
        current = s.clients.get(client_id)
        target = segment or current.segment
        params = _merged_params(crm, {} if replace else current.params, target, pairs)
        changes: dict[str, Any] = {"params": params}
        if segment:
            changes["segment"] = segment
        updated = s.clients.update(client_id, **changes)
        view = _client_view(s, updated)
    if fmt == "table":
        click.echo(f"Updated client #{updated.id} {updated.name}")
    emit(view, fmt)


@client.command("stage")
@click.argument("client_id", type=int)
@click.argument("stage")
@click.option(
    "--reason",
    metavar="REASON",
    help="Why the client is lost (needed for the stage 'lost'; see 'crmkit pipeline show').",
)
@click.option("--at", metavar="WHEN", help="When it happened; " + WHEN_HELP)
@format_option
@pass_state
def client_stage(
    state: State, client_id: int, stage: str, reason: str | None, at: str | None, fmt: str
) -> None:
    """Move client CLIENT_ID forward in its lifecycle to STAGE (lead, qualified, customer ...)."""
    with state.session() as s:
        change = s.clients.move(client_id, stage, at=at, reason=reason)
    if fmt == "json":
        emit(change, fmt)
        return
    click.echo(_change_line(change))


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
    """Show segment NAME: each parameter's type, unit and allowed range, and the settings."""
    from crmkit.core.validation import describe_schema

    seg = state.crm().segment(name)
    if fmt == "json":
        emit(
            {
                "name": seg.name,
                "title": seg.title,
                "description": seg.description,
                "plugin": seg.plugin,
                "primary_fields": seg.primary_fields,
                "schema": seg.schema,
                "settings": seg.settings,
            },
            fmt,
        )
        return
    click.echo(f"{seg.title} ({seg.name})")
    if seg.description:
        click.echo(seg.description)
    required = set(seg.primary_fields)
    rows = [
        {
            "parameter": key,
            "title": prop.get("title", ""),
            "allowed": describe_schema(prop),
            "primary": "yes" if key in required else "",
        }
        for key, prop in seg.properties.items()
    ]
    emit(rows, fmt)
    if seg.settings:
        emit(seg.settings, fmt, title=f"Settings (crmkit.toml: segments.{seg.name})")


@segment.command("rescore")
@click.option("--segment", "only", metavar="NAME", help="Only the clients of this segment.")
@format_option
@pass_state
def segment_rescore(state: State, only: str | None, fmt: str) -> None:
    """Classify and score every client card again, with the settings in force now.

    Run it after changing a segment's settings in crmkit.toml (potential
    weights, thresholds): stored potentials are otherwise refreshed when a
    card is next saved.
    """
    with state.session() as s:
        counts = s.clients.rescore(segment=only)
    if fmt == "json":
        emit(counts, fmt)
        return
    click.echo(
        f"Checked {counts['checked']} cards: {counts['rescored']} rescored, "
        f"{counts['classified']} given a segment."
    )


@cli.group()
def channel() -> None:
    """Marketing channels: where clients come from."""


@channel.command("list")
@format_option
@pass_state
def channel_list(state: State, fmt: str) -> None:
    """List the known marketing channels."""
    emit(list(state.crm().channels.values()), fmt, columns=["name", "title"])


@channel.command("cost")
@click.argument("name", metavar="CHANNEL")
@click.option("--period", required=True, help="2026-11, 2026-Q3, 2026 or 2026-01-01..2026-03-31.")
@click.option("--amount", required=True, help="What the channel cost over the period.")
@click.option("--currency", help="Three letters (default: the deployment's currency).")
@click.option("--note", help="What the money went to.")
@format_option
@pass_state
def channel_cost(
    state: State,
    name: str,
    period: str,
    amount: str,
    currency: str | None,
    note: str | None,
    fmt: str,
) -> None:
    """Record what CHANNEL cost over a period (the same period again replaces it).

    The channels report charges each period the part of a cost that falls in
    it, spread evenly over the cost's days. Admins, heads and marketers may.
    """
    with state.session() as s:
        cost = s.channel_costs.record(
            name, period=period, amount=amount, currency=currency, note=note
        )
    if fmt == "table":
        click.echo(f"{cost.channel}: {cost.amount} {cost.currency} for {cost.period}")
        return
    emit(cost, fmt)


@channel.command("costs")
@click.option("--channel", "only", metavar="CHANNEL", help="Only this channel.")
@click.option("--period", help="Only costs that overlap this period.")
@format_option
@pass_state
def channel_costs(state: State, only: str | None, period: str | None, fmt: str) -> None:
    """List the recorded costs of marketing channels."""
    from crmkit.core.reports import parse_period

    with state.session(readonly=True) as s:
        span = None
        if period is not None:
            span = parse_period(period, today=_utcnow().astimezone(s.crm.tz).date())
        costs = s.channel_costs.list(
            channel=only,
            start=span.start if span else None,
            end=span.end if span else None,
        )
    emit(costs, fmt, columns=["id", "channel", "period", "amount", "currency", "note"])


# -- interactions ------------------------------------------------------------------------------
INTERACTION_COLUMNS = [
    "id",
    "occurred_at",
    "kind",
    "direction",
    "topic",
    "outcome",
    "client_id",
    "deal_id",
    "user",
    "note",
]


@cli.command("log")
@click.argument("kind")
@click.argument("client_id", type=int)
@click.option(
    "--topic", required=True, help="The formal topic of KIND (see 'crmkit kind show KIND')."
)
@click.option(
    "--outcome", required=True, help="The formal outcome of KIND (see 'crmkit kind show KIND')."
)
@click.option(
    "--direction",
    type=click.Choice(["inbound", "outbound"]),
    help="Who started it: the client (inbound) or we (outbound). Required for calls.",
)
@click.option("--at", metavar="WHEN", help="When it happened: " + WHEN_HELP)
@click.option("--duration", metavar="MIN", help="How long it took, in minutes (0 to 1440).")
@click.option(
    "--deal",
    "deal_id",
    type=int,
    metavar="ID",
    help="The client's deal it was about; the pipeline's outcome rules then move it.",
)
@click.option(
    "--respondent",
    "respondents",
    type=int,
    multiple=True,
    metavar="CONTACT_ID",
    help="A contact person of the client who took part; repeat for several.",
)
@click.option("--note", metavar="TEXT", help="Free text (topic and outcome stay formal).")
@format_option
@pass_state
def log_command(
    state: State,
    kind: str,
    client_id: int,
    topic: str,
    outcome: str,
    direction: str | None,
    at: str | None,
    duration: str | None,
    deal_id: int | None,
    respondents: tuple[int, ...],
    note: str | None,
    fmt: str,
) -> None:
    """Log an interaction of KIND (call, meeting, email ...) with client CLIENT_ID.

    The outcome rules of the deal's pipeline and of the client lifecycle, and
    plugins, may move the deal or the client on and create follow-up tasks, in
    the same transaction. A move that a stage gate refuses is shown as a
    warning; the interaction is recorded all the same.
    """
    crm = state.crm()
    with state.session() as s:
        logged = s.interactions.log(
            client_id,
            kind,
            topic=topic,
            outcome=outcome,
            direction=direction,
            at=at,
            duration=duration,
            deal_id=deal_id,
            respondents=respondents,
            note=note,
        )
        client_name = s.clients.get(client_id).name
    if fmt == "json":
        emit(logged, fmt)
    else:
        i = logged.interaction
        with_deal = f", deal #{i.deal_id}" if i.deal_id else ""
        click.echo(
            f"Logged interaction #{i.id} {i.kind} with client #{i.client_id} {client_name}"
            f"{with_deal}: {i.topic} -> {i.outcome}"
        )
        show(i, fmt, crm.tz)
        for change in logged.changes:
            click.echo(_change_line(change))
        for task in logged.tasks:
            due = _short_time(task.due_at, crm.tz)
            click.echo(f"Created task #{task.id} {task.title} (due {due}, for {task.assignee})")
    for refused in logged.refused:
        click.echo(f"Warning: {refused}", err=True)


@cli.group()
def interaction() -> None:
    """Interactions: calls, meetings, emails ... logged with 'crmkit log'."""


@interaction.command("list")
@click.option("--client", "client_id", type=int, metavar="ID", help="Only with this client.")
@click.option("--deal", "deal_id", type=int, metavar="ID", help="Only about this deal.")
@click.option("--user", metavar="LOGIN", help="Only those logged by this user.")
@click.option("--kind", metavar="KIND", help="Only this kind (see 'crmkit kind list').")
@click.option("--since", metavar="WHEN", help="Only from this moment on (a date: its start).")
@click.option("--until", metavar="WHEN", help="Only up to this moment (a date: its end).")
@limit_option("interactions")
@format_option
@pass_state
def interaction_list(state: State, kind: str | None, fmt: str, **filters: Any) -> None:
    """List interactions, newest first."""
    crm = state.crm()
    if kind is not None:
        crm.interaction_kind(kind)
    with state.session(readonly=True) as s:
        found = s.interactions.list(kind=kind, **filters)
    show(found, fmt, crm.tz, columns=INTERACTION_COLUMNS)


# -- interaction kinds -------------------------------------------------------------------------
@cli.group()
def kind() -> None:
    """Kinds of interaction and their formal topics and outcomes."""


@kind.command("list")
@format_option
@pass_state
def kind_list(state: State, fmt: str) -> None:
    """List interaction kinds with the names of their topics and outcomes."""
    kinds = list(state.crm().interaction_kinds.values())
    if fmt == "json":
        emit(kinds, fmt)
        return
    rows = [
        {
            "name": k.name,
            "title": k.title,
            "direction": "required" if k.direction_required else "optional",
            "topics": ", ".join(k.topics),
            "outcomes": ", ".join(k.outcomes),
        }
        for k in kinds
    ]
    emit(rows, fmt)


@kind.command("show")
@click.argument("name")
@format_option
@pass_state
def kind_show(state: State, name: str, fmt: str) -> None:
    """Show the topics and outcomes of interaction kind NAME, and what each outcome moves."""
    crm = state.crm()
    spec = crm.interaction_kind(name)
    if fmt == "json":
        emit(spec, fmt)
        return
    need = "required" if spec.direction_required else "optional"
    click.echo(f"{spec.title} ({spec.name}): direction {need}")
    emit([{"topic": k, "title": v} for k, v in spec.topics.items()], fmt, title="Topics")
    rows = []
    for key, title in spec.outcomes.items():
        effects = [
            f"{flow.name}: {_rule_effect(rule)}"
            for flow in crm.pipelines.values()
            for rule in flow.rules
            if rule.outcome == key and rule.kind in (None, spec.name)
        ]
        rows.append({"outcome": key, "title": title, "rules": "; ".join(effects)})
    emit(rows, fmt, title="Outcomes")


# -- pipelines ---------------------------------------------------------------------------------
def _any_pipeline(crm: CRM, name: str) -> Any:
    """A deal pipeline or the client lifecycle; the error lists the known ones."""
    flow = crm.pipelines.get(name)
    if flow is None:
        allowed = ", ".join(crm.pipelines) or "none"
        raise ValidationError(f"unknown pipeline {name!r} (allowed: {allowed})", field="pipeline")
    return flow


def _rule_effect(rule: Any) -> str:
    text = f"-> {rule.move_to}" if rule.move_to else "no move"
    if rule.task:
        text += f" (+ task: {rule.task['title']})"
    return text


def _rule_text(rule: Any) -> str:
    """``outcome [kind/topic] -> stage (+ task: title)``."""
    where = ""
    if rule.kind or rule.topic:
        where = f" [{rule.kind or '*'}{'/' + rule.topic if rule.topic else ''}]"
    return f"{rule.outcome}{where} {_rule_effect(rule)}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:g}%"


@cli.group()
def pipeline() -> None:
    """Pipelines: the written stages that deals (and the client lifecycle) move down."""


@pipeline.command("list")
@format_option
@pass_state
def pipeline_list(state: State, fmt: str) -> None:
    """List pipelines: deal funnels and the client lifecycle."""
    rows = [
        {
            "name": flow.name,
            "title": flow.title,
            "entity": flow.entity,
            "stages": len(flow.stages),
            "allow_skip": flow.allow_skip,
            "plugin": flow.plugin,
            "description": flow.description,
        }
        for flow in state.crm().pipelines.values()
    ]
    emit(rows, fmt, columns=["name", "title", "entity", "stages", "allow_skip"])


@pipeline.command("show")
@click.argument("name")
@format_option
@pass_state
def pipeline_show(state: State, name: str, fmt: str) -> None:
    """Show pipeline NAME: stages (probability, SLA days, entry gate), lost reasons, rules."""
    flow = _any_pipeline(state.crm(), name)
    if fmt == "json":
        emit(flow.to_dict(), fmt)
        return
    moves = "may skip stages" if flow.allow_skip else "moves forward one stage at a time"
    click.echo(f"{flow.title} ({flow.name}): a {flow.entity} pipeline that {moves}")
    if flow.description:
        click.echo(flow.description)
    rows = [
        {
            "order": stage.order,
            "stage": stage.name,
            "title": stage.title,
            "probability": _percent(stage.probability),
            "days": stage.days or "",
            "gate": json.dumps(stage.gate, separators=(",", ":")) if stage.gate else "",
            "marks": ", ".join(stage.marks),
        }
        for stage in flow.stages
    ]
    emit(rows, fmt, title="Stages")
    terminal = "won after the last stage, or lost" if flow.entity == "deal" else "lost"
    click.echo(f"Then: {terminal} from any open stage, with a reason.")
    click.echo(f"Lost reasons: {', '.join(flow.lost_reasons) or 'any text'}")
    if flow.rules:
        emit([{"rule": _rule_text(rule)} for rule in flow.rules], fmt, title="Outcome rules")
    else:
        click.echo("Outcome rules: none")


# -- deals -------------------------------------------------------------------------------------
DEAL_COLUMNS = [
    "id",
    "client",
    "title",
    "pipeline",
    "stage",
    "status",
    "amount",
    "currency",
    "owner",
    "since",
    "stalled",
]
HISTORY_COLUMNS = ["at", "from", "to", "cause", "user", "interaction", "note"]


def _deal_rows(s: Any, deals: Sequence[Any], now: Any) -> list[dict[str, Any]]:
    """Deals as JSON, with whether each is stalled."""
    return [{**_plain(deal), "stalled": s.deals.is_stalled(deal, now)} for deal in deals]


def _deal_table(row: dict[str, Any], *, listing: bool = False) -> dict[str, Any]:
    """A deal row for a table: ``stalled`` as yes/no; a listing adds ``since`` (in stage since)."""
    out = {**row, "stalled": _yes(row["stalled"])}
    if listing:
        out["since"] = row.get("stage_entered_at")
    return out


def _history_rows(history: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "at": c.at,
            "from": c.from_stage,
            "to": c.to_stage,
            "cause": c.cause,
            "user": c.user,
            "interaction": c.interaction_id,
            "note": c.note,
        }
        for c in history
    ]


def _client_stage(s: Any, client_id: int) -> Callable[[], str | None]:
    """How to read the client's lifecycle stage, if the user may read the client at all."""
    from sqlalchemy import select

    if not s.access.may("read", "client"):
        return lambda: None
    clients = s.table("clients")
    query = s.access.filter(
        select(clients.c.stage).where(clients.c.id == client_id), "read", "client"
    )
    return lambda: s.connection.execute(query).scalar()


def _report_move(state: State, deal_id: int, fmt: str, do: Callable[[Any], Any]) -> None:
    """Run one move of a deal and print it (and a lifecycle move it caused)."""
    with state.session() as s:
        client_id = s.deals.get(deal_id).client_id
        stage = _client_stage(s, client_id)
        before = stage()
        change = do(s)
        after = stage()
        row = _deal_rows(s, [s.deals.get(deal_id)], _utcnow())[0]
    if fmt == "json":
        emit({"change": change, "deal": row}, fmt)
        return
    click.echo(_change_line(change))
    if before != after:
        click.echo(f"client #{client_id}: {before} -> {after}")


@cli.group()
def deal() -> None:
    """Deals: sales opportunities moving down a pipeline."""


@deal.command("open")
@click.argument("client_id", type=int)
@click.option(
    "--pipeline",
    "pipeline_name",
    required=True,
    metavar="NAME",
    help="The pipeline (see 'crmkit pipeline list'); the deal starts at its first stage.",
)
@click.option("--amount", required=True, metavar="AMOUNT", help="Expected amount, e.g. 150000.")
@click.option("--title", help="What is being sold (default: the client's name).")
@click.option("--currency", metavar="CODE", help="3-letter code (default: the deployment's).")
@click.option("--owner", metavar="LOGIN", help="The responsible manager (default: you).")
@click.option("--close-by", metavar="DATE", help="Expected close date, YYYY-MM-DD.")
@click.option("--at", metavar="WHEN", help="When the deal was opened: " + WHEN_HELP)
@format_option
@pass_state
def deal_open(
    state: State,
    client_id: int,
    pipeline_name: str,
    amount: str,
    title: str | None,
    currency: str | None,
    owner: str | None,
    close_by: str | None,
    at: str | None,
    fmt: str,
) -> None:
    """Open a deal with client CLIENT_ID at the first stage of a pipeline."""
    crm = state.crm()
    with state.session() as s:
        new = s.deals.open(
            client_id,
            pipeline=pipeline_name,
            amount=amount,
            title=title,
            currency=currency,
            owner=owner,
            expected_close=close_by,
            at=at,
        )
        row = _deal_rows(s, [new], _utcnow())[0]
    if fmt == "json":
        emit(row, fmt)
        return
    click.echo(f"Created deal #{new.id} {new.title} ({new.pipeline}: {new.stage})")
    show(_deal_table(row), fmt, crm.tz)


@deal.command("update")
@click.argument("deal_id", type=int)
@click.option("--title", help="What is being sold.")
@click.option("--amount", metavar="AMOUNT", help="Expected amount.")
@click.option("--currency", metavar="CODE", help="3-letter currency code.")
@click.option("--owner", metavar="LOGIN", help="The responsible manager.")
@click.option("--close-by", "expected_close", metavar="DATE", help="Expected close date.")
@format_option
@pass_state
def deal_update(state: State, deal_id: int, fmt: str, **opts: Any) -> None:
    """Change the title, amount, currency, owner or close date of deal DEAL_ID."""
    crm = state.crm()
    changes = {k: v for k, v in opts.items() if v is not None}
    if not changes:
        raise CrmError("nothing to change: give at least one option", field="options")
    with state.session() as s:
        updated = s.deals.update(deal_id, **changes)
        row = _deal_rows(s, [updated], _utcnow())[0]
    if fmt == "json":
        emit(row, fmt)
        return
    click.echo(f"Updated deal #{updated.id} {updated.title}")
    show(_deal_table(row), fmt, crm.tz)


@deal.command("move")
@click.argument("deal_id", type=int)
@click.argument("stage")
@click.option("--at", metavar="WHEN", help="When it moved: " + WHEN_HELP)
@click.option("--note", metavar="TEXT", help="Why, in a few words (stored with the change).")
@format_option
@pass_state
def deal_move(
    state: State, deal_id: int, stage: str, at: str | None, note: str | None, fmt: str
) -> None:
    """Move deal DEAL_ID forward to STAGE (the entry gate must be satisfied)."""
    _report_move(state, deal_id, fmt, lambda s: s.deals.move(deal_id, stage, at=at, note=note))


@deal.command("win")
@click.argument("deal_id", type=int)
@click.option("--at", metavar="WHEN", help="When it was won: " + WHEN_HELP)
@click.option("--note", metavar="TEXT", help="A few words stored with the change.")
@format_option
@pass_state
def deal_win(state: State, deal_id: int, at: str | None, note: str | None, fmt: str) -> None:
    """Close deal DEAL_ID as won (from the pipeline's last stage)."""
    _report_move(state, deal_id, fmt, lambda s: s.deals.win(deal_id, at=at, note=note))


@deal.command("lose")
@click.argument("deal_id", type=int)
@click.option(
    "--reason",
    required=True,
    metavar="REASON",
    help="One of the pipeline's lost reasons (see 'crmkit pipeline show NAME').",
)
@click.option("--at", metavar="WHEN", help="When it was lost: " + WHEN_HELP)
@click.option("--note", metavar="TEXT", help="Details in free text.")
@format_option
@pass_state
def deal_lose(
    state: State, deal_id: int, reason: str, at: str | None, note: str | None, fmt: str
) -> None:
    """Close deal DEAL_ID as lost, from any open stage, with a reason."""
    _report_move(state, deal_id, fmt, lambda s: s.deals.lose(deal_id, reason, at=at, note=note))


def _check_stage_filter(crm: CRM, pipeline_name: str | None, stage: str) -> None:
    """An unknown stage in a filter is an error that lists the known ones."""
    if pipeline_name is not None:
        crm.pipeline(pipeline_name).stage(stage)
        return
    known: list[str] = []
    for flow in crm.pipelines.values():
        if flow.entity == "deal":
            known += [n for n in flow.stage_names if n not in known]
    if stage not in (*known, "won", "lost"):
        allowed = ", ".join([*known, "won", "lost"])
        raise ValidationError(f"{stage!r} is not a stage (allowed: {allowed})", field="stage")


@deal.command("list")
@click.option("--pipeline", "pipeline_name", metavar="NAME", help="Only this pipeline.")
@click.option("--stage", metavar="STAGE", help="Only deals at this stage.")
@click.option(
    "--status", type=click.Choice(["open", "won", "lost"]), help="Only deals with this status."
)
@click.option("--owner", metavar="LOGIN", help="Only this manager's deals.")
@click.option("--client", "client_id", type=int, metavar="ID", help="Only this client's deals.")
@click.option(
    "--stalled", is_flag=True, help="Only open deals longer in their stage than its SLA days."
)
@limit_option("deals")
@format_option
@pass_state
def deal_list(
    state: State,
    pipeline_name: str | None,
    stage: str | None,
    status: str | None,
    owner: str | None,
    client_id: int | None,
    stalled: bool,
    limit: int,
    fmt: str,
) -> None:
    """List deals, newest first, with whether each is stalled."""
    crm = state.crm()
    if stage is not None:
        _check_stage_filter(crm, pipeline_name, stage)
    now = _utcnow()
    with state.session(readonly=True) as s:
        deals = s.deals.list(
            pipeline=pipeline_name,
            stage=stage,
            status=status,
            owner=owner,
            client_id=client_id,
            stalled=True if stalled else None,
            now=now,
            limit=limit,
        )
        rows = _deal_rows(s, deals, now)
    if fmt == "json":
        emit(rows, fmt)
        return
    rows = [_deal_table(r, listing=True) for r in rows]
    show(rows, fmt, crm.tz, columns=DEAL_COLUMNS)


@deal.command("show")
@click.argument("deal_id", type=int)
@format_option
@pass_state
def deal_show(state: State, deal_id: int, fmt: str) -> None:
    """Show deal DEAL_ID, whether it is stalled, and its complete stage history."""
    crm = state.crm()
    with state.session(readonly=True) as s:
        row = _deal_rows(s, [s.deals.get(deal_id)], _utcnow())[0]
        history = s.deals.history(deal_id)
    if fmt == "json":
        emit({**row, "history": history}, fmt)
        return
    flow = crm.pipelines.get(row["pipeline"])
    if flow is not None and row["status"] == "open":
        stage = flow.stage(row["stage"])
        row["probability"] = _percent(stage.probability)
        row["sla_days"] = stage.days
    show(_deal_table(row), fmt, crm.tz, title=f"Deal #{deal_id}")
    show(_history_rows(history), fmt, crm.tz, columns=HISTORY_COLUMNS, title="Stage history")


# -- tasks -------------------------------------------------------------------------------------
TASK_COLUMNS = [
    "id",
    "title",
    "assignee",
    "due",
    "done",
    "steps",
    "overdue",
    "client_id",
    "deal_id",
]


def _task_row(task: Any, now: Any) -> dict[str, Any]:
    """A task as JSON, with ``overdue``: open past its deadline, or done after it."""
    return {**_plain(task), "overdue": task.overdue(now)}


def _task_table(task: Any, now: Any, tz: Any) -> dict[str, Any]:
    row = _local(_task_row(task, now), tz)
    done = sum(1 for step in task.steps if step.done_at is not None)
    late = ""
    if task.done_at is None and task.due_at < now:
        late = "yes"
    elif task.done_late:
        late = "late"
    return {
        **row,
        "due": row["due_at"],
        "done": row["done_at"],
        "steps": f"{done}/{len(task.steps)}" if task.steps else "",
        "overdue": late,
    }


def _late_by(delta: Any) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _print_task(task: Any, fmt: str, tz: Any) -> None:
    now = _utcnow()
    if fmt == "json":
        emit(_task_row(task, now), fmt)
        return
    row = _task_table(task, now, tz)
    row.pop("steps")
    for key in ("due", "done"):
        row.pop(key)
    row["overdue"] = {"yes": "yes (open past the deadline)", "late": "done late"}.get(
        row["overdue"], "no"
    )
    emit(row, fmt, title=f"Task #{task.id}")
    if task.steps:
        steps = [
            {
                "n": n,
                "done": "[x]" if step.done_at else "[ ]",
                "step": step.text,
                "done_at": _short_time(step.done_at, tz) if step.done_at else "",
            }
            for n, step in enumerate(task.steps, 1)
        ]
        emit(steps, fmt, title="Steps")


def _list_tasks(state: State, fmt: str, title: str | None = None, **filters: Any) -> None:
    crm = state.crm()
    now = _utcnow()
    with state.session(readonly=True) as s:
        tasks = s.tasks.list(now=now, **filters)
    if fmt == "json":
        emit([_task_row(t, now) for t in tasks], fmt)
        return
    rows = [_task_table(t, now, crm.tz) for t in tasks]
    columns = TASK_COLUMNS
    if title is not None:  # the manager's view of open overdue tasks: how late each is
        for row, task in zip(rows, tasks, strict=True):
            row["late_by"] = _late_by(now - task.due_at)
        columns = [c for c in TASK_COLUMNS if c not in ("done", "overdue")] + ["late_by"]
    emit(rows, fmt, columns=columns, title=title)


@cli.group()
def task() -> None:
    """Tasks: ordered steps, an assignee and a deadline."""


@task.command("add")
@click.argument("title")
@click.option(
    "--due",
    required=True,
    metavar="WHEN",
    help="The deadline: 2026-11-22T18:00, a date (its end of day), today, tomorrow, +3d, +2h.",
)
@click.option("--assignee", metavar="LOGIN", help="Who does it (default: you).")
@click.option("--client", "client_id", type=int, metavar="ID", help="The client it is about.")
@click.option(
    "--deal", "deal_id", type=int, metavar="ID", help="The deal it is about (sets the client)."
)
@click.option(
    "--step", "steps", multiple=True, metavar="TEXT", help="A step, in order; repeat for several."
)
@format_option
@pass_state
def task_add(
    state: State,
    title: str,
    due: str,
    assignee: str | None,
    client_id: int | None,
    deal_id: int | None,
    steps: tuple[str, ...],
    fmt: str,
) -> None:
    """Add a task called TITLE with a deadline."""
    crm = state.crm()
    with state.session() as s:
        new = s.tasks.add(
            title, due=due, assignee=assignee, client_id=client_id, deal_id=deal_id, steps=steps
        )
    if fmt == "table":
        click.echo(f"Created task #{new.id} {new.title}")
    _print_task(new, fmt, crm.tz)


@task.command("step")
@click.argument("task_id", type=int)
@click.argument("number", type=int)
@click.option("--undo", is_flag=True, help="Mark the step not done again.")
@click.option("--at", metavar="WHEN", help="When it was done: " + WHEN_HELP)
@format_option
@pass_state
def task_step(
    state: State, task_id: int, number: int, undo: bool, at: str | None, fmt: str
) -> None:
    """Mark step NUMBER (from 1) of task TASK_ID done (or, with --undo, not done)."""
    crm = state.crm()
    with state.session() as s:
        updated = s.tasks.step(task_id, number, done=not undo, at=at)
    if fmt == "table":
        mark = "not done" if undo else "done"
        click.echo(f"Task #{updated.id} step {number} {mark}: {updated.steps[number - 1].text}")
    _print_task(updated, fmt, crm.tz)


@task.command("done")
@click.argument("task_id", type=int)
@click.option("--at", metavar="WHEN", help="When it was done: " + WHEN_HELP)
@click.option("--force", is_flag=True, help="Close it even if some steps are not done.")
@format_option
@pass_state
def task_done(state: State, task_id: int, at: str | None, force: bool, fmt: str) -> None:
    """Close task TASK_ID; done after its deadline, it is recorded as late."""
    crm = state.crm()
    with state.session() as s:
        updated = s.tasks.done(task_id, at=at, force=force)
    if fmt == "table":
        late = ", after its deadline (recorded as late)" if updated.done_late else ""
        click.echo(f"Done task #{updated.id} {updated.title}{late}")
    _print_task(updated, fmt, crm.tz)


@task.command("list")
@click.option(
    "--overdue",
    is_flag=True,
    help="Only tasks past their deadline: open ones, and those done late.",
)
@click.option("--open", "only_open", is_flag=True, help="Only tasks not done yet.")
@click.option("--assignee", metavar="LOGIN", help="Only this user's tasks.")
@click.option("--client", "client_id", type=int, metavar="ID", help="Only this client's tasks.")
@click.option("--deal", "deal_id", type=int, metavar="ID", help="Only this deal's tasks.")
@limit_option("tasks")
@format_option
@pass_state
def task_list(state: State, overdue: bool, only_open: bool, fmt: str, **filters: Any) -> None:
    """List tasks by deadline."""
    _list_tasks(
        state,
        fmt,
        overdue=True if overdue else None,
        done=False if only_open else None,
        **filters,
    )


@task.command("show")
@click.argument("task_id", type=int)
@format_option
@pass_state
def task_show(state: State, task_id: int, fmt: str) -> None:
    """Show task TASK_ID with its steps."""
    crm = state.crm()
    with state.session(readonly=True) as s:
        found = s.tasks.get(task_id)
    _print_task(found, fmt, crm.tz)


@cli.command("overdue")
@click.option("--assignee", metavar="LOGIN", help="Only this user's tasks.")
@limit_option("tasks")
@format_option
@pass_state
def overdue_command(state: State, assignee: str | None, limit: int, fmt: str) -> None:
    """List open tasks past their deadline, most overdue first (the manager's view)."""
    _list_tasks(
        state,
        fmt,
        title="Overdue tasks",
        overdue=True,
        done=False,
        assignee=assignee,
        limit=limit,
    )


# -- invoices ----------------------------------------------------------------------------------
INVOICE_COLUMNS = [
    "id",
    "number",
    "deal_id",
    "amount",
    "currency",
    "status",
    "issued_at",
    "paid_at",
    "cancelled_at",
]


@cli.group()
def invoice() -> None:
    """Invoices of deals: issued, then paid or cancelled."""


@invoice.command("issue")
@click.argument("deal_id", type=int)
@click.option("--amount", required=True, metavar="AMOUNT", help="The amount, e.g. 150000.00.")
@click.option("--number", metavar="NUMBER", help="The invoice number (default: YEAR-NNNNN).")
@click.option("--currency", metavar="CODE", help="3-letter code (default: the deal's).")
@click.option("--at", metavar="WHEN", help="When it was issued: " + WHEN_HELP)
@format_option
@pass_state
def invoice_issue(
    state: State,
    deal_id: int,
    amount: str,
    number: str | None,
    currency: str | None,
    at: str | None,
    fmt: str,
) -> None:
    """Issue an invoice for deal DEAL_ID."""
    crm = state.crm()
    with state.session() as s:
        new = s.invoices.issue(deal_id, amount, number=number, currency=currency, at=at)
    if fmt == "table":
        click.echo(
            f"Issued invoice #{new.id} {new.number} for deal #{new.deal_id}: "
            f"{_plain(new.amount)} {new.currency}"
        )
    show(new, fmt, crm.tz)


def _invoice_status_command(name: str, verb: str) -> None:
    """``invoice pay`` and ``invoice cancel``: one shape, two verbs."""

    @invoice.command(name, help=f"Mark the issued invoice INVOICE_ID {verb}.")
    @click.argument("invoice_id", type=int)
    @click.option("--at", metavar="WHEN", help=f"When it was {verb}: " + WHEN_HELP)
    @format_option
    @pass_state
    def command(state: State, invoice_id: int, at: str | None, fmt: str) -> None:
        crm = state.crm()
        with state.session() as s:
            changed = getattr(s.invoices, name)(invoice_id, at=at)
        if fmt == "table":
            click.echo(f"Invoice #{changed.id} {changed.number} {verb}")
        show(changed, fmt, crm.tz)


_invoice_status_command("pay", "paid")
_invoice_status_command("cancel", "cancelled")


@invoice.command("list")
@click.option(
    "--status",
    type=click.Choice(["issued", "paid", "cancelled"]),
    help="Only invoices with this status.",
)
@click.option("--deal", "deal_id", type=int, metavar="ID", help="Only this deal's invoices.")
@limit_option("invoices")
@format_option
@pass_state
def invoice_list(
    state: State, status: str | None, deal_id: int | None, limit: int, fmt: str
) -> None:
    """List invoices, newest first."""
    crm = state.crm()
    with state.session(readonly=True) as s:
        found = s.invoices.list(status=status, deal_id=deal_id, limit=limit)
    show(found, fmt, crm.tz, columns=INVOICE_COLUMNS)


@invoice.command("show")
@click.argument("invoice_id", type=int)
@format_option
@pass_state
def invoice_show(state: State, invoice_id: int, fmt: str) -> None:
    """Show invoice INVOICE_ID."""
    crm = state.crm()
    with state.session(readonly=True) as s:
        found = s.invoices.get(invoice_id)
    show(found, fmt, crm.tz, title=f"Invoice #{invoice_id}")


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


# -- commands kept in their own modules ---------------------------------------------------
from crmkit.commands import access as _access  # noqa: E402, F401  (policy ...)
from crmkit.commands import audit as _audit  # noqa: E402, F401  (audit verify, show)
from crmkit.commands import automation as _automation  # noqa: E402, F401  (automation ...)
from crmkit.commands import data as _data  # noqa: E402, F401  (export, backup, restore)
from crmkit.commands import imports as _imports  # noqa: E402, F401  (import)
from crmkit.commands import kpis as _kpis  # noqa: E402, F401  (kpi list)
from crmkit.commands import leads as _leads  # noqa: E402, F401  (lead key)
from crmkit.commands import plans as _plans  # noqa: E402, F401  (plan set, split, list)
from crmkit.commands import reports as _reports  # noqa: E402, F401  (report)
from crmkit.commands import users as _users  # noqa: E402, F401  (user deactivate, user token)


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
