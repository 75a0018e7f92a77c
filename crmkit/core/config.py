"""Reading and writing a deployment's ``crmkit.toml``.

A deployment is a folder holding ``crmkit.toml`` and, by default, the SQLite
database ``crmkit.db``. Keys (every one documented in ``docs/config.rst``):

.. code-block:: toml

    [database]
    url = "sqlite:///crmkit.db"   # any SQLAlchemy URL; relative SQLite paths are
                                  # relative to the deployment folder
    [crmkit]
    admin = "admin"               # the login that acts when no --as is given
    currency = "RUB"              # the currency of amounts given without one
    timezone = "UTC"              # the zone of dates and times given without one

    [plugins]
    modules = []                  # extra plugin modules by dotted name
    disable = []                  # plugin names not to load

    [clients]
    channels = []                 # extra marketing channels

    [segments.NAME]
    title = "..."                 # retitles a plugin's segment
    schema = { ... }              # replaces its JSON Schema
    extend = { properties = { ... }, required = [...] }   # or adds parameters
    # any other key is a setting of the segment (potential weights, offers ...)

    [interactions.KIND]           # extends a kind's formal lists (or adds a kind)
    topics = ["tender"]
    outcomes = ["tender_won"]

    [pipelines.NAME]              # a pipeline definition (see crmkit.core.pipeline)

    [access]
    policies = ["policies.json"]  # policy documents, relative to the deployment folder

    [server]                      # crmkit serve (the HTTP server)
    host = "127.0.0.1"            # the address to listen on
    port = 8000
    public_url = "https://crm.example.com"   # the address clients reach it at
    access_log = true             # one JSON line per request on stderr

    [automation]                  # rules (crmkit automation)
    max_depth = 5                 # how deep rules may trigger rules
    as_user = "admin"             # who the scheduler acts as
    [automation.rules.NAME]       # a rule: event or schedule, when, actions

    [plugin.NAME]                 # each plugin's own settings

``CRMKIT_DATABASE_URL`` overrides ``database.url`` (so a password need not
be written in the file).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from attrs import field, frozen

from .errors import ConfigError, DeploymentError

CONFIG_NAME = "crmkit.toml"
DEFAULT_DB_NAME = "crmkit.db"

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "database": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string", "minLength": 1},
                "echo": {"type": "boolean"},
            },
        },
        "crmkit": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "admin": {"type": "string", "minLength": 1},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "timezone": {"type": "string", "minLength": 1},
            },
        },
        "plugins": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "modules": {"type": "array", "items": {"type": "string"}},
                "disable": {"type": "array", "items": {"type": "string"}},
            },
        },
        "clients": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "channels": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            {"type": "string", "minLength": 1},
                            {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "minLength": 1},
                                    "title": {"type": "string"},
                                },
                                "additionalProperties": False,
                            },
                        ]
                    },
                }
            },
        },
        "segments": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "schema": {"type": "object"},
                    "extend": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "properties": {"type": "object"},
                            "required": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
            },
        },
        "interactions": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "title": {"type": "string"},
                    "topics": {"$ref": "#/$defs/names"},
                    "outcomes": {"$ref": "#/$defs/names"},
                    "direction_required": {"type": "boolean"},
                },
            },
        },
        "pipelines": {"type": "object", "additionalProperties": {"type": "object"}},
        "access": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "policies": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
        },
        "server": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "host": {"type": "string", "minLength": 1},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "public_url": {"type": "string", "pattern": "^https?://[^/?#]+(/[^?#]*)?$"},
                "access_log": {"type": "boolean"},
            },
        },
        "automation": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "rules": {"type": "object", "additionalProperties": {"type": "object"}},
                "max_depth": {"type": "integer", "minimum": 1, "maximum": 50},
                "as_user": {"type": "string", "minLength": 1},
                "lead_user": {"type": "string", "minLength": 1},
            },
        },
        "plugin": {"type": "object", "additionalProperties": {"type": "object"}},
    },
    "$defs": {
        "names": {
            "anyOf": [
                {"type": "array", "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}},
                {
                    "type": "object",
                    "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                    "additionalProperties": {"type": "string"},
                },
            ]
        }
    },
}


@frozen
class Config:
    """A deployment's settings, read from ``crmkit.toml``."""

    root: Path
    database_url: str
    admin: str = "admin"
    currency: str = "RUB"
    timezone: str = "UTC"
    echo: bool = False
    plugin_modules: tuple[str, ...] = ()
    plugin_disable: tuple[str, ...] = ()
    channels: tuple[Any, ...] = ()
    segments: dict[str, dict[str, Any]] = field(factory=dict)
    interactions: dict[str, dict[str, Any]] = field(factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(factory=dict)
    plugin_settings: dict[str, dict[str, Any]] = field(factory=dict)
    access_policies: tuple[str, ...] = ()
    #: the ``[server]`` table (``host``, ``port``, ``public_url``, ``access_log``)
    server: dict[str, Any] = field(factory=dict)
    #: the ``[automation]`` table (``rules``, ``max_depth``, ``as_user``, ``lead_user``)
    automation: dict[str, Any] = field(factory=dict)

    @property
    def public_url(self) -> str:
        """The address clients reach ``crmkit serve`` at, without a trailing slash.

        ``[server] public_url``; by default ``http://HOST:PORT`` of ``[server]``.
        """
        url = self.server.get("public_url")
        if url:
            return str(url).rstrip("/")
        host = self.server.get("host", "127.0.0.1")
        return f"http://{host}:{self.server.get('port', 8000)}"

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Config:
        """Read ``root/crmkit.toml``; raises :class:`DeploymentError` when absent."""
        root = Path(root).resolve()
        path = root / CONFIG_NAME
        if not path.is_file():
            raise DeploymentError(
                f"no crmkit deployment in {root} (no {CONFIG_NAME}); "
                "create one with 'crmkit init DIR' or select one with -C DIR / CRMKIT_DIR",
                field="deployment",
            )
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}", field=CONFIG_NAME) from None
        return cls.from_dict(root, data)

    @classmethod
    def from_dict(cls, root: Path, data: dict[str, Any]) -> Config:
        """Validate ``data`` (the parsed TOML) and build a Config."""
        from .validation import schema_problems

        problems = schema_problems(CONFIG_SCHEMA, data)
        if problems:
            first = problems[0]
            raise ConfigError(
                f"{first.reason} (in {CONFIG_NAME})", field=first.field or CONFIG_NAME
            )
        db = data.get("database", {})
        url = os.environ.get("CRMKIT_DATABASE_URL") or db.get("url", f"sqlite:///{DEFAULT_DB_NAME}")
        section = data.get("crmkit", {})
        timezone = section.get("timezone", "UTC")
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"unknown time zone {timezone!r} (use an IANA name such as 'Europe/Moscow')",
                field="crmkit.timezone",
            ) from None
        return cls(
            root=root,
            database_url=resolve_sqlite_url(url, root),
            admin=section.get("admin", "admin"),
            currency=section.get("currency", "RUB"),
            timezone=timezone,
            echo=db.get("echo", False),
            plugin_modules=tuple(data.get("plugins", {}).get("modules", ())),
            plugin_disable=tuple(data.get("plugins", {}).get("disable", ())),
            channels=tuple(data.get("clients", {}).get("channels", ())),
            segments=data.get("segments", {}),
            interactions=data.get("interactions", {}),
            pipelines=data.get("pipelines", {}),
            plugin_settings=data.get("plugin", {}),
            access_policies=tuple(data.get("access", {}).get("policies", ())),
            server=dict(data.get("server", {})),
            automation=dict(data.get("automation", {})),
        )

    def plugin(self, name: str) -> dict[str, Any]:
        """The ``[plugin.NAME]`` table (empty when absent)."""
        return dict(self.plugin_settings.get(name, {}))


