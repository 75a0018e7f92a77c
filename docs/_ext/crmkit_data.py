"""Sphinx directives that show crmkit's data definitions as they are in the code.

``.. crmkit-json:: DOTTED.NAME``
    The value (a dict or list, such as ``PIPELINE_SCHEMA``) as indented JSON.

``.. crmkit-pipeline:: DOTTED.NAME``
    A pipeline definition (a dict as a plugin registers it) as a table of its
    stages, followed by its lost reasons and its outcome rules.

``.. crmkit-kinds:: DOTTED.NAME``
    A list of interaction kinds as a table of their topics and outcomes.

Each value is imported when the page is built, so the pages cannot drift
from the code. The directives produce reST and parse it, so the output looks
like any hand-written table.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _resolve(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _literal(text: str) -> str:
    return f"``{text}``" if text else ""


def _list_table(header: list[str], rows: list[list[str]], widths: list[int]) -> list[str]:
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        f"   :widths: {' '.join(str(w) for w in widths)}",
        "",
    ]
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            lead = "   * - " if i == 0 else "     - "
            cell_lines = (cell or "").splitlines() or [""]
            lines.append((lead + cell_lines[0]).rstrip())
            lines.extend(("       " + more).rstrip() for more in cell_lines[1:])
    lines.append("")
    return lines


class _Generated(SphinxDirective):
    required_arguments = 1
    has_content = False

    def lines(self, value: Any) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        dotted = self.arguments[0]
        value = _resolve(dotted)
        module = importlib.import_module(dotted.rpartition(".")[0])
        if module.__file__:
            self.env.note_dependency(module.__file__)
        container = nodes.container()
        source = self.get_source_info()[0] or ""
        content = StringList([*self.lines(value)], source=source)
        self.state.nested_parse(content, self.content_offset, container)
        return list(container.children)


class JsonDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        value = _resolve(self.arguments[0])
        text = json.dumps(value, indent=2, ensure_ascii=False)
        return [nodes.literal_block(text, text, language="json")]


class PipelineDirective(_Generated):
    def lines(self, value: Any) -> list[str]:
        from crmkit.core.pipeline import Pipeline

        flow = Pipeline.from_dict(value)
        out = [
            f"**{flow.title}** (``{flow.name}``, entity ``{flow.entity}``"
            + (", skipping allowed" if flow.allow_skip else ", no skipping")
            + f"). {flow.description}",
            "",
        ]
        rows = []
        for stage in flow.stages:
            rows.append(
                [
                    str(stage.order),
                    f"``{stage.name}``",
                    stage.title,
                    "" if stage.probability is None else f"{stage.probability:g}",
                    "" if stage.days is None else str(stage.days),
                    ", ".join(_literal(m) for m in stage.marks),
                    "yes (below)" if stage.gate else "",
                ]
            )
        out += _list_table(
            ["#", "stage", "title", "probability", "days", "marks", "gate"],
            rows,
            [4, 22, 24, 12, 8, 14, 16],
        )
        for stage in flow.stages:
            if stage.gate:
                gate = json.dumps(stage.gate, indent=2, ensure_ascii=False)
                out += [f"Entry gate of ``{stage.name}``:", "", ".. code-block:: json", ""]
                out += [f"   {line}" for line in gate.splitlines()] + [""]
        if flow.lost_reasons:
            out += [
                "Lost reasons: " + ", ".join(_literal(r) for r in flow.lost_reasons) + ".",
                "",
            ]
        if flow.rules:
            rule_rows = []
            for rule in flow.rules:
                task = ""
                if rule.task:
                    task = rule.task["title"]
                    if rule.task.get("due_in_hours") is not None:
                        task += f" (in {rule.task['due_in_hours']:g} h)"
                    for i, step in enumerate(rule.task.get("steps", ()), 1):
                        task += f"\n\n{i}. {step}"
                rule_rows.append(
                    [
                        _literal(rule.kind or "") or "any",
                        _literal(rule.topic or "") or "any",
                        _literal(rule.outcome),
                        _literal(rule.move_to or ""),
                        task,
                    ]
                )
            out += ["Outcome rules:", ""]
            out += _list_table(
                ["kind", "topic", "outcome", "move to", "task"], rule_rows, [12, 12, 24, 20, 32]
            )
        return out


class KindsDirective(_Generated):
    def lines(self, value: Any) -> list[str]:
        rows = []
        for kind in value:
            topics = "\n".join(f"| ``{n}`` {t}" for n, t in _titled(kind.get("topics", {})))
            outcomes = "\n".join(f"| ``{n}`` {t}" for n, t in _titled(kind.get("outcomes", {})))
            direction = "required" if kind.get("direction_required") else "optional"
            rows.append(
                [f"``{kind['name']}``\n\n{kind.get('title', '')}", direction, topics, outcomes]
            )
        return _list_table(["kind", "direction", "topics", "outcomes"], rows, [16, 10, 37, 37])


def _titled(items: Any) -> list[tuple[str, str]]:
    if isinstance(items, dict):
        return list(items.items())
    return [(n, n.replace("_", " ").capitalize()) for n in items]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("crmkit-json", JsonDirective)
    app.add_directive("crmkit-pipeline", PipelineDirective)
    app.add_directive("crmkit-kinds", KindsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
