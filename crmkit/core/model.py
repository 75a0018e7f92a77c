"""Domain objects: plain attrs classes, independent of storage.

The store builds them from rows and the API hands them out; they are frozen,
so a change goes through the session (``s.clients.update(id, ...)``), which
validates it, stores it and records an event. :func:`to_json` and
:func:`from_json` convert any of them with cattrs.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import field, frozen

from .errors import Problem

if TYPE_CHECKING:  # pragma: no cover
    import cattrs

T = TypeVar("T")


class Role(enum.StrEnum):
    """What a user does in the sales department."""

    ADMIN = "admin"
    HEAD = "head"
    MANAGER = "manager"
    MARKETER = "marketer"


class ClientKind(enum.StrEnum):
    """A client is a company or a private person."""

    COMPANY = "company"
    PERSON = "person"


@frozen
class Team:
    """A team of users; teams nest (a department holds groups)."""

    id: int
    name: str
    parent_id: int | None = None
    created_at: dt.datetime | None = None


@frozen
class User:
    """An employee who works in the CRM; every session acts as one."""

    id: int
    login: str
    name: str
    role: Role
    team_id: int | None = None
    active: bool = True
    created_at: dt.datetime | None = None


@frozen
class Contact:
    """A contact person of a client: the respondent of interactions."""

    id: int
    client_id: int
    name: str
    position: str | None = None
    email: str | None = None
    phone: str | None = None
    created_at: dt.datetime | None = None


@frozen
class Client:
    """One card per client: contact data, requisites, segment, owner, source."""

    id: int
    name: str
    kind: ClientKind = ClientKind.COMPANY
    email: str | None = None
    phone: str | None = None
    requisites: dict[str, Any] = field(factory=dict)
    segment: str | None = None
    params: dict[str, Any] = field(factory=dict)
    owner_id: int | None = None
    owner: str | None = None  #: the owner's login, filled in on reads
    source: str | None = None
    external_id: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@frozen
class Channel:
    """A marketing channel: where clients come from."""

    name: str
    title: str


@frozen
class Segment:
    """A client segment and the JSON Schema of its parameters.

    ``schema`` is a JSON Schema (2020-12) for ``Client.params``. Saving a card
    checks the values present; the schema's top-level ``required`` list names
    the *primary fields*, which make a card complete (:meth:`missing`).
    """

    name: str
    title: str
    schema: dict[str, Any] = field(factory=lambda: {"type": "object"})
    description: str = ""
    plugin: str | None = field(default=None, eq=False)

    @property
    def primary_fields(self) -> list[str]:
        """The schema's top-level ``required`` list: the fields a complete card fills."""
        return list(self.schema.get("required", []))

    def validate(self, params: dict[str, Any], *, complete: bool = False) -> list[Problem]:
        """Problems of ``params``; with ``complete`` also missing primary fields."""
        from .validation import schema_problems

        schema = self.schema
        if not complete and "required" in schema:
            schema = {k: v for k, v in schema.items() if k != "required"}
        return schema_problems(schema, params, prefix="params")

    def missing(self, params: dict[str, Any]) -> list[str]:
        """Primary fields that ``params`` does not fill yet."""
        return [f for f in self.primary_fields if params.get(f) in (None, "", [])]


_converter: cattrs.Converter | None = None


def converter() -> cattrs.Converter:
    """The cattrs converter crmkit uses for JSON (datetimes as ISO 8601)."""
    global _converter
    if _converter is None:
        import cattrs

        conv = cattrs.Converter()
        conv.register_unstructure_hook(dt.datetime, lambda d: d.isoformat())
        conv.register_structure_hook(dt.datetime, lambda v, _: dt.datetime.fromisoformat(v))
        _converter = conv
    return _converter


def to_json(obj: Any) -> Any:
    """A JSON-ready form of a domain object (or a list of them)."""
    return converter().unstructure(obj)


def from_json(data: Any, cls: type[T]) -> T:
    """Build a domain object of type ``cls`` from :func:`to_json` output."""
    return converter().structure(data, cls)
