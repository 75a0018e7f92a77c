"""Domain objects: plain attrs classes, independent of storage.

The store builds them from rows and the API hands them out; they are frozen,
so a change goes through the session (``s.clients.update(id, ...)``), which
validates it, stores it and records an event. :func:`to_json` and
:func:`from_json` convert any of them with cattrs.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
from collections.abc import Callable, Iterable, Mapping
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
    #: fields an access policy hides from the reader (they read as empty)
    hidden: tuple[str, ...] = ()


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
    stage: str | None = None  #: the lifecycle stage (lead, qualified, customer ...)
    #: the client's potential, 0-100, computed by its segment from a complete card
    potential_score: float | None = None
    #: the potential's category (``A``, ``B``, ``C`` ...), None while the card is incomplete
    potential_category: str | None = None
    #: fields an access policy hides from the reader (they read as empty)
    hidden: tuple[str, ...] = ()


@frozen
class Channel:
    """A marketing channel: where clients come from."""

    name: str
    title: str


@frozen
class Potential:
    """A client's potential as its segment scores it: a score, a category and why.

    ``factors`` holds each parameter's contribution to ``score`` (they add up
    to it), so that the number can be explained to the manager who sees it.
    """

    score: float
    category: str
    factors: dict[str, float] = field(factory=dict)


#: ``classifier(params) -> float``: how well ``params`` fit a segment, 0 (not at all) to 1
Classifier = Callable[[Mapping[str, Any]], float]
#: ``scorer(params, settings) -> Potential``: the potential of a complete card
Scorer = Callable[[Mapping[str, Any], Mapping[str, Any]], Potential]


@frozen
class Segment:
    """A client segment: the JSON Schema of its parameters, and how to read them.

    ``schema`` is a JSON Schema (2020-12) for ``Client.params``. Saving a card
    checks the values present; the schema's top-level ``required`` list names
    the *primary fields*, which make a card complete (:meth:`missing`).

    A segment may also bring behaviour, which the core calls:

    ``classifier``
        ``classifier(params) -> float`` from 0 to 1: how well a card's
        parameters fit this segment. A card saved without a segment gets the
        segment whose classifier answers highest (:meth:`crmkit.CRM.classify`).
        Without one, :meth:`classify` applies the default rule.
    ``scorer``
        ``scorer(params, settings) -> Potential``: the client's potential,
        computed when the card is complete and stored with it.
    ``settings``
        The segment's tunables (weights, thresholds, an offer matrix ...):
        the plugin's defaults, with ``[segments.NAME]`` from ``crmkit.toml``
        merged over them, checked against ``settings_schema`` when given.
    """

    name: str
    title: str
    schema: dict[str, Any] = field(factory=lambda: {"type": "object"})
    description: str = ""
    plugin: str | None = field(default=None, eq=False)
    classifier: Classifier | None = field(default=None, eq=False, repr=False)
    scorer: Scorer | None = field(default=None, eq=False, repr=False)
    settings: dict[str, Any] = field(factory=dict)
    settings_schema: dict[str, Any] | None = field(default=None, eq=False, repr=False)

    @property
    def primary_fields(self) -> list[str]:
        """The schema's top-level ``required`` list: the fields a complete card fills."""
        return list(self.schema.get("required", []))

    @property
    def properties(self) -> dict[str, Any]:
        """The schema's top-level ``properties``: each parameter's own schema."""
        return dict(self.schema.get("properties", {}))

    def validate(self, params: dict[str, Any], *, complete: bool = False) -> list[Problem]:
        """Problems of ``params``; with ``complete`` also missing primary fields.

        Each problem names the parameter (``params.NAME``), the rule broken and,
        for a property of the schema, what is allowed (type, range, unit).
        """
        from .validation import schema_problems

        schema = self.schema
        if not complete and "required" in schema:
            schema = {k: v for k, v in schema.items() if k != "required"}
        return schema_problems(schema, params, prefix="params", explain=True)

    def missing(self, params: Mapping[str, Any]) -> list[str]:
        """Primary fields that ``params`` does not fill yet."""
        get = params.get
        return [f for f in self.schema.get("required", ()) if get(f) in (None, "", [])]

    def classify(self, params: Mapping[str, Any]) -> float:
        """How well ``params`` fit this segment, from 0 to 1, judged by their names.

        A parameter that is not one of the schema's properties never fits (0).
        Otherwise the segment's ``classifier`` decides when it has one; the
        default rule is the share of the primary fields that ``params`` fill
        (at least 0.01, so that a card with only secondary parameters still
        fits). Values are not checked here: the card is then validated
        against the segment it fits, so that a bad value is refused with
        the segment's rule instead of leaving the card without a segment.
        """
        if not params:
            return 0.0
        known = self.properties
        if any(name not in known for name in params):
            return 0.0
        if self.classifier is not None:
            return max(0.0, min(1.0, float(self.classifier(params))))
        primary = self.primary_fields
        if not primary:
            return 1.0
        filled = len(primary) - len(self.missing(params))
        return max(0.01, filled / len(primary))

    def potential(self, params: Mapping[str, Any]) -> Potential | None:
        """The potential of a card with these ``params``; None while it is incomplete.

        None also when the segment has no ``scorer``.
        """
        if self.scorer is None or self.missing(params):
            return None
        return self.scorer(params, self.settings)


