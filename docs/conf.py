"""Sphinx configuration for the crmkit documentation.

Build with warnings as errors::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import crmkit

# The example plugins of the plugin author guide live next to these pages;
# _ext holds the directives that show crmkit's data definitions.
sys.path.insert(0, str(Path(__file__).parent / "examples"))
sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "crmkit"
author = "crmkit developers"
copyright = "crmkit developers"
version = release = crmkit.__version__

# No extension that fetches anything over the network (no intersphinx).
extensions = [
    "sphinx.ext.autodoc",
    "sphinx_click",
    "myst_parser",
    "crmkit_data",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext", "_tools", "examples", "Thumbs.db", ".DS_Store"]
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autoclass_content = "class"

html_theme = "alabaster"
html_title = f"crmkit {release}"
html_theme_options = {
    "description": "A plugin-extensible CRM framework in Python",
    "fixed_sidebar": True,
}
pygments_style = "sphinx"


def _attrs_factory_defaults(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, ret: str | None
) -> tuple[str | None, str | None]:
    """Show an attrs field's ``factory`` default as its value, not as ``NOTHING``."""
    fields = getattr(obj, "__attrs_attrs__", None)
    if not signature or fields is None or "NOTHING" not in signature:
        return signature, ret
    for field in fields:
        factory = getattr(field.default, "factory", None)
        if factory is not None and not field.default.takes_self:
            pattern = rf"(\b{re.escape(field.name)}: [^=]+= )NOTHING\b"
            signature = re.sub(pattern, lambda m, f=factory: m.group(1) + repr(f()), signature)
    return signature, ret


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _attrs_factory_defaults)