def resolve_sqlite_url(url: str, root: Path) -> str:
    """Make a relative SQLite file path absolute against the deployment folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith("file:"):
            return prefix + str((root / rest).resolve())
    return url


def render_config(*, database_url: str | None, admin: str) -> str:
    """The text of a new ``crmkit.toml``."""
    url = database_url or f"sqlite:///{DEFAULT_DB_NAME}"
    return f"""\
# crmkit deployment settings; every key is described in the "Configuration" page
# (or docs/config.rst). CRMKIT_DATABASE_URL overrides database.url.

[database]
url = {json.dumps(url)}

[crmkit]
# The user that acts when a command is given no --as LOGIN.
admin = {json.dumps(admin)}
# The currency of amounts given without one, and the time zone of dates and
# times given without one (an IANA name such as "Europe/Moscow").
currency = "RUB"
timezone = "UTC"

[plugins]
# Extra plugin modules to load by dotted name, and plugins not to load.
modules = []
disable = []

[clients]
# Marketing channels beyond those that plugins register.
channels = []
"""


def find_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The deployment folder: ``explicit``, else ``CRMKIT_DIR``, else the current folder."""
    chosen = explicit or os.environ.get("CRMKIT_DIR") or "."
    return Path(chosen).expanduser().resolve()