def best_segment(scores: Iterable[tuple[float, str]]) -> str | None:
    """The segment name with the highest score above 0; None on a tie or no fit."""
    ranked = sorted(scores, reverse=True)
    if not ranked or ranked[0][0] <= 0:
        return None
    if len(ranked) > 1 and ranked[1][0] == ranked[0][0]:
        return None
    return ranked[0][1]


_converter: cattrs.Converter | None = None


def converter() -> cattrs.Converter:
    """The cattrs converter crmkit uses for JSON (datetimes as ISO 8601)."""
    global _converter
    if _converter is None:
        import cattrs

        conv = cattrs.Converter()
        conv.register_unstructure_hook(dt.datetime, lambda d: d.isoformat())
        conv.register_structure_hook(dt.datetime, lambda v, _: dt.datetime.fromisoformat(v))
        conv.register_unstructure_hook(dt.date, lambda d: d.isoformat())
        conv.register_structure_hook(dt.date, lambda v, _: dt.date.fromisoformat(v))
        conv.register_unstructure_hook(decimal.Decimal, str)  # money stays exact in JSON
        conv.register_structure_hook(decimal.Decimal, lambda v, _: decimal.Decimal(str(v)))
        from cattrs.gen import make_dict_unstructure_fn, override

        # a segment's behaviour (functions) is not data: JSON shows its schema and settings
        omit = override(omit=True)
        conv.register_unstructure_hook(
            Segment,
            make_dict_unstructure_fn(
                Segment, conv, classifier=omit, scorer=omit, settings_schema=omit
            ),
        )
        # fields hidden by an access policy are named only when there are some
        for cls in (Client, Contact, Interaction):
            conv.register_unstructure_hook(
                cls,
                make_dict_unstructure_fn(cls, conv, hidden=override(omit_if_default=True)),
            )
        _converter = conv
    return _converter


def to_json(obj: Any) -> Any:
    """A JSON-ready form of a domain object (or a list of them)."""
    return converter().unstructure(obj)


def from_json(data: Any, cls: type[T]) -> T:
    """Build a domain object of type ``cls`` from :func:`to_json` output."""
    return converter().structure(data, cls)


