"""Pipelines: written stages, forward-only moves, entry gates, SLAs and outcome rules.

A pipeline is declared as data (a plugin's ``crmkit_pipelines`` hook or a
``[pipelines.NAME]`` table in ``crmkit.toml``) and validated against
:data:`PIPELINE_SCHEMA`::

    {"name": "b2b", "title": "B2B sales", "entity": "deal",
     "stages": [
        {"name": "qualification", "probability": 0.1, "days": 7, "marks": ["mql"]},
        {"name": "proposal", "probability": 0.5, "days": 10,
         "gate": {"properties": {"client": {"properties": {"segment": {"type": "string"}}}}}}],
     "lost_reasons": ["price", "competitor"],
     "rules": [{"outcome": "proposal_requested", "move_to": "proposal",
                "task": {"title": "Send the proposal", "due_in_hours": 24}}]}

Every deal pipeline ends in two terminal states, ``won`` and ``lost``. A deal
moves only forward: to the next stage, or further when ``allow_skip`` is
true; ``won`` follows the last stage; ``lost`` is reachable from any open
stage with a reason from ``lost_reasons``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from attrs import field, frozen

from .errors import Problem, ValidationError

WON = "won"
LOST = "lost"
TERMINAL = (WON, LOST)
ENTITIES = ("deal", "client")

_NAME = {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"}

PIPELINE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "crmkit pipeline definition",
    "type": "object",
    "required": ["name", "stages"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "title": {"type": "string"},
        "description": {"type": "string"},
        "entity": {"enum": list(ENTITIES), "default": "deal"},
        "allow_skip": {"type": "boolean", "default": False},
        "stages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {**_NAME, "not": {"enum": list(TERMINAL)}},
                    "title": {"type": "string"},
                    "probability": {"type": "number", "minimum": 0, "maximum": 1},
                    "days": {"type": "integer", "minimum": 1},
                    "gate": {"type": "object"},
                    # mql, sql, proposal: what reports count; other names are plugins' marks
                    "marks": {"type": "array", "items": _NAME, "uniqueItems": True},
                },
            },
        },
        "lost_reasons": {"type": "array", "items": _NAME, "uniqueItems": True},
        "rules": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["outcome"],
                "additionalProperties": False,
                "properties": {
                    "outcome": _NAME,
                    "kind": _NAME,
                    "topic": _NAME,
                    "move_to": _NAME,
                    "task": {
                        "type": "object",
                        "required": ["title"],
                        "additionalProperties": False,
                        "properties": {
                            "title": {"type": "string", "minLength": 1},
                            "due_in_hours": {"type": "number", "exclusiveMinimum": 0},
                            "steps": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
                "anyOf": [{"required": ["move_to"]}, {"required": ["task"]}],
            },
        },
    },
}


@frozen
class Stage:
    """One written stage of a pipeline."""

    name: str
    title: str
    order: int
    probability: float | None = None
    days: int | None = None  #: the SLA: a deal longer in the stage is *stalled*
    gate: dict[str, Any] | None = None  #: JSON Schema over {"deal": ..., "client": ...}
    marks: tuple[str, ...] = ()  #: "mql", "sql", "proposal": stages that reports count

    @property
    def terminal(self) -> bool:
        """Is this ``won`` or ``lost``?"""
        return self.name in TERMINAL


@frozen
class Rule:
    """An outcome rule: an interaction with this outcome moves the deal and/or adds a task."""

    outcome: str
    move_to: str | None = None
    kind: str | None = None
    topic: str | None = None
    task: dict[str, Any] | None = None

    def matches(self, kind: str, topic: str, outcome: str) -> bool:
        """Does an interaction of this kind, topic and outcome trigger the rule?"""
        return self.outcome == outcome and self.kind in (None, kind) and self.topic in (None, topic)


@frozen
class Pipeline:
    """A funnel of stages that deals (or clients, for the lifecycle) move down."""

    name: str
    title: str
    stages: tuple[Stage, ...]
    entity: str = "deal"
    allow_skip: bool = False
    lost_reasons: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    description: str = ""
    plugin: str | None = field(default=None, eq=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, plugin: str | None = None) -> Pipeline:
        """Validate a definition against :data:`PIPELINE_SCHEMA` and build the pipeline."""
        from .validation import check_schema, schema_problems

        where = f"pipelines.{data.get('name', '?')}" if isinstance(data, dict) else "pipelines"
        problems = [
            Problem(
                p.field,
                "won and lost are the terminal states of every pipeline; "
                "give the stage another name",
            )
            if p.field and p.field.endswith(".name") and "should not be valid" in p.reason
            else p
            for p in schema_problems(PIPELINE_SCHEMA, data, prefix=where)
        ]
        if problems:
            raise ValidationError.from_problems(problems)
        stages = []
        for i, raw in enumerate(data["stages"]):
            if raw.get("gate") is not None:
                check_schema(raw["gate"], field=f"{where}.stages.{i}.gate")
            stages.append(
                Stage(
                    name=raw["name"],
                    title=raw.get("title") or raw["name"].replace("_", " ").capitalize(),
                    order=i + 1,
                    probability=raw.get("probability"),
                    days=raw.get("days"),
                    gate=raw.get("gate"),
                    marks=tuple(raw.get("marks", ())),
                )
            )
        names = [s.name for s in stages]
        problems = [
            Problem(f"{where}.stages", f"stage {n!r} appears twice")
            for n in sorted({n for n in names if names.count(n) > 1})
        ]
        for i, rule in enumerate(data.get("rules", ())):
            target = rule.get("move_to")
            if target is not None and target not in names and target not in TERMINAL:
                problems.append(
                    Problem(f"{where}.rules.{i}.move_to", f"{target!r} is not a stage of {where}")
                )
        if problems:
            raise ValidationError.from_problems(problems)
        return cls(
            name=data["name"],
            title=data.get("title") or data["name"].replace("_", " ").capitalize(),
            description=data.get("description", ""),
            stages=tuple(stages),
            entity=data.get("entity", "deal"),
            allow_skip=data.get("allow_skip", False),
            lost_reasons=tuple(data.get("lost_reasons", ())),
            rules=tuple(
                Rule(
                    outcome=r["outcome"],
                    move_to=r.get("move_to"),
                    kind=r.get("kind"),
                    topic=r.get("topic"),
                    task=r.get("task"),
                )
                for r in data.get("rules", ())
            ),
            plugin=plugin,
        )

    # -- lookups -------------------------------------------------------------------
    @property
    def first(self) -> Stage:
        """The stage a new deal (or client) starts in."""
        return self.stages[0]

    @property
    def stage_names(self) -> list[str]:
        """The written stages in order (without ``won`` and ``lost``)."""
        return [s.name for s in self.stages]

    def stage(self, name: str, *, field: str = "stage") -> Stage:
        """The stage called ``name`` (``won``/``lost`` included); the error lists the allowed.

        A client lifecycle has ``lost`` but no ``won``: clients are not won, they
        become customers.
        """
        for stage in self.stages:
            if stage.name == name:
                return stage
        if name == WON and self.entity == "deal":
            return Stage(WON, "Won", len(self.stages) + 1, probability=1.0)
        if name == LOST:
            return Stage(LOST, "Lost", len(self.stages) + 2, probability=0.0)
        allowed = ", ".join([*self.stage_names, *self.terminal_names])
        raise ValidationError(
            f"{name!r} is not a stage of pipeline {self.name!r} (allowed: {allowed})", field=field
        )

    @property
    def terminal_names(self) -> tuple[str, ...]:
        """``won`` and ``lost`` for deals; only ``lost`` for a client lifecycle."""
        return TERMINAL if self.entity == "deal" else (LOST,)

    def with_mark(self, mark: str) -> list[Stage]:
        """The stages marked ``mark`` (``mql``, ``sql``, ``proposal``)."""
        return [s for s in self.stages if mark in s.marks]

    def matching_rules(self, kind: str, topic: str, outcome: str) -> list[Rule]:
        """The outcome rules an interaction of this kind, topic and outcome triggers."""
        return [r for r in self.rules if r.matches(kind, topic, outcome)]

    # -- the rules of moving -----------------------------------------------------------
    def move_problems(
        self,
        current: str,
        target: str,
        *,
        lost_reason: str | None = None,
        reactivate: bool = False,
    ) -> list[Problem]:
        """Why a move from ``current`` to ``target`` is not allowed (empty: it is).

        ``reactivate`` lets a lost client come back (a won deal makes a lost
        client a customer again); nothing else ever leaves a terminal state.
        """
        if reactivate and current == LOST and self.entity == "client" and target != LOST:
            self.stage(target)
            return []
        if current in TERMINAL:
            return [Problem("stage", f"the {self.entity} is already {current}; it cannot move")]
        here = self.stage(current)
        there = self.stage(target)
        if target == LOST:
            if not lost_reason:
                return [Problem("reason", f"give a reason ({self._reasons()})")]
            if self.lost_reasons and lost_reason not in self.lost_reasons:
                return [
                    Problem("reason", f"{lost_reason!r} is not a lost reason ({self._reasons()})")
                ]
            return []
        if there.order <= here.order:
            what = "the stage it is in" if there.order == here.order else "backwards"
            return [
                Problem(
                    "stage",
                    f"{self.name} moves forward only: {current!r} -> {target!r} goes {what}",
                )
            ]
        if there.order > here.order + 1 and not self.allow_skip:
            skipped = [s.name for s in self.stages if here.order < s.order < there.order]
            return [
                Problem(
                    "stage",
                    f"pipeline {self.name!r} does not allow skipping stages "
                    f"({', '.join(skipped)} {'comes' if len(skipped) == 1 else 'come'} first)",
                )
            ]
        return []

    def _reasons(self) -> str:
        return "allowed: " + (", ".join(self.lost_reasons) or "any text")

    def to_dict(self) -> dict[str, Any]:
        """The definition as data (what ``crmkit pipeline show --format json`` prints)."""
        from .model import to_json

        data: dict[str, Any] = to_json(self)
        data.pop("plugin", None)
        return data


def merge_pipelines(
    definitions: Iterable[tuple[Any, str | None]],
) -> dict[str, Pipeline]:
    """Pipelines by name from ``(definition, plugin)`` pairs; a later one replaces an earlier."""
    found: dict[str, Pipeline] = {}
    for definition, plugin in definitions:
        pipeline = (
            definition
            if isinstance(definition, Pipeline)
            else Pipeline.from_dict(definition, plugin=plugin)
        )
        found[pipeline.name] = pipeline
    return found
