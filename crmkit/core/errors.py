"""One exception tree for everything crmkit refuses to do.

Every error carries a human message; errors about input also name the
``field`` at fault. The CLI prints ``Error: <field>: <reason>`` and exits
with the class's :attr:`CrmError.exit_code`; the HTTP layer maps the same
classes to 4xx responses. Nothing else in crmkit should escape to a user
as a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class CrmError(Exception):
    """Base class of all crmkit errors."""

    #: The CLI's exit code for this class of error.
    exit_code: int = 1
    #: The HTTP status for this class of error.
    http_status: int = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of this error (HTTP, and programs that report errors)."""
        return {"error": type(self).__name__, "field": self.field, "message": self.message}


class ValidationError(CrmError):
    """Input that breaks a rule. ``problems`` lists every unmet rule at once."""

    exit_code = 2
    http_status = 422

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        problems: Sequence[Problem] | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.problems: list[Problem] = list(problems or [Problem(field, message)])

    @classmethod
    def from_problems(cls, problems: Iterable[Problem]) -> ValidationError:
        """One error that reports several problems in one message."""
        items = list(problems)
        if len(items) == 1:
            return cls(items[0].reason, field=items[0].field, problems=items)
        text = "; ".join(str(p) for p in items)
        return cls(text, problems=items)

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["problems"] = [{"field": p.field, "reason": p.reason} for p in self.problems]
        return body


class Problem:
    """One unmet rule: the field (a dotted path, or None) and the reason.

    A plain slotted class rather than attrs: this module is imported on every
    ``crmkit`` start-up, ``--help`` included.
    """

    __slots__ = ("field", "reason")

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason

    def __repr__(self) -> str:
        return f"Problem({self.field!r}, {self.reason!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Problem):
            return NotImplemented
        return (self.field, self.reason) == (other.field, other.reason)

    def __hash__(self) -> int:
        return hash((self.field, self.reason))


class NotFound(CrmError):
    """A referenced object (client, user, team, segment ...) does not exist."""

    exit_code = 3
    http_status = 404


class Conflict(CrmError):
    """The change would break a uniqueness rule or the current state."""

    exit_code = 4
    http_status = 409


class DuplicateError(Conflict):
    """The object already exists; ``existing_id`` names the one that does."""

    def __init__(self, message: str, *, field: str | None = None, existing_id: Any = None) -> None:
        super().__init__(message, field=field)
        self.existing_id = existing_id

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["existing_id"] = self.existing_id
        return body


class PermissionDenied(CrmError):
    """The acting user may not do this."""

    exit_code = 5
    http_status = 403


class DeploymentError(CrmError):
    """No deployment here, a broken ``crmkit.toml``, or an unreachable database."""

    exit_code = 6
    http_status = 503


class ConfigError(DeploymentError):
    """``crmkit.toml`` is malformed or names something unknown."""


class DatabaseError(DeploymentError):
    """The database cannot be reached or is not at the expected schema version."""


class PluginError(CrmError):
    """A plugin failed to load or broke its contract."""

    exit_code = 7
    http_status = 500


class AuditError(CrmError):
    """The audit log's hash chain is broken: an entry was changed or removed."""

    exit_code = 8
    http_status = 500