# -- the lifecycle: interactions, pipelines, deals, invoices, tasks ----------------------
class Direction(enum.StrEnum):
    """Who started a communication: the client (inbound) or we (outbound)."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class DealStatus(enum.StrEnum):
    """A deal is open until it is won or lost."""

    OPEN = "open"
    WON = "won"
    LOST = "lost"


class InvoiceStatus(enum.StrEnum):
    """An invoice is issued, then paid or cancelled."""

    ISSUED = "issued"
    PAID = "paid"
    CANCELLED = "cancelled"


@frozen
class InteractionKind:
    """A kind of communication with its formal lists of topics and outcomes (name -> title)."""

    name: str
    title: str
    topics: dict[str, str] = field(factory=dict)
    outcomes: dict[str, str] = field(factory=dict)
    direction_required: bool = False
    plugin: str | None = field(default=None, eq=False)


@frozen
class Interaction:
    """One recorded communication with a client."""

    id: int
    client_id: int
    kind: str
    topic: str
    outcome: str
    occurred_at: dt.datetime
    user_id: int | None = None
    user: str | None = None  #: the acting user's login, filled in on reads
    deal_id: int | None = None
    direction: Direction | None = None
    duration_min: int | None = None
    respondents: list[int] = field(factory=list)
    note: str | None = None
    created_at: dt.datetime | None = None
    external_id: str | None = None  #: the id in the system it was imported from
    #: fields an access policy hides from the reader (they read as empty)
    hidden: tuple[str, ...] = ()


@frozen
class Deal:
    """A sales opportunity moving down a pipeline."""

    id: int
    client_id: int
    pipeline: str
    stage: str
    title: str
    amount: decimal.Decimal
    currency: str
    status: DealStatus = DealStatus.OPEN
    owner_id: int | None = None
    owner: str | None = None  #: the owner's login, filled in on reads
    client: str | None = None  #: the client's name, filled in on reads
    expected_close: dt.date | None = None
    lost_reason: str | None = None
    opened_at: dt.datetime | None = None
    stage_entered_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    external_id: str | None = None  #: the id in the system it was imported from


@frozen
class StageChange:
    """One move of a deal (or of a client's lifecycle) from a stage to another."""

    id: int
    entity: str  #: "deal" or "client"
    entity_id: int
    pipeline: str
    from_stage: str | None
    to_stage: str
    at: dt.datetime
    cause: str  #: "opened", "manual", "interaction", "automation", "import"
    user_id: int | None = None
    user: str | None = None
    interaction_id: int | None = None
    note: str | None = None
    #: when the record left ``to_stage`` (its next change), None while it is there
    left_at: dt.datetime | None = None
    #: the stage it went to then
    next_stage: str | None = None
    #: whole seconds from ``at`` to ``left_at``
    stay_seconds: int | None = None
    #: the lost reason, when the record left the stage for ``lost``
    lost_reason: str | None = None
    #: a deal's amount during the stay (at entry, kept while the stay is open)
    deal_amount: decimal.Decimal | None = None
    #: when the deal was opened
    deal_opened_at: dt.datetime | None = None


@frozen
class Invoice:
    """An invoice issued for a deal."""

    id: int
    number: str
    deal_id: int
    amount: decimal.Decimal
    currency: str
    status: InvoiceStatus
    issued_at: dt.datetime
    paid_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None


@frozen
class TaskStep:
    """One step of a task's algorithm, and when it was done."""

    text: str
    done_at: dt.datetime | None = None


@frozen
class Task:
    """A task with ordered steps, an assignee and a deadline."""

    id: int
    title: str
    due_at: dt.datetime
    assignee_id: int | None = None
    assignee: str | None = None  #: the assignee's login, filled in on reads
    created_by: int | None = None
    client_id: int | None = None
    deal_id: int | None = None
    steps: list[TaskStep] = field(factory=list)
    done_at: dt.datetime | None = None
    done_late: bool | None = None  #: set when done: was it after the deadline?
    created_at: dt.datetime | None = None

    def overdue(self, now: dt.datetime) -> bool:
        """Open and past its deadline, or done after it."""
        if self.done_at is None:
            return self.due_at < now
        return bool(self.done_late)


@frozen
class MoveTo:
    """An effect proposed by ``crmkit_interaction_logged``: move the deal (or client) on."""

    stage: str
    deal_id: int | None = (
        None  #: None: the interaction's deal; for a client lifecycle move, set client=True
    )
    client: bool = False
    reason: str | None = None


@frozen
class FollowUp:
    """An effect proposed by ``crmkit_interaction_logged``: create a follow-up task."""

    title: str
    due_in_hours: float = 24
    steps: tuple[str, ...] = ()
    assignee: str | int | None = None  #: default: the user who logged the interaction


@frozen
class Document:
    """A document rendered for a client (a commercial proposal ...), by a plugin.

    ``html`` is a whole page; a document of several pages marks each with an
    element carrying ``data-page="N"`` (``<section class="page" data-page="1">``),
    which is how the email tracking plugin tells which page a reader is on.
    ``text`` is a plain-text (Markdown) rendering, when the plugin has one.
    """

    name: str
    title: str
    html: str = field(repr=False)
    text: str | None = field(default=None, repr=False)
    client_id: int | None = None
    deal_id: int | None = None
