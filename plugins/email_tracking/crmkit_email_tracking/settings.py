"""The plugin's settings: ``[plugin.email_tracking]`` of ``crmkit.toml``.

.. code-block:: toml

    [plugin.email_tracking]
    from = "Acme sales <sales@acme.example>"  # the From of every message
    templates = "templates/email"   # the deployment's own templates (relative to its folder)
    tracking = true                 # false: no pixel, no tracked links, no reading sessions
    honour_dnt = true               # an open sent with DNT: 1 or Sec-GPC: 1 is not recorded
    truncate_ip = true              # store 203.0.113.0 for 203.0.113.7 (IPv6: the /48)
    token_days = 365                # how long the pixel and the links of a message work
    reopen_gap_hours = 24           # a re-open after this long notifies the owner again
    heartbeat_seconds = 15          # how often a reader's page reports the time read
    view_minutes = 120              # how long one reading session may report

    [plugin.email_tracking.smtp]
    host = "smtp.acme.example"
    port = 587
    security = "starttls"           # "starttls", "tls" (implicit TLS) or "none"
    username = "sales@acme.example"
    password_env = "CRMKIT_SMTP_PASSWORD"   # the password is read from this variable
    timeout = 30

    [plugin.email_tracking.worker]
    max_attempts = 8                # a temporary error is retried this many times in all
    backoff_seconds = 60            # the first retry's delay, doubled each time (at most 1 hour)
    claim_minutes = 10              # a message claimed longer ago by a worker that died is retaken

The password is never read from the file: only from the environment
variable that ``password_env`` names.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from attrs import frozen

from crmkit import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from crmkit import CRM

#: The plugin's table in ``crmkit.toml``: ``[plugin.email_tracking]``.
SECTION = "plugin.email_tracking"
#: The From of messages when ``from`` is not set.
DEFAULT_SENDER = "crmkit <crmkit@localhost>"

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "from": {"type": "string", "minLength": 3},
        "templates": {"type": "string", "minLength": 1},
        "tracking": {"type": "boolean"},
        "honour_dnt": {"type": "boolean"},
        "truncate_ip": {"type": "boolean"},
        "token_days": {"type": "integer", "minimum": 1, "maximum": 3650},
        "reopen_gap_hours": {"type": "number", "exclusiveMinimum": 0},
        "heartbeat_seconds": {"type": "number", "minimum": 0.2, "maximum": 300},
        "view_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
        "smtp": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "host": {"type": "string", "minLength": 1},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "security": {"enum": ["starttls", "tls", "none"]},
                "username": {"type": "string", "minLength": 1},
                "password_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
            },
        },
        "worker": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                "backoff_seconds": {"type": "number", "minimum": 0, "maximum": 86400},
                "claim_minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": 1440},
            },
        },
    },
}


@frozen
class SMTP:
    """Where and how the worker delivers mail."""

    host: str = "127.0.0.1"
    port: int = 25
    security: str = "none"
    username: str | None = None
    password_env: str | None = None
    timeout: float = 30.0

    def password(self) -> str | None:
        """The password, from the environment variable ``password_env`` (None without one).

        :class:`~crmkit.ConfigError` when the variable is named but not set.
        """
        if not self.password_env:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError(
                f"the SMTP password is read from ${self.password_env}, which is not set",
                field=f"{SECTION}.smtp.password_env",
            )
        return value


@frozen
class Settings:
    """``[plugin.email_tracking]``, checked, with the defaults filled in."""

    sender: str = DEFAULT_SENDER
    templates: str | None = None
    tracking: bool = True
    honour_dnt: bool = True
    truncate_ip: bool = True
    token_days: int = 365
    reopen_gap_hours: float = 24.0
    heartbeat_seconds: float = 15.0
    view_minutes: int = 120
    smtp: SMTP = SMTP()
    max_attempts: int = 8
    backoff_seconds: float = 60.0
    claim_minutes: float = 10.0


def load(crm: CRM) -> Settings:
    """The deployment's settings (:class:`~crmkit.ConfigError` naming a wrong key)."""
    cached = crm.__dict__.get("_email_tracking_settings")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    settings = parse(crm.config.plugin("email_tracking"))
    crm.__dict__["_email_tracking_settings"] = settings
    return settings


def parse(data: dict[str, Any]) -> Settings:
    """Check ``[plugin.email_tracking]`` (as a dict) and build :class:`Settings`."""
    from crmkit.core.validation import schema_problems

    problems = schema_problems(SETTINGS_SCHEMA, data, prefix=SECTION)
    if problems:
        first = problems[0]
        raise ConfigError(f"{first.reason} (in crmkit.toml)", field=first.field or SECTION)
    smtp = data.get("smtp", {})
    worker = data.get("worker", {})
    security = smtp.get("security", "none")
    default_port = {"starttls": 587, "tls": 465}.get(security, 25)
    return Settings(
        sender=data.get("from", DEFAULT_SENDER),
        templates=data.get("templates"),
        tracking=data.get("tracking", True),
        honour_dnt=data.get("honour_dnt", True),
        truncate_ip=data.get("truncate_ip", True),
        token_days=data.get("token_days", 365),
        reopen_gap_hours=float(data.get("reopen_gap_hours", 24)),
        heartbeat_seconds=float(data.get("heartbeat_seconds", 15)),
        view_minutes=data.get("view_minutes", 120),
        smtp=SMTP(
            host=smtp.get("host", "127.0.0.1"),
            port=smtp.get("port", default_port),
            security=security,
            username=smtp.get("username"),
            password_env=smtp.get("password_env"),
            timeout=float(smtp.get("timeout", 30)),
        ),
        max_attempts=worker.get("max_attempts", 8),
        backoff_seconds=float(worker.get("backoff_seconds", 60)),
        claim_minutes=float(worker.get("claim_minutes", 10)),
    )
