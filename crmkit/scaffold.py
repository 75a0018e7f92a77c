"""``crmkit plugin new``: write a new plugin distribution that installs and passes its tests.

The files come from the templates in ``crmkit/scaffold_template/``, filled in
with :class:`string.Template` (``$module``, ``$distribution`` ...), so a
template reads like the file it makes. Everything is rendered before anything
is written: a bad name or folder leaves no half-made plugin behind.
"""

from __future__ import annotations

import re
import textwrap
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

from crmkit.core.errors import Conflict, ValidationError

#: A plugin name: a letter, then letters or digits, in words joined by ``-`` or ``_``.
_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")

#: (template in ``scaffold_template/``, file to write; ``$module`` is the module's name)
_FILES: tuple[tuple[str, str], ...] = (
    ("pyproject.toml.tmpl", "pyproject.toml"),
    ("README.md.tmpl", "README.md"),
    ("gitignore.tmpl", ".gitignore"),
    ("module/__init__.py.tmpl", "$module/__init__.py"),
    ("tests/conftest.py.tmpl", "tests/conftest.py"),
    ("tests/test_plugin.py.tmpl", "tests/test_plugin.py"),
)


def plugin_names(name: str) -> dict[str, str]:
    """The names a plugin called ``name`` goes by, e.g. for ``acme-kpi``:

    ``slug`` acme-kpi (its CLI group), ``distribution`` crmkit-acme-kpi,
    ``module`` crmkit_acme_kpi, ``entry_point`` acme_kpi. A leading
    ``crmkit-`` is dropped, so ``crmkit-acme-kpi`` names the same plugin.
    """
    given = name.strip()
    if not _NAME.fullmatch(given.lower()):
        raise ValidationError(
            f"{name!r} is not a plugin name: use letters and digits in words joined by "
            "'-' or '_', starting with a letter (e.g. acme-kpi)",
            field="name",
        )
    slug = re.sub(r"^crmkit[-_](?=.)", "", given.lower()).replace("_", "-")
    entry_point = slug.replace("-", "_")
    return {
        "slug": slug,
        "distribution": f"crmkit-{slug}",
        "module": f"crmkit_{entry_point}",
        "entry_point": entry_point,
    }


def create_plugin(
    name: str, directory: str | Path | None = None, *, description: str = ""
) -> dict[str, Any]:
    """Write the plugin distribution ``crmkit-NAME`` into ``directory``.

    ``directory`` defaults to ``./crmkit-NAME``; it may exist only if it is
    empty. Returns ``distribution``, ``module``, ``directory`` (absolute) and
    ``files`` (paths relative to ``directory``, in the order written).
    Raises :class:`ValidationError` for a bad name or description and
    :class:`Conflict` for a folder that is not empty.
    """
    names = plugin_names(name)
    description = " ".join(description.split())
    if not description.isprintable():
        raise ValidationError("must be one line of printable text", field="description")
    root = Path(directory if directory is not None else names["distribution"])
    root = root.expanduser().resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise Conflict(
            f"{root} exists and is not an empty folder; choose another DIR", field="directory"
        )

    words = names["slug"].replace("-", " ")
    values = {
        **names,
        "description": description or f"A crmkit plugin: {words}.",
        "title": words.capitalize(),
    }
    values["description_py"] = _python_text(values["description"])
    values["description_toml"] = _toml_text(values["description"])
    templates = files("crmkit").joinpath("scaffold_template")
    rendered = {
        Template(target).substitute(values): Template(
            templates.joinpath(source).read_text("utf-8")
        ).substitute(values)
        for source, target in _FILES
    }

    for relative, text in rendered.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    return {
        "distribution": names["distribution"],
        "module": names["module"],
        "entry_point": names["entry_point"],
        "directory": str(root),
        "files": list(rendered),
    }


def _python_text(text: str) -> str:
    """``text`` wrapped and made safe inside a triple-quoted Python docstring."""
    return textwrap.fill(
        text.replace("\\", "\\\\").replace('"', '\\"'),
        width=79,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _toml_text(text: str) -> str:
    """``text`` as a TOML basic string, quotes included."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
